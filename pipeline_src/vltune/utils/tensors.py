"""Tensor helpers shared by the backbones and the task data."""

from __future__ import annotations

import torch


def pad_sequences(seqs: list[list[int]], value: int) -> torch.Tensor:
    """Right-pad token id lists into a (N, longest) long tensor."""
    out = torch.full((len(seqs), max(map(len, seqs))), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out
