"""Config of VL-Adapter's bottleneck adapters (single adapter shared by all tasks)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import PetConfig, check_positive, check_types


@dataclass
class AdapterConfig(PetConfig):
    """Args:
        reduction_factor: bottleneck width r = d_model // reduction_factor (VL-Adapter: 8 → 96 for
            BART-base; 4.18 % trainable with the LayerNorms and the visual embedding).
        init_std: new Linear weights ~ N(0, init_std), biases 0 (BART's init); null keeps
            PyTorch's default (what HF T5's init leaves on unknown modules).
        zero_init_up: start every adapter at exactly 0 (identity).
        train_layer_norms: train every LayerNorm of the backbone (``--unfreeze_layer_norms``).
    """

    reduction_factor: int = field(default=8, metadata={"help": "r = d_model // reduction_factor"})
    init_std: float | None = field(default=0.02, metadata={"help": "N(0, std) init of new Linears; null: PyTorch's"})
    zero_init_up: bool = field(default=False, metadata={"help": "zero the up-projections (adapter starts as identity)"})
    train_layer_norms: bool = field(default=True, metadata={"help": "train every LayerNorm"})

    family_defaults: ClassVar[dict[str, dict[str, Any]]] = {"t5": {"init_std": None}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "reduction_factor")
        check_types(self)
