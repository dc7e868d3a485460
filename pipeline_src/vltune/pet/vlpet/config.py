"""Config of VL-PET (one class; the four variants differ only in their gate, named by the method)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import PetConfig, check_positive, check_types

# Registry name → granularity of the gate G (VL-PET, arXiv 2308.09804).
GATE_OF_METHOD = {"vlpet-large": "large", "vlpet-middlex": "middlex", "vlpet-middley": "middley", "vlpet-small": "small"}


@dataclass
class VLPetConfig(PetConfig):
    """Hyper-parameters of VL-PET; defaults are the BART-base scripts', T5 overrides in
    ``family_defaults`` (VL-PET, arXiv 2308.09804: r 192, large-gate rank 192, s 0.3, zero-inits).

    Args:
        adapter_dim: r of the encoder multi-head down-projection adapter.
        adapter_heads: N_h, heads of its down-projection (r/N_h each).
        gate_dim: rank of the large gate's low-rank MLP (unused by the other gates).
        vpa_dim: rank of the decoder cross-attention value parallel adapter.
        scaling: s multiplying every modified encoder sub-layer output (T5 only in the paper).
        init_std: new Linear weights and middleY's z ~ N(0, init_std), biases 0 (BART's init);
            null keeps PyTorch's default Linear init (HF T5's init skips unknown modules) and z = 0.
        zero_init_adapter_up: encoder adapters' up-projection = 0 (ΔH = 0 at start).
        zero_init_gate: large: gate up-projection = 0; middleX/small: gate linear = 0 (G = 0.5);
            middleY: z = 0 (G = 1).
        zero_init_vpa_up: decoder value parallel adapters' up-projection = 0.
        train_encoder_layer_norms: train the encoder's LayerNorms (``layernorm_embedding`` included).
    """

    adapter_dim: int = field(default=96, metadata={"help": "encoder adapter rank r"})
    adapter_heads: int = field(default=4, metadata={"help": "heads N_h of the down-projection"})
    gate_dim: int = field(default=96, metadata={"help": "rank of the large gate"})
    vpa_dim: int = field(default=96, metadata={"help": "rank of the decoder value parallel adapter"})
    scaling: float = field(default=1.0, metadata={"help": "scaling s of the gated sub-layer output"})
    init_std: float | None = field(default=0.02, metadata={"help": "N(0, std) init; null: PyTorch default"})
    zero_init_adapter_up: bool = field(default=False, metadata={"help": "zero the encoder adapters' up-projection"})
    zero_init_gate: bool = field(default=False, metadata={"help": "zero the gate's last linear (z for middleY)"})
    zero_init_vpa_up: bool = field(default=False, metadata={"help": "zero the decoder VPA up-projection"})
    train_encoder_layer_norms: bool = field(default=True, metadata={"help": "train the encoder LayerNorms"})

    family_defaults: ClassVar[dict[str, dict[str, Any]]] = {
        "t5": dict(adapter_dim=192, gate_dim=192, scaling=0.3, init_std=None,
                   zero_init_adapter_up=True, zero_init_gate=True, zero_init_vpa_up=True),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.method not in GATE_OF_METHOD:
            raise ValueError(f"VLPetConfig.method must be one of {', '.join(GATE_OF_METHOD)}, got {self.method!r}")
        check_positive(self, "adapter_dim", "adapter_heads", "gate_dim", "vpa_dim")
        check_types(self)
        if self.adapter_dim % self.adapter_heads:
            raise ValueError(f"{self.method}: adapter_dim {self.adapter_dim} is not a multiple of "
                             f"adapter_heads {self.adapter_heads}")

    @property
    def gate(self) -> str:
        return GATE_OF_METHOD[self.method]
