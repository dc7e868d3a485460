"""Weighted averages of the inputs: plain averaging and the modality-merging paper's interpolation.

Interpolation (Sung et al., "An Empirical Study of Multimodal Model Merging", EMNLP Findings 2023,
https://arxiv.org/abs/2304.14933; ylsung/vl-merging ``merge_weights``/``merge_ratio``):
with two experts ``W = α W_1 + (1 − α) W_2``; with a third (the vision-language expert of
the deep layers) ``W = (2α/3) W_1 + (2(1 − α)/3) W_2 + (1/3) W_3``. In general the first two inputs
share ``2/N`` in the ratio α : 1 − α and every further input gets ``1/N``, so α = 0.5 is the plain
average for any N.
"""

from __future__ import annotations

import torch

from .base import MergeError, check_inputs, register, stack_float


def interpolation_weights(n: int, ratio: float) -> list[float]:
    """The weight of each of ``n`` inputs (first two: 2α/N and 2(1−α)/N; the rest 1/N)."""
    if n == 1:
        return [1.0]
    return [2 * ratio / n, 2 * (1 - ratio) / n] + [1 / n] * (n - 2)


@register("average", pretty_name="plain average")
def average(tensors, *, base=None, grams=None, key="", params=None) -> torch.Tensor:
    """Unweighted mean of the inputs (the paper's naive merge of the experts)."""
    check_inputs(tensors, key)
    return stack_float(tensors).mean(0).to(tensors[0].dtype)


@register("interpolation", params={"ratio": 0.5}, pretty_name="interpolation",
          reference_url="https://arxiv.org/abs/2304.14933")
def interpolation(tensors, *, base=None, grams=None, key="", params=None) -> torch.Tensor:
    """``ratio`` α weighs the first input against the second (1 returns the first, 0 the second)."""
    check_inputs(tensors, key)
    ratio = params["ratio"]
    if not 0.0 <= ratio <= 1.0:
        raise MergeError(f"interpolation: ratio must be in [0, 1], got {ratio}")
    w = interpolation_weights(len(tensors), ratio)
    x = stack_float(tensors)
    out = torch.tensordot(x.new_tensor(w), x, dims=1)
    return out.to(tensors[0].dtype)
