"""VL-Adapter: a bottleneck adapter after every encoder and decoder sub-layer.

Paper: Sung et al., "VL-Adapter", https://arxiv.org/abs/2112.06825 (the ``--use_adapter
--use_single_adapter --reduction_factor 8 --unfreeze_layer_norms`` baseline of VL-PET's tables).
Written from the VL-PET/VL-Adapter scripts and papers, not ported: each sub-layer output
``H`` (self-attention, cross-attention, FFN; before the block's dropout and residual) becomes
``H + up(gelu_new(down(H)))``, added by a forward hook so the backbone's modules keep their names.
"""

from __future__ import annotations

from torch import nn

from ..base import attach, freeze, init_linears, train_modules_to_save, train_norms
from ..config import PetConfig
from ..layers import Bottleneck
from ..targets import find_modules, first_output, hidden_size, replace_first_output, require_family


def _adapter_hook(module: nn.Module, args: tuple, output):
    h = first_output(output)
    return replace_first_output(output, h + module.adapter(h))


def inject_adapter(model: nn.Module, config: PetConfig) -> None:
    family = require_family(model, config.method)
    d = hidden_size(model)
    freeze(model)
    for site in family.encoder_sublayers + family.decoder_sublayers:
        for _, module, _ in find_modules(model, site.output):
            adapter = Bottleneck(d, d // config.reduction_factor)
            init_linears(adapter, config.init_std)
            if config.zero_init_up:
                adapter.zero_init_up_()
            attach(module, "adapter", adapter)
            module.register_forward_hook(_adapter_hook)
    if config.train_layer_norms:
        train_norms(model)
    train_modules_to_save(model, config)
