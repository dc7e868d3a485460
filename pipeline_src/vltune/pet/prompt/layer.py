"""The encoder prompt: n learned vectors, optionally re-parameterised by an MLP.

Prompt tuning: Lester et al., https://arxiv.org/abs/2104.08691; the MLP re-parameterisation of
the table follows prefix tuning (Li & Liang, https://arxiv.org/abs/2101.00190), as in VL-Adapter's
prompt baseline.
"""

from __future__ import annotations

import torch
from torch import nn


class InputPrompt(nn.Module):
    """``(B, n, d)`` prompt vectors: ``MLP(E_P)`` (or ``E_P`` when ``reparam_dim`` is 0).

    Args:
        length: n; d_model: d; reparam_dim: hidden width of ``Linear(d, m) → tanh → Linear(m, d)``.
    """

    adapter_layer_names = ("embedding", "reparam")

    def __init__(self, length: int, d_model: int, reparam_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(length, d_model)
        self.reparam = (
            nn.Sequential(nn.Linear(d_model, reparam_dim), nn.Tanh(), nn.Linear(reparam_dim, d_model))
            if reparam_dim else nn.Identity()
        )

    def forward(self, batch_size: int) -> torch.Tensor:
        return self.reparam(self.embedding.weight).unsqueeze(0).expand(batch_size, -1, -1)
