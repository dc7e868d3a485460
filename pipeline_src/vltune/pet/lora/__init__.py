"""``lora``: LoRA on the q/v projections through ``peft`` (+ all biases + visual embedding)."""

from ..config import register_method
from .config import LoraConfig

__all__ = ["LoraConfig"]

INJECT = "vltune.pet.lora.inject"
register_method("lora", LoraConfig, f"{INJECT}:inject_lora", pretty_name="LoRA", paper="https://arxiv.org/abs/2106.09685",
                save=f"{INJECT}:save_lora", load=f"{INJECT}:load_lora")
