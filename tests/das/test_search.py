"""DAS's skip search: the policy update against a hand-computed step, sampling properties, and
the whole search on a toy residual stack (deterministic for a seed; finds the harmful block)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn

from vltune.das import SearchConfig, SkipPolicy, SkippableBlock, run_search, set_skipped
from vltune.pet.das.layer import SkippedBlock
from vltune.train.loop import TrainConfig


def test_policy_update_matches_a_hand_computed_step():
    policy = SkipPolicy(3, lr=0.5)
    policy.logits = torch.tensor([1.0, -1.0, 0.0], dtype=torch.float64)
    sets, losses = [(0, 1), (1, 2), (0, 2)], [1.0, 2.0, 0.5]
    r = [math.exp(-x) for x in losses]  # 0.367879, 0.135335, 0.606531
    b = sum(r) / 3
    p = [1 / (1 + math.exp(-g)) for g in (1.0, -1.0, 0.0)]  # σ before the update, for every term
    expected = [
        1.0 + 0.5 * ((r[0] - b) + (r[2] - b)) * p[0] * (1 - p[0]),
        -1.0 + 0.5 * ((r[0] - b) + (r[1] - b)) * p[1] * (1 - p[1]),
        0.0 + 0.5 * ((r[1] - b) + (r[2] - b)) * p[2] * (1 - p[2]),
    ]
    policy.update(sets, r)
    assert policy.logits.tolist() == pytest.approx(expected, abs=1e-15)
    # the best set (0, 2) raised both its blocks; block 1, in the two worse sets, fell
    assert expected[0] > 1.0 and expected[2] > 0.0 and expected[1] < -1.0
    assert policy.top_k(1) == [0] and policy.top_k(2) == [0, 2]


def test_equal_rewards_leave_the_logits_unchanged():
    policy = SkipPolicy(4)
    policy.update([(0,), (1,), (3,)], [0.3, 0.3, 0.3])
    assert policy.logits.tolist() == [0.0] * 4


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 8), data=st.data())
def test_samples_are_sorted_distinct_blocks_and_distinct_sets(n, data):
    k = data.draw(st.integers(1, n))
    m = data.draw(st.integers(1, 5))
    policy = SkipPolicy(n)
    policy.logits = torch.tensor(data.draw(st.lists(st.floats(-3, 3, allow_subnormal=False), min_size=n, max_size=n)), dtype=torch.float64)
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    sets = policy.sample_distinct(k, m, g)
    assert len(sets) == min(m, math.comb(n, k)) and len(set(sets)) == len(sets)
    assert all(list(s) == sorted(set(s)) and len(s) == k and 0 <= s[0] and s[-1] < n for s in sets)


def test_sampling_frequency_follows_the_sigmoid_of_the_logits():
    policy = SkipPolicy(2)
    policy.logits = torch.tensor([2.0, -2.0], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    first = sum(policy.sample(1, g) == (0,) for _ in range(4000)) / 4000
    p0, p1 = torch.sigmoid(policy.logits).tolist()
    assert first == pytest.approx(p0 / (p0 + p1), abs=0.02)


class _Residual(nn.Module):
    def __init__(self, d: int, scale: float):
        super().__init__()
        self.lin = nn.Linear(d, d, bias=False)
        nn.init.normal_(self.lin.weight, std=scale)

    def forward(self, hidden_states, *args):
        return hidden_states + self.lin(hidden_states)


def _toy(seed: int, d: int = 8):
    """Three frozen residual blocks; block 1 is large noise, so skipping it lowers the loss of
    the identity target. Only the stand-ins (and the output scale) train."""
    torch.manual_seed(seed)
    blocks = [_Residual(d, 0.01), _Residual(d, 0.8), _Residual(d, 0.01)]
    wrappers = []
    for b in blocks:
        b.requires_grad_(False)
        stand_in = SkippedBlock(d, 4)
        stand_in.das_adapter.zero_init_up_()
        wrappers.append(SkippableBlock(b, stand_in))
    model = nn.Sequential(*wrappers)
    model.out = nn.Linear(d, d)
    return model, wrappers


def _search(seed: int, steps: int = 40):
    model, wrappers = _toy(0)

    def batch(step, salt=0):
        g = torch.Generator().manual_seed(1000 * step + salt)
        return {"x": torch.randn(16, 8, generator=g)}

    def loss_fn(m, b):
        h = b["x"]
        for w in wrappers:
            h = w(h)
        return ((h - b["x"]) ** 2).mean()

    cfg = SearchConfig(k=1, sets_per_reward=3, turn=4, warmup_ratio=0.25, policy_lr=1.0, val_batch_size=16)
    train_cfg = TrainConfig(steps=steps, lr=1e-2, seed=seed, log_every=10)
    return run_search(model, wrappers, batch, lambda s: batch(s, 1), loss_fn, train_cfg, cfg)


def test_search_is_deterministic_for_a_seed_and_finds_the_harmful_block():
    a, b, c = _search(seed=1), _search(seed=1), _search(seed=2)
    assert a["trace"] == b["trace"] and a["logits"] == b["logits"] and a["skipped_count"] == b["skipped_count"]
    assert a["trace"] != c["trace"]
    # reward steps at 10, 14, ..., 38 (warm-up 0.25 · 40); each scores all C(3, 1) = 3 sets
    assert [t["step"] for t in a["trace"]] == list(range(10, 40, 4))
    assert all(sorted(map(tuple, t["sets"])) == [(0,), (1,), (2,)] for t in a["trace"])
    assert all(t["rewards"] == pytest.approx([math.exp(-x) for x in t["losses"]]) for t in a["trace"])
    assert a["skip"] == [1] and a["logits"][1] == max(a["logits"])
    assert sum(a["skipped_count"]) == 40


def test_set_skipped_switches_blocks_and_k_larger_than_blocks_is_an_error():
    model, wrappers = _toy(0)
    set_skipped(wrappers, [0, 2])
    assert [w.skipped for w in wrappers] == [True, False, True]
    with pytest.raises(ValueError, match="k = 4 but the encoder has only 3 blocks"):
        run_search(model, wrappers, None, None, None, TrainConfig(steps=1), SearchConfig(k=4))
    with pytest.raises(ValueError, match="turn must be an int"):
        SearchConfig(turn=0)
