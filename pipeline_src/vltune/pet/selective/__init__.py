"""``full``, ``bitfit`` and ``layernorm``: methods that only choose which parameters train."""

from ..base import register_method
from .config import BitFitConfig, FullConfig, LayerNormConfig
from .inject import inject_bitfit, inject_full, inject_layernorm

__all__ = ["FullConfig", "BitFitConfig", "LayerNormConfig"]

register_method("full", FullConfig, inject_full, pretty_name="Full fine-tuning", paper=None)
register_method("bitfit", BitFitConfig, inject_bitfit, pretty_name="BitFit", paper="https://arxiv.org/abs/2106.10199")
register_method("layernorm", LayerNormConfig, inject_layernorm, pretty_name="LayerNorm tuning", paper=None)
