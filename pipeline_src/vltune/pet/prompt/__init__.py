"""``prompt``: n learned prompt vectors prepended to the encoder input (+ visual embedding)."""

from ..config import register_method
from .config import PromptConfig

__all__ = ["PromptConfig"]

register_method("prompt", PromptConfig, "vltune.pet.prompt.inject:inject_prompt", pretty_name="Prompt tuning",
                paper="https://arxiv.org/abs/2104.08691")
