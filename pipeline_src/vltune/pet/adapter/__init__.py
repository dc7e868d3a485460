"""``adapter``: VL-Adapter's bottleneck adapters after every sub-layer (+ LayerNorms + visual embedding)."""

from ..config import register_method
from .config import AdapterConfig

__all__ = ["AdapterConfig"]

register_method("adapter", AdapterConfig, "vltune.pet.adapter.inject:inject_adapter", pretty_name="VL-Adapter",
                paper="https://arxiv.org/abs/2112.06825")
