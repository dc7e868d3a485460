"""Gram matrices for RegMean: forward hooks accumulate ``Xᵀ X`` (float64) of every chosen Linear's
input over a data pass (as the vl-merging code's ``cache_gram_matrices.py`` does).

The file holds each Gram divided by its number of rows (tokens), ``Xᵀ X / n``: the official RegMean
code (bloomberg/dataless-model-merging, ``compute_grams``) keeps this running mean, so every model
weighs the same in the merge whatever the size of the data its Grams were collected on.

Rows of padding tokens are left out when the model exposes the mask of the sequence currently in
its blocks (``mask_fn``), so a Gram does not depend on how a batch was padded. The result is a
safetensors file keyed by the Linear's module name (its weight name without ``.weight``), with the
number of rows (tokens) each Gram summed in the file's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from ..errors import UserError
from ..utils.io import atomic_path


class GramCollector:
    """Context manager: hooks on ``modules`` (name → Linear) sum ``Xᵀ X`` of their inputs."""

    def __init__(self, modules: dict[str, nn.Linear], mask_fn: Callable[[], torch.Tensor | None] | None = None):
        self.modules, self.mask_fn = modules, mask_fn
        self.grams: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}
        self._handles = []

    def _hook(self, name: str):
        def hook(module, inputs, output):
            x = inputs[0].detach()
            mask = self.mask_fn() if self.mask_fn is not None else None
            if mask is not None and mask.shape == x.shape[:-1]:
                x = x[mask]
            x = x.reshape(-1, x.shape[-1]).to(torch.float64)
            g = x.T @ x
            if name in self.grams:
                self.grams[name] += g
            else:
                self.grams[name] = g
            self.counts[name] = self.counts.get(name, 0) + x.shape[0]
        return hook

    def __enter__(self) -> "GramCollector":
        for name, m in self.modules.items():
            self._handles.append(m.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def linear_modules(model: nn.Module, prefix: str = "blocks.") -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` under ``prefix`` (the transformer blocks), by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.startswith(prefix)}


# What a Gram file holds, in its metadata; a file without it holds sums (weighing each model by
# its token count) and is refused by the merge.
GRAM_KIND = "mean of x^T x over rows"


def save_grams(grams: dict[str, torch.Tensor], counts: dict[str, int], path: str | Path, meta: dict | None = None) -> None:
    """Write ``grams[k] / counts[k]`` (the per-row mean Gram RegMean merges) to a safetensors file;
    the counts go to its metadata."""
    from safetensors.torch import save_file

    if not grams:
        raise UserError(f"{path}: no Gram matrix was collected (did the pass run any hooked Linear?)")
    empty = sorted(k for k in grams if counts.get(k, 0) <= 0)
    if empty:
        raise UserError(f"{path}: Gram {empty[0]!r} summed no rows (every token of the pass was padding?)")
    metadata = {"counts": json.dumps(counts, sort_keys=True), "gram": GRAM_KIND,
                **{k: str(v) for k, v in (meta or {}).items()}}
    with atomic_path(path) as tmp:
        save_file({k: (v / counts[k]).contiguous() for k, v in grams.items()}, str(tmp), metadata=metadata)


def collect(model: nn.Module, run_pass: Callable[[], Iterable[None] | None], modules: dict[str, nn.Linear],
            mask_fn=None) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Run ``run_pass()`` under the hooks (no gradients) and return (grams, counts)."""
    with torch.no_grad(), GramCollector(modules, mask_fn) as gc:
        run_pass()
    return gc.grams, gc.counts
