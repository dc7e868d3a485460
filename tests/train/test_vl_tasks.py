"""Multitask data: round-robin rounds hold each task `weight` times; VQA targets are sampled among
answers with a positive soft score and carry that score as the loss weight; NLVR2 batches put
the two images side by side with image-order ids 0/1."""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch

from vltune.evaluate.vqa import soft_scores
from vltune.features.store import FeatureStore, FeatureWriter
from vltune.train.vl_tasks import VisualBank, load_task, make_batch, task_schedule


def _bank(tiny_world, tmp_path):
    from vltune.data.tables import read_table, table_path

    ids = read_table(table_path(tiny_world, "images"), "images")["image_id"].to_pylist()
    g = torch.Generator().manual_seed(0)
    w = FeatureWriter(tmp_path / "feats", encoder="fake", preprocessing={}, shard_size=50)
    w.add(ids, {"grid": torch.randn(len(ids), 4, 6, generator=g), "cls": torch.randn(len(ids), 6, generator=g)})
    w.close()
    return VisualBank(FeatureStore(tmp_path / "feats"))


def test_each_round_holds_every_task_weight_times():
    weights = {"vqa": 1, "gqa": 1, "nlvr2": 2, "caption": 1}
    for r in range(4):
        counts = Counter(task_schedule(weights, seed=3, step=r * 5 + i) for i in range(5))
        assert counts == Counter(weights)
    rounds = [tuple(task_schedule(weights, 3, r * 5 + i) for i in range(5)) for r in range(6)]
    assert len(set(rounds)) > 1, "rounds are shuffled"


def test_vqa_targets_are_scored_answers_weighted_by_their_score(tiny_world, tokenizer, tmp_path):
    bank = _bank(tiny_world, tmp_path)
    ex = load_task(tiny_world, "vqa", "train", tokenizer)
    b = make_batch(ex, range(len(ex)), bank, tokenizer.pad_token_id, np.random.default_rng(0))
    assert b["vis_feats"].shape == (len(ex), 5, 6) and bool((b["vis_order"] == 0).all())
    for i in range(len(ex)):
        label = [t for t in b["labels"][i].tolist() if t != -100]
        answer = tokenizer.decode(label, skip_special_tokens=True).strip()
        score = soft_scores(ex.refs[i])[answer]
        assert score > 0 and abs(b["weights"][i].item() - score) < 1e-6


def test_nlvr2_batches_hold_both_images_in_order(tiny_world, tokenizer, tmp_path):
    bank = _bank(tiny_world, tmp_path)
    ex = load_task(tiny_world, "nlvr2", "test", tokenizer)
    b = make_batch(ex, [0, 1], bank, tokenizer.pad_token_id, rng=None)
    assert b["vis_feats"].shape == (2, 10, 6)
    assert b["vis_order"][0].tolist() == [0] * 5 + [1] * 5
    left, right = ex.images[0]
    torch.testing.assert_close(b["vis_feats"][0, :5], bank.tokens[bank.index[left]])
    torch.testing.assert_close(b["vis_feats"][0, 5:], bank.tokens[bank.index[right]])
    assert "labels" not in b
