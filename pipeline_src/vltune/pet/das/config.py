"""Config of DAS: parallel adapters (width r) and replacement adapters of skipped blocks (width r')."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..config import PetConfig, check_positive, check_types


@dataclass
class DasConfig(PetConfig):
    """Args:
        adapter_dim: width r of the parallel adapters (ViLT: 96 for d = 768, i.e. d/8).
        skip_dim: width r' of the adapter that replaces a skipped block (ViLT: 192, d/4).
        scaling: s in ``A(x) = s · (W_up ReLU(W_down LN(x) + b) + b')`` (1.0 in both repos).
        init_std: new Linear weights ~ N(0, init_std), biases 0 (the repos' "bert" init: no
            zero-init); null keeps PyTorch's default.
        zero_init_up: start every adapter's up-projection at 0 (not what DAS does; for tests and
            for starting a skipped block exactly as the identity).
        skip: encoder blocks (0-based) removed and replaced by ``x + A_{r'}(x)``; the search's
            ``skip.json`` fills it.
    """

    adapter_dim: int = field(default=96, metadata={"help": "parallel adapter width r"})
    skip_dim: int = field(default=192, metadata={"help": "replacement adapter width r' of a skipped block"})
    scaling: float = field(default=1.0, metadata={"help": "adapter output scale s"})
    init_std: float | None = field(default=0.02, metadata={"help": "N(0, std) init of new Linears; null: PyTorch's"})
    zero_init_up: bool = field(default=False, metadata={"help": "zero the up-projections (adapters start at 0)"})
    skip: list[int] = field(default_factory=list, metadata={"help": "encoder blocks replaced by an adapter"})

    family_defaults: ClassVar[dict[str, dict[str, Any]]] = {"t5": {"init_std": None}}

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "adapter_dim", "skip_dim")
        check_types(self)
        ok = isinstance(self.skip, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                                                for i in self.skip)
        if not ok or len(set(self.skip)) != len(self.skip):
            raise ValueError(f"{self.method}: skip must be a list of distinct block indices ≥ 0, got {self.skip!r}")
        self.skip = sorted(self.skip)
