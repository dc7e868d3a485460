"""``adapter``: VL-Adapter's bottleneck adapters after every sub-layer (+ LayerNorms + visual embedding)."""

from ..base import register_method
from .config import AdapterConfig
from .inject import inject_adapter

__all__ = ["AdapterConfig"]

register_method("adapter", AdapterConfig, inject_adapter, pretty_name="VL-Adapter", paper="https://arxiv.org/abs/2112.06825")
