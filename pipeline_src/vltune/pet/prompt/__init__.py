"""``prompt``: n learned prompt vectors prepended to the encoder input (+ visual embedding)."""

from ..base import register_method
from .config import PromptConfig
from .inject import inject_prompt
from .layer import InputPrompt

__all__ = ["PromptConfig", "InputPrompt"]

register_method("prompt", PromptConfig, inject_prompt, pretty_name="Prompt tuning", paper="https://arxiv.org/abs/2104.08691")
