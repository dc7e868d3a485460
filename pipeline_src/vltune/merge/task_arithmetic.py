"""Task-vector merges as presets of one function: ``W = W_0 + λ · combine(sparsify(W_m − W_0))``.

* ``arithmetic`` — modality arithmetic ("An Empirical Study of Multimodal Model Merging",
  https://arxiv.org/abs/2304.14933; task arithmetic, "Editing Models with Task Arithmetic",
  https://arxiv.org/abs/2212.04089): no sparsification, plain sum, ``W = W_0 + λ Σ_m (W_m − W_0)`` with ``W_0``
  the seed (central) weights. λ = 1/N is the plain average.
* ``ties`` — TIES-Merging (Yadav et al. 2023, https://arxiv.org/abs/2306.01708): keep the
  ``int(density · n)`` entries of largest magnitude of each task vector (the count PEFT and
  mergekit keep), elect a sign per entry (the sign of the sum of the kept values, + when the sum
  is 0, as PEFT's ``calculate_majority_sign_mask``), average the kept values that agree with it
  (disjoint mean), scale by λ.
* ``dare`` — DARE (Yu et al. 2024, https://arxiv.org/abs/2311.03099): drop each task-vector entry
  with probability ``1 − density`` and rescale the survivors by ``1/density``, then sum and scale
  by λ. The mask is drawn from a generator seeded by ``(seed, tensor name, input index)``, so a
  merge is reproducible and independent of the order tensors are visited.

The split into sparsify / consensus / rescale follows mergekit's generalised task arithmetic.
Every preset equals PEFT's ``peft.utils.merge_utils`` function of the same name (``task_arithmetic``,
``ties``, ``dare_linear``; ``dare_ties`` and ``magnitude_prune`` through
:func:`generalized_task_arithmetic`) with all task weights equal to λ: vltune has one λ for all
inputs, where PEFT takes a weight per task vector (applied after trimming and sign election).
"""

from __future__ import annotations

import zlib

import torch

from .base import MergeError, check_inputs, register, stack_float


def task_vectors(tensors: list[torch.Tensor], base: torch.Tensor) -> torch.Tensor:
    """(N, *shape) deltas ``W_m − W_0`` in float32 (float64 if any input is)."""
    x = stack_float(tensors + [base])
    return x[:-1] - x[-1]


def magnitude_mask(tv: torch.Tensor, density: float) -> torch.Tensor:
    """Per task vector (first dim), keep its ``int(density · numel)`` entries of largest magnitude.

    The count is PEFT's and mergekit's. Among entries of equal magnitude at the threshold the
    first ones in flattened order are kept, so exactly that many entries survive and the result
    does not depend on how a sort orders equal values.
    """
    flat = tv.abs().reshape(tv.shape[0], -1)
    n = flat.shape[1]
    k = int(density * n)
    if k >= n:
        return torch.ones_like(tv, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(tv, dtype=torch.bool)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask.scatter_(1, order, True)
    return mask.reshape(tv.shape)


def random_mask(shape: torch.Size, density: float, seed: int, key: str, index: int) -> torch.Tensor:
    """Bernoulli(density) keep-mask of one task vector, from a generator seeded by (seed, key, index)."""
    g = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(key.encode()) * 31 + index) % (2**63 - 1))
    return torch.rand(shape, generator=g) < density


def sign_consensus(tv: torch.Tensor) -> torch.Tensor:
    """TIES sign election: per entry, which inputs agree with the sign of the sum (+ when the sum is
    0, as PEFT and mergekit elect); zeros never agree."""
    elected = torch.where(tv.sum(0, keepdim=True) >= 0, 1.0, -1.0).to(tv.dtype)
    return torch.sign(tv) == elected


def generalized_task_arithmetic(tensors, base, key, *, lam: float, sparsify: str = "none", density: float = 1.0,
                                consensus: str = "none", rescale: bool = False, seed: int = 0) -> torch.Tensor:
    """``W_0 + λ · combine(sparsify(task vectors))``; see the module docstring for the presets."""
    if base is None:
        raise MergeError(f"{key}: this merge needs the base (central) weights; pass --base")
    check_inputs(tensors, key, base)
    if not 0.0 < density <= 1.0:
        raise MergeError(f"{key}: density must be in (0, 1], got {density}")
    tv = task_vectors(tensors, base)
    if sparsify == "magnitude":
        tv = tv * magnitude_mask(tv, density)
    elif sparsify == "random":
        mask = torch.stack([random_mask(tv.shape[1:], density, seed, key, i) for i in range(len(tensors))])
        tv = tv * mask
        if rescale:
            tv = tv / density
    elif sparsify != "none":
        raise ValueError(f"unknown sparsification {sparsify!r}")
    if consensus == "sum":
        agree = sign_consensus(tv)
        count = agree.sum(0).clamp(min=1)
        delta = (tv * agree).sum(0) / count  # disjoint mean: only the entries that agree
    elif consensus == "none":
        delta = tv.sum(0)
    else:
        raise ValueError(f"unknown consensus {consensus!r}")
    return (base.to(delta.dtype) + lam * delta).to(tensors[0].dtype)


@register("arithmetic", params={"lambda": 1.0}, pretty_name="modality arithmetic",
          reference_url="https://arxiv.org/abs/2304.14933")
def arithmetic(tensors, *, base=None, grams=None, key="", params=None) -> torch.Tensor:
    """``W_0 + λ Σ_m (W_m − W_0)``."""
    return generalized_task_arithmetic(tensors, base, key, lam=params["lambda"])


@register("ties", params={"density": 0.5, "lambda": 1.0}, pretty_name="TIES",
          reference_url="https://arxiv.org/abs/2306.01708")
def ties(tensors, *, base=None, grams=None, key="", params=None) -> torch.Tensor:
    """Trim (top ``density`` by magnitude), elect sign, disjoint mean, scale by λ."""
    return generalized_task_arithmetic(tensors, base, key, lam=params["lambda"], sparsify="magnitude",
                                       density=params["density"], consensus="sum")


@register("dare", params={"density": 0.5, "lambda": 1.0, "seed": 0, "rescale": True},
          pretty_name="DARE", reference_url="https://arxiv.org/abs/2311.03099")
def dare(tensors, *, base=None, grams=None, key="", params=None) -> torch.Tensor:
    """Drop task-vector entries with probability 1 − ``density``, rescale by 1/density, sum, scale by λ."""
    return generalized_task_arithmetic(tensors, base, key, lam=params["lambda"], sparsify="random",
                                       density=params["density"], rescale=params["rescale"], seed=params["seed"])
