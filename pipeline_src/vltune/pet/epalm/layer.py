"""eP-ALM's linear connection: the encoder's M [CLS] vectors → M perceptual tokens of the LM width."""

from __future__ import annotations

import torch
from torch import nn


class LinearConnector(nn.Module):
    """``p_m = W_m c_m + β_m`` (eP-ALM, arXiv 2303.11403), one Linear per token or one shared.

    Args:
        n_tokens: M; in_dim: encoder width d_v; out_dim: the LM's hidden size D; shared: one Linear.
    PyTorch's default Linear init, as the reference (modules made outside ``from_pretrained``).
    """

    adapter_layer_names = ("linears",)

    def __init__(self, n_tokens: int, in_dim: int, out_dim: int, shared: bool = False):
        super().__init__()
        self.n_tokens, self.shared = n_tokens, shared
        self.linears = nn.ModuleList(nn.Linear(in_dim, out_dim) for _ in range(1 if shared else n_tokens))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        """(B, M, d_v) → (B, M, D)."""
        if cls.shape[1] != self.n_tokens:
            raise ValueError(f"connector expects {self.n_tokens} [CLS] vectors per image, got {cls.shape[1]}")
        if self.shared:
            return self.linears[0](cls)
        return torch.stack([lin(cls[:, m]) for m, lin in enumerate(self.linears)], dim=1)
