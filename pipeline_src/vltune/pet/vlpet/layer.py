"""VL-PET's layers: granularity-controlled gates and the gated encoder sub-layer modification.

Paper: Hu et al., "VL-PET: Vision-and-Language Parameter-Efficient Tuning via Granularity
Control", ICCV 2023, https://arxiv.org/abs/2308.09804. Written from VL-PET, arXiv 2308.09804, which
re-states the official code; where paper and code disagree the code's semantics are kept:
middleY is ``1 + z`` without a sigmoid, middleX/small read ``H' = H + ΔH`` (not H), small averages
over every position (padding included), and G multiplies H + ΔH, not only ΔH.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..layers import Bottleneck


class LargeGate(nn.Module):
    """G = σ(W_gu · gelu_new(W_gd X + b_gd) + b_gu): one value per token and channel, (B, N, d)."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.down = nn.Linear(d, rank)
        self.up = nn.Linear(rank, d)

    def forward(self, x: torch.Tensor, h_mod: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(F.gelu(self.down(x), approximate="tanh")))

    @torch.no_grad()
    def zero_init_(self) -> None:
        self.up.weight.zero_()
        self.up.bias.zero_()


class MiddleXGate(nn.Module):
    """G = σ(wᵀ(X + H') + b): one value per token, (B, N, 1)."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.proj = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor, h_mod: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(x + h_mod))

    @torch.no_grad()
    def zero_init_(self) -> None:
        self.proj.weight.zero_()
        self.proj.bias.zero_()


class MiddleYGate(nn.Module):
    """G = 1 + z: one input-independent value per channel, (d,)."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.z = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor, h_mod: torch.Tensor) -> torch.Tensor:
        return 1.0 + self.z

    @torch.no_grad()
    def zero_init_(self) -> None:
        self.z.zero_()


class SmallGate(nn.Module):
    """G = mean_n σ(wᵀ[X_n ; H'_n] + b): one value per example, (B, 1, 1)."""

    def __init__(self, d: int, rank: int):
        super().__init__()
        self.proj = nn.Linear(2 * d, 1)

    def forward(self, x: torch.Tensor, h_mod: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(torch.cat([x, h_mod], dim=-1))).mean(dim=1, keepdim=True)

    @torch.no_grad()
    def zero_init_(self) -> None:
        self.proj.weight.zero_()
        self.proj.bias.zero_()


GATES: dict[str, type[nn.Module]] = {"large": LargeGate, "middlex": MiddleXGate, "middley": MiddleYGate, "small": SmallGate}


class VLPetSubLayer(nn.Module):
    """Ĥ = s · (H + ΔH) ⊙ G(X, H + ΔH), with ΔH the multi-head down-projection adapter of H.

    The block around it adds the rest: ``LN(X + dropout(Ĥ))`` in post-LN BART, ``h + dropout(Ĥ)``
    in pre-LN T5.

    Args:
        d: hidden width.
        adapter_dim: r; adapter_heads: N_h; gate: ``large|middlex|middley|small``;
        gate_dim: large-gate rank; scaling: s.
    """

    adapter_layer_names = ("adapter", "gate")

    def __init__(self, d: int, adapter_dim: int, adapter_heads: int, gate: str, gate_dim: int, scaling: float):
        super().__init__()
        self.adapter = Bottleneck(d, adapter_dim, heads=adapter_heads)
        self.gate = GATES[gate](d, gate_dim)
        self.scaling = scaling

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        h_mod = h + self.adapter(h)
        out = h_mod * self.gate(x, h_mod)
        return out if self.scaling == 1.0 else self.scaling * out
