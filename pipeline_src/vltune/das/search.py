"""DAS's skip search: a bandit over encoder blocks with REINFORCE-style updates (DAS, arXiv 2309.01479).

Written from the spec of ``vilt_module_search.py::forward`` in DoubtedSteam/DAS, not ported.
State: one logit g_i per candidate block, p_i = σ(g_i). Every training step samples k distinct
blocks ∝ p (``torch.multinomial`` without replacement), skips them and trains the supernet on the
batch. Every ``turn`` steps after the warm-up, ``sets_per_reward`` distinct skip sets S_j are scored
on a validation batch (no grad), R_j = exp(−L_j), b = mean_j R_j, and for every i ∈ S_j:
g_i ← g_i + η (R_j − b) p_i (1 − p_i) (p from before the update). The result is the k blocks with
the largest logits (the most redundant ones).

Differences from the reference, on purpose: a fresh validation batch is drawn at every reward step
(the reference re-reads the first batch of an unshuffled-per-epoch loader, i.e. very likely the
same batch every time, as DAS, arXiv 2309.01479, has it); the reward forward runs in eval mode (no dropout),
so the reward is a function of the skip set alone; when fewer distinct sets exist than
``sets_per_reward`` (e.g. 2 blocks, k = 1) all of them are scored instead of looping forever;
``turn`` counts optimiser steps, not micro-batches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from ..train.loop import TrainConfig, train
from .supernet import SkippableBlock, set_skipped

log = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    # what to find
    k: int = 1  # blocks to skip (DAS_k)
    # reward steps
    sets_per_reward: int = 3  # distinct skip sets scored per reward step (das_step)
    turn: int = 10  # optimiser steps between reward steps (das_turn)
    warmup_ratio: float = 1 / 3  # no reward steps before this fraction of the steps (1 of 3 epochs)
    policy_lr: float = 1.0  # η of the logit update (ViLT: 1.0)
    val_batch_size: int = 32  # examples per reward batch

    def __post_init__(self) -> None:
        for name in ("k", "sets_per_reward", "turn", "val_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"das search: {name} must be an int ≥ 1, got {value!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"das search: warmup_ratio must be in [0, 1), got {self.warmup_ratio!r}")
        if not self.policy_lr > 0:
            raise ValueError(f"das search: policy_lr must be > 0, got {self.policy_lr!r}")


class SkipPolicy:
    """Independent sigmoid logits over ``n`` blocks; samples and updates skip sets.

    Args:
        n: number of candidate blocks.
        lr: η of :meth:`update`.
    """

    def __init__(self, n: int, lr: float = 1.0):
        self.logits = torch.zeros(n, dtype=torch.float64)
        self.lr = lr

    def probs(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def sample(self, k: int, generator: torch.Generator | None = None) -> tuple[int, ...]:
        """k distinct blocks drawn ∝ σ(g), sorted."""
        if not 0 < k <= len(self.logits):
            raise ValueError(f"cannot skip {k} of {len(self.logits)} blocks")
        picked = torch.multinomial(self.probs(), k, replacement=False, generator=generator)
        return tuple(sorted(int(i) for i in picked))

    def sample_distinct(self, k: int, m: int, generator: torch.Generator | None = None) -> list[tuple[int, ...]]:
        """min(m, C(n, k)) distinct skip sets, each drawn by :meth:`sample` (re-drawn if seen)."""
        m = min(m, math.comb(len(self.logits), k))
        sets: list[tuple[int, ...]] = []
        while len(sets) < m:
            s = self.sample(k, generator)
            if s not in sets:
                sets.append(s)
        return sets

    def update(self, sets: list[tuple[int, ...]], rewards: list[float]) -> torch.Tensor:
        """g_i += η (R_j − mean R) p_i (1 − p_i) for every i ∈ S_j; returns the change of g."""
        p = self.probs()
        baseline = sum(rewards) / len(rewards)
        delta = torch.zeros_like(self.logits)
        for s, r in zip(sets, rewards):
            for i in s:
                delta[i] += self.lr * (r - baseline) * p[i] * (1 - p[i])
        self.logits += delta
        return delta

    def top_k(self, k: int) -> list[int]:
        """The k blocks with the largest logits, sorted; ties go to the higher index, as the
        official selection (the last k of an ascending sort) has it."""
        order = sorted(range(len(self.logits)), key=lambda i: (float(self.logits[i]), i))
        return sorted(order[len(order) - k:]) if k else []


def run_search(model: torch.nn.Module, wrappers: list[SkippableBlock], batch_fn: Callable[[int], dict],
               val_batch_fn: Callable[[int], dict], loss_fn: Callable[[torch.nn.Module, dict], torch.Tensor],
               train_cfg: TrainConfig, cfg: SearchConfig, desc: str = "das_search") -> dict:
    """Train the supernet with the one training loop (:func:`vltune.train.loop.train`) while the
    policy learns; returns the skip set and the search trace (what ``skip.json`` holds).

    The loop re-seeds torch's RNG from (seed, step) before every step, so the sampled sets, and so
    the whole search, are a function of the seed.
    """
    n = len(wrappers)
    if cfg.k > n:
        raise ValueError(f"das search: k = {cfg.k} but the encoder has only {n} blocks")
    policy = SkipPolicy(n, cfg.policy_lr)
    first_reward = int(round(cfg.warmup_ratio * train_cfg.steps))
    trace: list[dict] = []
    skipped_count = [0] * n

    def reward_step(m: torch.nn.Module, step: int) -> None:
        device = next(m.parameters()).device
        val = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in val_batch_fn(step).items()}
        sets = policy.sample_distinct(cfg.k, cfg.sets_per_reward)
        was_training = m.training
        m.eval()
        losses = []
        with torch.no_grad():
            for s in sets:
                set_skipped(wrappers, s)
                losses.append(float(loss_fn(m, val)))
        m.train(was_training)
        rewards = [math.exp(-loss) for loss in losses]
        policy.update(sets, rewards)
        trace.append({"step": step, "sets": [list(s) for s in sets], "losses": losses, "rewards": rewards,
                      "logits": policy.logits.tolist()})

    def batch_with_step(step: int) -> dict:
        return {**batch_fn(step), "step": step}

    def search_loss(m: torch.nn.Module, batch: dict) -> torch.Tensor:
        step = batch["step"]
        if step >= first_reward and (step - first_reward) % cfg.turn == 0:
            reward_step(m, step)
        s = policy.sample(cfg.k)
        for i in s:
            skipped_count[i] += 1
        set_skipped(wrappers, s)
        return loss_fn(m, batch)

    result = train(model, batch_with_step, search_loss, train_cfg, desc=desc)
    set_skipped(wrappers, [])
    skip = policy.top_k(cfg.k)
    log.info("%s: skip blocks %s (logits %s)", desc, skip, [round(g, 4) for g in policy.logits.tolist()])
    return {"k": cfg.k, "skip": skip, "n_blocks": n, "logits": policy.logits.tolist(),
            "probs": policy.probs().tolist(), "skipped_count": skipped_count, "trace": trace,
            "search": asdict(cfg), "train": asdict(train_cfg), "history": result["history"],
            "wall_s": result["wall_s"]}
