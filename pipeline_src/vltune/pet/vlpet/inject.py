"""VL-PET injection: gated encoder sub-layers + decoder value parallel adapters (VL-PET, arXiv 2308.09804).

Forward hooks keep the backbone's own modules (and so its weight names and HF's forward code):
- a pre-hook on the family's gate-input module records X (BART: the sub-layer input; T5: the
  un-normalised residual stream entering ``T5LayerSelfAttention``/``T5LayerFF``);
- a hook on the sub-layer's output module replaces H by Ĥ = s·(H + ΔH)⊙G (``VLPetSubLayer``), before
  the block's own dropout, residual and LayerNorm;
- a hook on each decoder cross-attention value projection adds ``up(gelu_new(down(E)))`` of its input
  E (the encoder output), so cached cross-attention values at generation time include it.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..base import attach, freeze, init_linears, train_modules_to_save, train_norms
from ..config import PetConfig
from ..layers import Bottleneck
from ..targets import find_modules, first_input, first_output, hidden_size, replace_first_output, require_family
from .layer import MiddleYGate, VLPetSubLayer


class _GateInput:
    """Carries one site's X from the gate-input module's pre-hook to the output module's hook."""

    __slots__ = ("x",)

    def __init__(self) -> None:
        self.x: torch.Tensor | None = None


def _capture_gate_input(slot: _GateInput, module: nn.Module, args: tuple, kwargs: dict) -> None:
    slot.x = first_input(args, kwargs)


def _gated_output_hook(slot: _GateInput, module: nn.Module, args: tuple, output):
    if slot.x is None:
        raise RuntimeError("VL-PET gate input was not recorded: the sub-layer ran without its gate-input module")
    x, slot.x = slot.x, None  # do not keep activations alive after the sub-layer
    return replace_first_output(output, module.vlpet(x, first_output(output)))


def _value_adapter_hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + module.vpa(args[0])


def _new_sublayer(d: int, config: PetConfig) -> VLPetSubLayer:
    layer = VLPetSubLayer(d, config.adapter_dim, config.adapter_heads, config.gate, config.gate_dim, config.scaling)
    init_linears(layer, config.init_std)
    if isinstance(layer.gate, MiddleYGate) and config.init_std is not None:
        nn.init.normal_(layer.gate.z, mean=0.0, std=config.init_std)
    if config.zero_init_adapter_up:
        layer.adapter.zero_init_up_()
    if config.zero_init_gate:
        layer.gate.zero_init_()
    return layer


def inject_vlpet(model: nn.Module, config: PetConfig) -> None:
    family = require_family(model, config.method)
    d = hidden_size(model)
    freeze(model)
    modules = dict(model.named_modules())
    for site in family.encoder_sublayers:
        for _, module, match in find_modules(model, site.output):
            slot = _GateInput()
            attach(module, "vlpet", _new_sublayer(d, config))
            modules[site.gate_input_name(match)].register_forward_pre_hook(partial(_capture_gate_input, slot), with_kwargs=True)
            module.register_forward_hook(partial(_gated_output_hook, slot))
    for _, value_proj, _ in find_modules(model, family.cross_attn_value):
        vpa = Bottleneck(value_proj.in_features, config.vpa_dim, d_out=value_proj.out_features)
        init_linears(vpa, config.init_std)
        if config.zero_init_vpa_up:
            vpa.zero_init_up_()
        attach(value_proj, "vpa", vpa)
        value_proj.register_forward_hook(_value_adapter_hook)
    if config.train_encoder_layer_norms:
        for _, encoder, _ in find_modules(model, family.encoder):
            train_norms(encoder)
    train_modules_to_save(model, config)
