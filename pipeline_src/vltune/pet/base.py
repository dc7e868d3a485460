"""What every PET method's torch side shares: applying a method, freezing, the trainable set, and
the helpers the injectors use. The registry and the config base class are in :mod:`.config`."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .config import PetConfig, get_method, resolve_config
from .targets import detect_family, is_norm, match_target


def apply_pet(model: nn.Module, spec: str | Mapping[str, Any] | PetConfig) -> nn.Module:
    """Freeze/unfreeze ``model`` and inject the PET method in place; returns ``model``.

    The resolved config is kept as ``model.pet_config`` (what :func:`pet_config_dict` and
    ``save_pet`` write). Family defaults (e.g. T5's r=192, s=0.3) apply to names and dicts.
    """
    if getattr(model, "pet_config", None) is not None:
        raise ValueError(f"PET method {model.pet_config.method!r} is already applied to this model")
    family = detect_family(model)
    config = resolve_config(spec, family.name if family else None)
    get_method(config.method).inject(model, config)
    model.pet_config = config
    return model


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter that trains, by name (tied weights once): exactly what a PET checkpoint holds."""
    return {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}


def count_parameters(model: nn.Module) -> dict:
    # Tied weights (BART's shared embedding / lm_head) are counted once: parameters() dedups them.
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total}


# --- helpers the injectors share ---------------------------------------------------------------

def freeze(model: nn.Module) -> None:
    model.requires_grad_(False)


def train_modules_to_save(model: nn.Module, config: PetConfig) -> None:
    """Unfreeze the config's ``modules_to_save`` (absent ones are skipped: a bare HF backbone has no
    visual embedding)."""
    for name, module in model.named_modules():
        if name and match_target(name, config.modules_to_save):
            module.requires_grad_(True)


def train_norms(root: nn.Module) -> None:
    """Unfreeze every normalisation layer under ``root`` (chosen by module type, not by name)."""
    for module in root.modules():
        if is_norm(module):
            module.requires_grad_(True)


def init_linears(module: nn.Module, std: float | None) -> None:
    """BART's ``_init_weights`` for new Linear layers (weight N(0, std), bias 0); ``None`` keeps
    PyTorch's default init, which is what HF T5 leaves on modules it does not know."""
    if std is None:
        return
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def attach(parent: nn.Module, name: str, layer: nn.Module) -> nn.Module:
    """Add ``layer`` as child ``name`` of ``parent``, on ``parent``'s device and dtype (a model may be
    on a GPU, in bf16 or on the meta device when the method is applied)."""
    ref = next(parent.parameters(), None)
    if ref is not None:
        layer.to(device=ref.device, dtype=ref.dtype)
    parent.add_module(name, layer)
    return layer


