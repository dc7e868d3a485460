"""LoRA through the ``peft`` library, saved in PEFT's own format.

Paper: Hu et al., "LoRA", https://arxiv.org/abs/2106.09685. The layers, their init (B = 0) and the
file format are PEFT's: ``inject_adapter_in_model`` on the inner HF model (so a VL wrapper keeps
working and ``model.bart.generate`` is unchanged), and ``adapter_config.json`` +
``adapter_model.safetensors`` that ``peft.PeftModel.from_pretrained(base_hf_model, dir)`` loads.
The VL wrapper's own trainable modules (the visual embedding) are saved beside, by ``pet.io``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..base import freeze, train_modules_to_save
from ..config import PetConfig
from ..targets import require_family

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names the base model's keys


def _require_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ImportError("PET method 'lora' needs the peft package (a vltune dependency: pip install peft)") from None


def hf_model(model: nn.Module) -> tuple[str, nn.Module]:
    """The HF ``PreTrainedModel`` inside ``model`` (itself or one direct child) and its name prefix."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return "", model
    found = [(f"{n}.", m) for n, m in model.named_children() if isinstance(m, PreTrainedModel)]
    if len(found) != 1:
        raise ValueError(f"PET method 'lora' needs exactly one HF model inside {type(model).__name__}, found {len(found)}")
    return found[0]


def to_peft_config(config: PetConfig, model: nn.Module):
    from peft import LoraConfig as PeftLoraConfig

    targets = config.target_modules or list(require_family(model, config.method).lora_targets)
    return PeftLoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                          target_modules=targets, bias=config.bias)


def inject_lora(model: nn.Module, config: PetConfig) -> None:
    _require_peft()
    from peft import inject_adapter_in_model

    _, hf = hf_model(model)
    freeze(model)
    # PEFT marks its own trainables inside `hf`: lora_A/B and, with bias="all", every bias.
    inject_adapter_in_model(to_peft_config(config, model), hf)
    train_modules_to_save(model, config)


def save_lora(model: nn.Module, out_dir: Path, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Write the HF model's adapter in PEFT's format; return the tensors left for ``pet.io`` to save."""
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    from ...utils.io import atomic_path

    prefix, hf = hf_model(model)
    state = get_peft_model_state_dict(hf)
    with atomic_path(out_dir / PEFT_WEIGHTS) as tmp:
        save_file({_PEFT_PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}, str(tmp),
                  metadata={"format": "pt"})
    hf.peft_config["default"].save_pretrained(str(out_dir))
    return {k: v for k, v in tensors.items() if not k.startswith(prefix)}


def load_lora(model: nn.Module, in_dir: Path) -> set[str]:
    """Load PEFT's ``adapter_model.safetensors`` into the injected model; return the names it filled
    (every trainable parameter of the HF model), after checking PEFT read back exactly the file."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    from ...utils.tensor_files import check_shapes, read_safetensors

    prefix, hf = hf_model(model)
    saved = {k.removeprefix(_PEFT_PREFIX): v for k, v in read_safetensors(in_dir / PEFT_WEIGHTS).items()}
    check_shapes(in_dir / PEFT_WEIGHTS, get_peft_model_state_dict(hf), saved)
    result = set_peft_model_state_dict(hf, saved)
    if result.unexpected_keys:
        raise ValueError(f"{in_dir / PEFT_WEIGHTS}: keys that match no LoRA layer: {sorted(result.unexpected_keys)[:5]}")
    now = get_peft_model_state_dict(hf)
    if set(now) != set(saved):
        raise ValueError(f"{in_dir / PEFT_WEIGHTS} does not hold this model's LoRA tensors: "
                         f"missing {sorted(set(now) - set(saved))[:5]}, extra {sorted(set(saved) - set(now))[:5]}")
    return {prefix + n for n, p in hf.named_parameters() if p.requires_grad}
