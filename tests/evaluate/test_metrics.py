"""GQA exact match, NLVR2 accuracy, retrieval recall and the METRICS registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vltune.evaluate.caption import caption_metrics_percent
from vltune.evaluate.metrics import (
    METRICS,
    binary_accuracy,
    exact_match_accuracy,
    retrieval_metrics,
)
from vltune.evaluate.vqa import vqa_accuracy


def test_exact_match_accuracy():
    assert exact_match_accuracy([" Yes", "red", "left"], ["yes", "Red ", "right"]) == pytest.approx(
        200 / 3
    )
    # exact match only: no VQA-style normalisation of articles or number words
    assert exact_match_accuracy(["the cat", "two"], ["cat", "2"]) == 0.0
    with pytest.raises(ValueError, match="2 predictions but 1"):
        exact_match_accuracy(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="empty"):
        exact_match_accuracy([], [])


def test_binary_accuracy():
    assert binary_accuracy([True, False, True, True], [True, True, True, False]) == 50.0
    assert binary_accuracy(np.array([1, 0]), [np.True_, False]) == 100.0
    with pytest.raises(TypeError, match="index 1"):
        binary_accuracy([True, "False"], [True, False])  # "False" is truthy: must not pass
    with pytest.raises(ValueError):
        binary_accuracy([True], [])


def _brute_force(sim, idx, ks):
    """Reference definition, one query at a time; ties count against the query."""
    sim = np.asarray(sim, dtype=float)
    n_img, n_cap = sim.shape
    out = {}
    tr_rank = []
    for i in range(n_img):
        own = [c for c in range(n_cap) if idx[c] == i]
        best = max(sim[i, c] for c in own)
        tr_rank.append(sum(1 for c in range(n_cap) if idx[c] != i and sim[i, c] >= best))
    ir_rank = []
    for c in range(n_cap):
        g = idx[c]
        ir_rank.append(sum(1 for i in range(n_img) if i != g and sim[i, c] >= sim[g, c]))
    for k in ks:
        out[f"tr_r{k}"] = 100 * np.mean([r < k for r in tr_rank])
    for k in ks:
        out[f"ir_r{k}"] = 100 * np.mean([r < k for r in ir_rank])
    return out


def test_retrieval_hand_made():
    # 3 images x 6 captions, captions 2i and 2i+1 describe image i.
    idx = [0, 0, 1, 1, 2, 2]
    sim = np.array(
        [
            # c0   c1   c2   c3   c4   c5
            [0.9, 0.1, 0.5, 0.2, 0.3, 0.4],  # image 0: own best c0 = 0.9 ranks first -> TR rank 0
            [0.8, 0.7, 0.6, 0.1, 0.2, 0.3],  # image 1: own best c2 = 0.6 below c0, c1 -> rank 2
            [0.1, 0.2, 0.3, 0.4, 0.5, 0.0],  # image 2: own best c4 = 0.5 ranks first -> rank 0
        ]
    )
    # IR ranks (column-wise): c0 0 (0.9 top), c1 2 (0.7, 0.2 > 0.1), c2 0 (0.6 top),
    # c3 2 (0.2, 0.4 > 0.1), c4 0 (0.5 top), c5 2 (0.4, 0.3 > 0.0)
    out = retrieval_metrics(sim, idx, ks=(1, 2, 3))
    assert out == pytest.approx(
        {"tr_r1": 200 / 3, "tr_r2": 200 / 3, "tr_r3": 100.0,
         "ir_r1": 50.0, "ir_r2": 50.0, "ir_r3": 100.0}
    )
    keys = ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"]
    assert list(retrieval_metrics(sim, idx)) == keys


def test_retrieval_ties_count_against_the_query():
    sim = np.zeros((3, 3))
    out = retrieval_metrics(sim, [0, 1, 2], ks=(1, 3))
    # every query has 2 wrong items tied with the right one -> rank 2
    assert out == {"tr_r1": 0.0, "tr_r3": 100.0, "ir_r1": 0.0, "ir_r3": 100.0}


def test_retrieval_torch_and_numpy_agree():
    g = torch.Generator().manual_seed(0)
    sim = torch.randn(7, 20, generator=g)
    idx = [c % 7 for c in range(20)]
    expected = retrieval_metrics(sim.numpy(), idx)
    assert retrieval_metrics(sim, idx) == expected
    assert retrieval_metrics(sim.to(torch.bfloat16), idx) == retrieval_metrics(
        sim.to(torch.bfloat16).float().numpy(), idx
    )


def test_retrieval_errors():
    sim = np.zeros((2, 3))
    with pytest.raises(ValueError, match="image 1 has no caption"):
        retrieval_metrics(sim, [0, 0, 0])
    with pytest.raises(ValueError, match="caption 2 points to image 5"):
        retrieval_metrics(sim, [0, 1, 5])
    with pytest.raises(ValueError, match="expected \\(3,\\)"):
        retrieval_metrics(sim, [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.array([[np.nan, 0.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.zeros(3), [0, 0, 0])


def test_retrieval_blocks_match_brute_force(monkeypatch):
    # Force tiny blocks so the chunked loops are exercised on a small matrix.
    from vltune.evaluate import metrics

    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 7)
    rng = np.random.default_rng(3)
    sim = rng.integers(0, 4, size=(9, 25)).astype(float)  # many ties
    idx = np.concatenate([np.arange(9), rng.integers(0, 9, size=16)])
    expected = _brute_force(sim, idx, (1, 2, 5))
    assert retrieval_metrics(sim, idx, ks=(1, 2, 5)) == pytest.approx(expected)


@st.composite
def retrieval_case(draw):
    n_img = draw(st.integers(1, 8))
    n_cap = draw(st.integers(n_img, 3 * n_img))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # every image gets a caption, the rest are assigned at random
    idx = np.concatenate([np.arange(n_img), rng.integers(0, n_img, size=n_cap - n_img)])
    rng.shuffle(idx)
    sim = rng.integers(-3, 4, size=(n_img, n_cap)).astype(float)  # small range: many ties
    return sim, idx, rng


@settings(max_examples=150, deadline=None)
@given(retrieval_case())
def test_retrieval_true_pair_strictly_highest_gives_100(case):
    sim, idx, _ = case
    sim = sim.copy()
    sim[idx, np.arange(len(idx))] = 10.0  # above every other entry of its row and column
    out = retrieval_metrics(sim, idx)
    assert all(v == 100.0 for v in out.values()), out


@settings(max_examples=150, deadline=None)
@given(retrieval_case())
def test_retrieval_invariant_to_consistent_permutations(case):
    sim, idx, rng = case
    base = retrieval_metrics(sim, idx, ks=(1, 2, 5))
    assert base == pytest.approx(_brute_force(sim, idx, (1, 2, 5)))
    cap_perm = rng.permutation(sim.shape[1])
    img_perm = rng.permutation(sim.shape[0])  # new row r holds old image img_perm[r]
    new_of_old = np.argsort(img_perm)
    permuted = sim[img_perm][:, cap_perm]
    new_idx = new_of_old[idx[cap_perm]]
    assert retrieval_metrics(permuted, new_idx, ks=(1, 2, 5)) == pytest.approx(base)


def test_metrics_registry():
    assert METRICS.names() == ["caption", "gqa", "nlvr2", "retrieval", "vqa"]
    assert METRICS.get("vqa") is vqa_accuracy
    assert METRICS.get("gqa") is exact_match_accuracy
    assert METRICS.get("nlvr2") is binary_accuracy
    assert METRICS.get("caption") is caption_metrics_percent
    assert METRICS.get("retrieval") is retrieval_metrics
    for name in METRICS:
        assert METRICS.meta(name) == {"higher_is_better": True, "task": name, "scale": "percent"}
    with pytest.raises(KeyError, match="Did you mean 'vqa'"):
        METRICS.get("vqa2")
