"""Task arithmetic, TIES and DARE against PEFT's reference implementations
(``peft.utils.merge_utils``) on random task vectors, at densities 0.1, 0.3, 0.5 and 0.9.

vltune merges ``W_0 + λ · combine(sparsify(W_m − W_0))`` with one λ for every input; PEFT's
functions take the task vectors ``W_m − W_0`` and one weight per task vector and return the
combined delta. Semantics compared here, and where they differ:

* weights: PEFT multiplies each task vector by its weight *after* trimming and sign election
  (the election sees unweighted values) and before the sum / disjoint mean; with every weight
  equal to λ this is λ times vltune's combination, so the tests use ``weights = λ · 1``. vltune
  has no per-input weights.
* trimming count: ``int(density · n)`` entries per task vector in both (PEFT's
  ``magnitude_based_pruning``); random task vectors have no ties in magnitude.
* sign election: the sign of the sum, + when it is 0, in both; entries equal to 0 never agree.
* DARE: PEFT draws a Bernoulli(density) keep-mask per task vector from the global generator and
  rescales by 1/density; vltune draws its mask from a generator seeded by (seed, tensor name,
  input index). The tests hand PEFT vltune's masks through ``torch.bernoulli``, so every other
  step (rescaling, weighting, sum, election, disjoint mean) is PEFT's own.
"""

from __future__ import annotations

import pytest
import torch
from peft.utils import merge_utils

from vltune.merge import get_method
from vltune.merge.task_arithmetic import generalized_task_arithmetic, magnitude_mask, random_mask

DENSITIES = [0.1, 0.3, 0.5, 0.9]
LAM = 0.7
N_TASKS = 3
SHAPE = (16, 24)


def _inputs(seed):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    tvs = [torch.randn(SHAPE, generator=g, dtype=torch.float64) * (i + 1) for i in range(N_TASKS)]
    return base, tvs


def _run(name, tensors, base, key="blocks.0.mlp.fc1.weight", **params):
    m = get_method(name)
    return m.fn(tensors, base=base, grams=None, key=key, params=m.resolve(params))


def _weights():
    return torch.full((N_TASKS,), LAM, dtype=torch.float64)


def test_arithmetic_equals_peft_task_arithmetic():
    base, tvs = _inputs(0)
    ours = _run("arithmetic", [base + t for t in tvs], base, **{"lambda": LAM})
    torch.testing.assert_close(ours - base, merge_utils.task_arithmetic(tvs, _weights()), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("density", DENSITIES)
def test_magnitude_mask_keeps_what_peft_magnitude_pruning_keeps(density):
    _, tvs = _inputs(1)
    ours = magnitude_mask(torch.stack(tvs), density)
    for i, t in enumerate(tvs):
        peft_kept = merge_utils.prune(t, density, method="magnitude") != 0
        assert torch.equal(ours[i], peft_kept)
        assert int(ours[i].sum()) == int(density * t.numel())


@pytest.mark.parametrize("density", DENSITIES)
def test_ties_equals_peft_ties(density):
    base, tvs = _inputs(2)
    ours = _run("ties", [base + t for t in tvs], base, density=density, **{"lambda": LAM})
    expected = merge_utils.ties(tvs, _weights(), density, majority_sign_method="total")
    torch.testing.assert_close(ours - base, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("density", DENSITIES)
def test_trim_and_sum_equals_peft_magnitude_prune(density):
    base, tvs = _inputs(3)
    ours = generalized_task_arithmetic([base + t for t in tvs], base, "w", lam=LAM, sparsify="magnitude",
                                       density=density)
    torch.testing.assert_close(ours - base, merge_utils.magnitude_prune(tvs, _weights(), density),
                               rtol=1e-12, atol=1e-12)


def test_sign_election_and_disjoint_mean_equal_peft_including_zero_sums():
    # entry 0: +1 and −1 sum to 0, elected + (PEFT and mergekit), so the mean of the + values is 1
    tv = torch.tensor([[1.0, 2.0, 0.0, -3.0], [-1.0, -1.0, 0.0, 1.0], [0.0, 1.0, 0.0, 1.0]], dtype=torch.float64)
    peft_mask = merge_utils.calculate_majority_sign_mask(tv, method="total")
    base = torch.zeros(4, dtype=torch.float64)
    ours = generalized_task_arithmetic(list(base + tv), base, "w", lam=1.0, consensus="sum")
    torch.testing.assert_close(ours, merge_utils.disjoint_merge(tv, peft_mask))
    assert ours.tolist() == [1.0, 1.5, 0.0, -3.0]  # entry 3: sum −1, elected −, only −3 agrees


class _MasksForBernoulli:
    """Stands in for torch.bernoulli inside PEFT's random_pruning: returns vltune's keep-masks, one
    per call, after checking that PEFT asks for Bernoulli(density) of the task vector's shape."""

    def __init__(self, masks, density):
        self.masks, self.density, self.calls = list(masks), density, 0

    def __call__(self, p, *args, **kwargs):
        assert p.shape == SHAPE and torch.all(p == self.density)
        mask = self.masks[self.calls].to(p.dtype)
        self.calls += 1
        return mask


@pytest.mark.parametrize("consensus, peft_fn", [("none", merge_utils.dare_linear), ("sum", merge_utils.dare_ties)])
@pytest.mark.parametrize("density", DENSITIES)
def test_dare_equals_peft_dare_given_the_same_masks(monkeypatch, density, consensus, peft_fn):
    base, tvs = _inputs(4)
    key, seed = "blocks.1.attn.qkv.weight", 5
    masks = [random_mask(torch.Size(SHAPE), density, seed, key, i) for i in range(N_TASKS)]
    if consensus == "none":
        ours = _run("dare", [base + t for t in tvs], base, key=key, density=density, seed=seed, **{"lambda": LAM})
    else:  # DARE-TIES: the random drop and rescale, then TIES' election and disjoint mean
        ours = generalized_task_arithmetic([base + t for t in tvs], base, key, lam=LAM, sparsify="random",
                                           density=density, rescale=True, seed=seed, consensus="sum")
    fake = _MasksForBernoulli(masks, density)
    monkeypatch.setattr(torch, "bernoulli", fake)
    expected = peft_fn(tvs, _weights(), density)
    assert fake.calls == N_TASKS
    torch.testing.assert_close(ours - base, expected, rtol=1e-12, atol=1e-12)
