"""PET checkpoints: only the trainable tensors (safetensors) + the method's JSON config.

``<dir>/pet_config.json`` is the resolved config (every field, so a reload does not depend on
defaults that may change); ``<dir>/pet_model.safetensors`` holds the trainable tensors that no
method-specific format took (for LoRA, PEFT's ``adapter_config.json`` + ``adapter_model.safetensors``
hold the HF model's part and this file the visual embedding). Loading = apply the same method to a
fresh backbone, then fill every trainable tensor; a missing or unexpected tensor is an error.
"""

from __future__ import annotations

from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from ..utils.io import atomic_path, read_json, write_json
from ..utils.tensor_files import check_shapes, read_safetensors
from .base import apply_pet, trainable_state_dict
from .config import get_method, pet_config_dict

PET_CONFIG = "pet_config.json"
PET_WEIGHTS = "pet_model.safetensors"


def save_pet(model: nn.Module, out_dir: str | Path) -> None:
    """Write the PET method's config and trainable tensors of ``model`` into ``out_dir``."""
    config = pet_config_dict(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = trainable_state_dict(model)
    method = get_method(config["method"])
    if method.save is not None:
        tensors = method.save(model, out_dir, tensors)
    with atomic_path(out_dir / PET_WEIGHTS) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    write_json(out_dir / PET_CONFIG, config)  # written last: its presence marks a complete folder


def is_pet_dir(path: str | Path) -> bool:
    return (Path(path) / PET_CONFIG).is_file()


def load_pet(model: nn.Module, in_dir: str | Path) -> nn.Module:
    """Apply the saved method to ``model`` (a fresh backbone) and load the saved tensors into it."""
    in_dir = Path(in_dir)
    if not is_pet_dir(in_dir):
        raise FileNotFoundError(f"{in_dir / PET_CONFIG} not found: not a PET checkpoint folder")
    config = read_json(in_dir / PET_CONFIG)
    apply_pet(model, config)
    method = get_method(config["method"])
    filled = method.load(model, in_dir) if method.load is not None else set()
    weights = read_safetensors(in_dir / PET_WEIGHTS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    unexpected = set(weights) - trainable
    missing = trainable - set(weights) - filled
    if unexpected or missing:
        raise ValueError(f"{in_dir}: saved tensors do not match method {config['method']!r}: "
                         f"unexpected {sorted(unexpected)[:5]}, missing {sorted(missing)[:5]}")
    check_shapes(in_dir / PET_WEIGHTS, model.state_dict(), weights)
    model.load_state_dict(weights, strict=False)
    return model
