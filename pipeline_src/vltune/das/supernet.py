"""The search's weight-sharing supernet: every candidate block can run as itself or as its
replacement adapter, switched per step (DAS, arXiv 2309.01479 step 1)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from ..pet.config import PetConfig
from ..pet.das.inject import encoder_blocks, new_stand_in
from ..pet.das.layer import SkippedBlock
from ..pet.targets import hidden_size


class SkippableBlock(nn.Module):
    """A candidate block and its stand-in; :attr:`skipped` picks which one runs.

    Args:
        block: the original block (with its parallel adapters).
        stand_in: the :class:`SkippedBlock` that replaces it when skipped.
    """

    def __init__(self, block: nn.Module, stand_in: SkippedBlock):
        super().__init__()
        self.block = block
        self.stand_in = stand_in
        self.skipped = False

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if self.skipped:
            return self.stand_in(hidden_states)
        return self.block(hidden_states, *args, **kwargs)


def build_supernet(model: nn.Module, config: PetConfig) -> list[SkippableBlock]:
    """Wrap every encoder block of a ``das`` model (applied with ``skip=[]``) with a trainable
    stand-in; returns the wrappers in block order."""
    if config.skip:
        raise ValueError(f"the supernet starts from the unskipped model, got skip={config.skip}")
    blocks = encoder_blocks(model, config.method)
    d = hidden_size(model)
    wrappers = []
    for i, block in enumerate(blocks):
        ref = next(block.parameters())
        wrapper = SkippableBlock(block, new_stand_in(d, config).to(device=ref.device, dtype=ref.dtype))
        wrapper.stand_in.requires_grad_(True)
        blocks[i] = wrapper
        wrappers.append(wrapper)
    return wrappers


def set_skipped(wrappers: list[SkippableBlock], skip: Iterable[int]) -> None:
    skip = set(skip)
    for i, w in enumerate(wrappers):
        w.skipped = i in skip
