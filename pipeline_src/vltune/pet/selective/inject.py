"""Selective methods: freeze everything, then unfreeze by module type.

BitFit: Ben Zaken et al., https://arxiv.org/abs/2106.10199 (as run in VL-Adapter/VL-PET's tables:
every bias + the visual embedding; BART-base 1.21 %).
"""

from __future__ import annotations

from torch import nn

from ..base import freeze, train_modules_to_save, train_norms
from ..config import PetConfig


def inject_full(model: nn.Module, config: PetConfig) -> None:
    model.requires_grad_(True)


def inject_bitfit(model: nn.Module, config: PetConfig) -> None:
    freeze(model)
    for module in model.modules():
        bias = getattr(module, "bias", None)
        if isinstance(bias, nn.Parameter):  # a buffer such as BART's final_logits_bias is not a parameter
            bias.requires_grad_(True)
    train_modules_to_save(model, config)


def inject_layernorm(model: nn.Module, config: PetConfig) -> None:
    freeze(model)
    train_norms(model)
    train_modules_to_save(model, config)
