"""Config of encoder prompt tuning (VL-Adapter's baseline)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import PetConfig, check_positive, check_types


@dataclass
class PromptConfig(PetConfig):
    """Args:
        length: n prompt vectors prepended to the encoder input (VL-Adapter: 40; 0 adds none).
        reparam_dim: width of the MLP that re-parameterises the prompt table
            (``Linear → tanh → Linear``; VL-Adapter's ``--mid_dim 800``; 0 = a free table).
            40 × 768 + the MLP + the visual embedding = 2.00 % of VL-BART-base, as in VL-PET's table.
        init_std: table and MLP weights ~ N(0, init_std), biases 0 (BART's init); null keeps
            PyTorch's defaults.
    """

    length: int = field(default=40, metadata={"help": "number of prompt vectors"})
    reparam_dim: int = field(default=800, metadata={"help": "re-parameterisation MLP width (0: none)"})
    init_std: float | None = field(default=0.02, metadata={"help": "N(0, std) init; null: PyTorch default"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "length", "reparam_dim", allow_zero=True)
        check_types(self)
