"""DAS injection (arXiv 2309.01479): parallel adapters on every sub-layer, skipped blocks replaced.

Parallel adapter: a sub-layer with input X and output H gives ``H + A_r(X)``, added by forward
hooks before the block's own dropout, residual and LayerNorm. X is the sub-layer's input as the
family's site table defines it (BART: the attention input, the FFN input; T5: the residual stream
entering the layer), so in post-LN BART this is METER's ``LN(x + W_o h + A(x))`` and in pre-LN T5
ViLT's ``x + Attn(LN(x)) + A(x)``. Decoder sub-layers get adapters too (every block, as ViLT).

Skipping: encoder block i in ``config.skip`` is replaced in the encoder's block list by
:class:`SkippedBlock` (``x + A_{r'}(x)``) before the adapters are added, so the block's weights
leave the model (never executed, never in a checkpoint) and it gets no parallel adapters. Only
encoder blocks are candidates: they are the joint text+image fusion stack (ViLT's blocks, METER's
fusion layers); decoder layers index HF's generation cache and stay.
"""

from __future__ import annotations

import re
from functools import partial

from torch import nn

from ..base import attach, freeze, init_linears, train_modules_to_save
from ..config import PetConfig
from ..targets import Family, first_input, first_output, hidden_size, replace_first_output, require_family
from .layer import DasAdapter, SkippedBlock


def encoder_blocks(model: nn.Module, method: str = "das") -> nn.ModuleList:
    """The encoder's block list of ``model`` (the skip candidates, in order)."""
    family = require_family(model, method)
    found = [m for n, m in model.named_modules() if family.encoder_blocks and re.fullmatch(family.encoder_blocks, n)]
    if len(found) != 1 or not isinstance(found[0], nn.ModuleList):
        raise ValueError(f"PET method {method!r}: skipping encoder blocks is not supported for the "
                         f"{family.name!r} family (no unique encoder block list in vltune.pet.targets.FAMILIES)")
    return found[0]


def new_adapter(d: int, rank: int, config: PetConfig) -> DasAdapter:
    adapter = DasAdapter(d, rank, config.scaling)
    init_linears(adapter, config.init_std)
    if config.zero_init_up:
        adapter.zero_init_up_()
    return adapter


def _capture_input(adapter: DasAdapter, module: nn.Module, args: tuple, kwargs: dict) -> None:
    adapter.x = first_input(args, kwargs)


def _add_parallel(module: nn.Module, args: tuple, output):
    adapter = module.das_adapter
    x, adapter.x = adapter.x, None  # do not keep activations alive after the sub-layer
    if x is None:
        raise RuntimeError("DAS adapter input was not recorded: the sub-layer ran without its input module")
    return replace_first_output(output, first_output(output) + adapter(x))


def new_stand_in(d: int, config: PetConfig) -> SkippedBlock:
    """A skipped block's replacement ``x + A_{r'}(x)``, initialised like every DAS adapter."""
    stand_in = SkippedBlock(d, config.skip_dim, config.scaling)
    init_linears(stand_in, config.init_std)
    if config.zero_init_up:
        stand_in.das_adapter.zero_init_up_()
    return stand_in


def skip_blocks(model: nn.Module, config: PetConfig) -> None:
    """Replace the encoder blocks in ``config.skip`` by :class:`SkippedBlock` (fresh adapters)."""
    blocks = encoder_blocks(model, config.method)
    bad = [i for i in config.skip if i >= len(blocks)]
    if bad:
        raise ValueError(f"{config.method}: skip lists block(s) {bad} but the encoder has {len(blocks)} blocks (0..{len(blocks) - 1})")
    d = hidden_size(model)
    for i in config.skip:
        ref = next(blocks[i].parameters())
        blocks[i] = new_stand_in(d, config).to(device=ref.device, dtype=ref.dtype)


def add_parallel_adapters(model: nn.Module, family: Family, config: PetConfig) -> None:
    d = hidden_size(model)
    modules = dict(model.named_modules())
    for site in family.encoder_sublayers + family.decoder_sublayers:
        for name, module in modules.items():
            match = re.fullmatch(site.output, name)
            if match is None:
                continue
            adapter = attach(module, "das_adapter", new_adapter(d, config.adapter_dim, config))
            adapter.x = None
            modules[site.gate_input_name(match)].register_forward_pre_hook(partial(_capture_input, adapter), with_kwargs=True)
            module.register_forward_hook(_add_parallel)


def inject_das(model: nn.Module, config: PetConfig) -> None:
    family = require_family(model, config.method)
    freeze(model)
    if config.skip:
        skip_blocks(model, config)  # first: a removed block gets no parallel adapters
    add_parallel_adapters(model, family, config)
    if not any(isinstance(m, DasAdapter) for m in model.modules()):
        raise ValueError(f"{config.method}: no sub-layer of this {type(model).__name__} matched the {family.name!r} patterns")
    for m in model.modules():  # trained by module type (adapters of both kinds), never by name
        if isinstance(m, DasAdapter):
            m.requires_grad_(True)
    train_modules_to_save(model, config)
