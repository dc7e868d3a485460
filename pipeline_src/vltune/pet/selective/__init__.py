"""``full``, ``bitfit`` and ``layernorm``: methods that only choose which parameters train."""

from ..config import register_method
from .config import BitFitConfig, FullConfig, LayerNormConfig

__all__ = ["FullConfig", "BitFitConfig", "LayerNormConfig"]

INJECT = "vltune.pet.selective.inject"
register_method("full", FullConfig, f"{INJECT}:inject_full", pretty_name="Full fine-tuning", paper=None)
register_method("bitfit", BitFitConfig, f"{INJECT}:inject_bitfit", pretty_name="BitFit",
                paper="https://arxiv.org/abs/2106.10199")
register_method("layernorm", LayerNormConfig, f"{INJECT}:inject_layernorm", pretty_name="LayerNorm tuning", paper=None)
