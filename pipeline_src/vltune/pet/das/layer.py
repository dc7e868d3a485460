"""DAS's adapter and the module that stands in for a skipped block.

Written from DAS, arXiv 2309.01479 (``Adapter_Layer`` / ``ParallelAdapter`` of DoubtedSteam/DAS), not
ported: ``A_r(x) = s · (W_up · ReLU(W_down · LN_a(x) + b_down) + b_up)`` with its own LayerNorm on
the input. Used parallel to a sub-layer it returns only the update; as a skipped block's stand-in it
returns ``x + A_{r'}(x)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DasAdapter(nn.Module):
    """``s · up(ReLU(down(LN(x))))`` (no residual: the caller adds it).

    Args:
        d: input and output width.
        rank: bottleneck width.
        scaling: output scale s.
    """

    adapter_layer_names = ("norm", "down", "up")

    def __init__(self, d: int, rank: int, scaling: float = 1.0):
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.down = nn.Linear(d, rank)
        self.up = nn.Linear(rank, d)
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scaling * self.up(F.relu(self.down(self.norm(x))))

    @torch.no_grad()
    def zero_init_up_(self) -> None:
        """Zero the up-projection, so the adapter's output is exactly 0."""
        self.up.weight.zero_()
        self.up.bias.zero_()


class SkippedBlock(nn.Module):
    """A removed encoder block's stand-in: ``x + A_{r'}(x)``. It takes the block's call arguments
    (attention mask, ...) and ignores them: no token mixing happens in a skipped block.

    Args:
        d: hidden width.
        rank: replacement adapter width r'.
        scaling: adapter output scale s.
    """

    def __init__(self, d: int, rank: int, scaling: float = 1.0):
        super().__init__()
        self.das_adapter = DasAdapter(d, rank, scaling)

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return hidden_states + self.das_adapter(hidden_states)
