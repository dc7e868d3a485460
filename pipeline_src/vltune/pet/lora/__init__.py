"""``lora``: LoRA on the q/v projections through ``peft`` (+ all biases + visual embedding)."""

from ..base import register_method
from .config import LoraConfig
from .inject import PEFT_CONFIG, PEFT_WEIGHTS, inject_lora, load_lora, save_lora

__all__ = ["LoraConfig", "PEFT_CONFIG", "PEFT_WEIGHTS"]

register_method("lora", LoraConfig, inject_lora, pretty_name="LoRA", paper="https://arxiv.org/abs/2106.09685",
                save=save_lora, load=load_lora)
