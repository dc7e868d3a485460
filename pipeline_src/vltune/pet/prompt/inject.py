"""Prompt tuning: install an :class:`InputPrompt` in the VL model's ``encoder_prompt`` slot.

The VL model decides where the prompt enters (``VLBart.encode``: after the text's position
embeddings, before ``layernorm_embedding``, ahead of the text; the joint attention mask covers it,
so the decoder attends to it), as in VL-Adapter's encoder.
"""

from __future__ import annotations

from torch import nn

from ..base import freeze, init_linears, train_modules_to_save
from ..config import PetConfig
from ..targets import hidden_size
from .layer import InputPrompt


def inject_prompt(model: nn.Module, config: PetConfig) -> None:
    if not hasattr(model, "encoder_prompt") or model.encoder_prompt is not None:
        raise ValueError(
            f"PET method 'prompt' needs a VL model with an empty encoder_prompt slot (e.g. VLBart); "
            f"{type(model).__name__} has none"
        )
    freeze(model)
    prompt = InputPrompt(config.length, hidden_size(model), config.reparam_dim)
    if config.init_std is not None:
        nn.init.normal_(prompt.embedding.weight, mean=0.0, std=config.init_std)
        init_linears(prompt.reparam, config.init_std)
    ref = next(model.parameters())
    model.encoder_prompt = prompt.to(device=ref.device, dtype=ref.dtype)
    train_modules_to_save(model, config)
