"""Config of LoRA, translated one to one into ``peft.LoraConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import PetConfig, check_positive, check_types

_PEFT_BIAS = ("none", "all", "lora_only")


@dataclass
class LoraConfig(PetConfig):
    """Args:
        r: LoRA rank (VL-Adapter/VL-PET's LoRA baseline: ``--lora_dim 128``).
        lora_alpha: scaling numerator, update = (alpha / r)·BA (their default 32).
        lora_dropout: dropout on the LoRA branch input (0 there).
        target_modules: PEFT ``target_modules``; null = the family's q and v projections
            (``q_proj``/``v_proj`` for BART, ``q``/``v`` for T5), in every attention.
        bias: PEFT's ``bias`` option; ``all`` trains every bias, as their baseline does
            (``"lora" or "bias" in name``): 5.93 % of VL-BART-base with the visual embedding.
    """

    r: int = field(default=128, metadata={"help": "LoRA rank"})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA alpha (scaling = alpha / r)"})
    lora_dropout: float = field(default=0.0, metadata={"help": "dropout on the LoRA branch"})
    target_modules: list[str] | None = field(default=None, metadata={"help": "PEFT target_modules; null: q/v of the family"})
    bias: str = field(default="all", metadata={"help": "PEFT bias option: none | all | lora_only"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_positive(self, "r")
        check_types(self)
        if self.bias not in _PEFT_BIAS:
            raise ValueError(f"lora: bias must be one of {', '.join(_PEFT_BIAS)}, got {self.bias!r}")
        if self.target_modules is not None and (
            not isinstance(self.target_modules, list) or not all(isinstance(t, str) for t in self.target_modules)
        ):
            raise ValueError(f"lora: target_modules must be a list of module names or null, got {self.target_modules!r}")
