"""The bottleneck shared by VL-Adapter's adapters and VL-PET's modules: ``up(gelu_new(down(x)))``.

With ``heads > 1`` the down-projection is VL-PET's "multi-head" one: ``heads`` Linear(d → r/heads)
whose outputs are concatenated (VL-PET, arXiv 2308.09804: one Linear(d → r) in algebra; the heads only
change the init and the parameter names, and the count matches the paper's table either way).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Bottleneck(nn.Module):
    """``W_up · gelu_new(concat_i W_down^i x + b_down^i) + b_up``; no residual (the caller adds it).

    Args:
        d_in: input width.
        rank: bottleneck width r (a multiple of ``heads``).
        d_out: output width (``d_in`` if omitted).
        heads: number of down-projection heads.
    """

    adapter_layer_names = ("down", "up")

    def __init__(self, d_in: int, rank: int, d_out: int | None = None, heads: int = 1):
        super().__init__()
        if rank % heads:
            raise ValueError(f"bottleneck rank {rank} is not a multiple of its {heads} heads")
        self.down = nn.ModuleList(nn.Linear(d_in, rank // heads) for _ in range(heads))
        self.up = nn.Linear(rank, d_in if d_out is None else d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.cat([head(x) for head in self.down], dim=-1) if len(self.down) > 1 else self.down[0](x)
        return self.up(F.gelu(z, approximate="tanh"))  # gelu_new = GELU's tanh approximation

    @torch.no_grad()
    def zero_init_up_(self) -> None:
        """Zero the up-projection, so the modification starts at exactly 0."""
        self.up.weight.zero_()
        self.up.bias.zero_()
