"""Multitask data: round-robin rounds hold each task `weight` times; VQA targets are sampled among
answers with a positive soft score and carry that score as the loss weight; NLVR2 batches put
the two images side by side with image-order ids 0/1."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from vltune.errors import UserError
from vltune.data.answers import soft_scores
from vltune.features.store import FeatureStore, FeatureWriter
from vltune.recipes.encdec.tasks import VisualBank, VisualTokens, load_task, make_batch, task_schedule


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


def _grid_store(tmp_path, side: int, keys=("grid", "cls")):
    ids = [f"img{i}" for i in range(3)]
    g = torch.Generator().manual_seed(1)
    feats = {"grid": torch.randn(3, side * side, 5, generator=g), "cls": torch.randn(3, 5, generator=g)}
    w = FeatureWriter(tmp_path / f"feats{side}", encoder="fake", preprocessing={}, shard_size=50)
    w.add(ids, {k: feats[k] for k in keys})
    w.close()
    return FeatureStore(tmp_path / f"feats{side}"), ids


def test_a_7x7_grid_pools_to_6x6_cells_as_an_adaptive_max_pool_over_overlapping_2x2_windows(tmp_path):
    """VL-PET's 36 visual tokens from RN101's 49: each 6×6 cell is the max over rows/columns
    floor(i·7/6) .. ceil((i+1)·7/6) - 1 of the 7×7 grid, i.e. a 2×2 window (written out here, not
    through torch's pooling), and no summary vector is appended."""
    store, ids = _grid_store(tmp_path, 7)
    bank = VisualBank(store, VisualTokens(grid_pool=6, cls=False))
    assert bank.tokens_per_image == 36 and bank.dim == 5
    grid = store.get(ids, "grid").float().view(3, 7, 7, 5)
    for i in range(6):
        for j in range(6):
            r0, r1 = (i * 7) // 6, -(-((i + 1) * 7) // 6)
            c0, c1 = (j * 7) // 6, -(-((j + 1) * 7) // 6)
            assert (r1 - r0, c1 - c0) == (2, 2)
            expected = grid[:, r0:r1, c0:c1].amax((1, 2))
            torch.testing.assert_close(bank.tokens[:, i * 6 + j], expected)
    feats, order = bank.gather([(ids[0], ids[1])])  # an NLVR2 pair: 72 tokens
    assert feats.shape == (1, 72, 5) and order[0].tolist() == [0] * 36 + [1] * 36


def test_the_bank_appends_cls_after_the_grid_and_refuses_what_the_store_lacks(tmp_path):
    store, ids = _grid_store(tmp_path, 4)
    bank = VisualBank(store, VisualTokens())
    assert bank.tokens_per_image == 17
    torch.testing.assert_close(bank.tokens[:, 16], store.get(ids, "cls").float())
    grid_only, _ = _grid_store(tmp_path / "g", 4, keys=("grid",))
    with pytest.raises(UserError, match="no 'cls' feature.*features.tokens.cls: false"):
        VisualBank(grid_only, VisualTokens())
    assert VisualBank(grid_only, VisualTokens(cls=False)).tokens_per_image == 16
    with pytest.raises(UserError, match="grid_pool 5 is larger than the 4×4 grid"):
        VisualBank(store, VisualTokens(grid_pool=5))
    with pytest.raises(UserError, match="features.tokens: unknown key 'pool'"):
        VisualTokens.from_dict({"pool": 6})


def test_fine_tuning_refuses_a_tokenizer_with_fewer_vis_extra_ids_than_an_image_has_tokens(
        tiny_world, tokenizer, tmp_path):
    """RN101's unpooled grid (49 + 1 tokens) against the trained tokenizer's 40 <vis_extra_id_k>:
    stopped before any training step, naming the tokenizer and the key that fixes it."""
    from vltune.backbones.bart import build_tiny_bart
    from vltune.data.tables import read_table, table_path
    from vltune.train.loop import TrainConfig
    from vltune.recipes.encdec.finetune import finetune_vl_model

    tiny_bart_dir = tmp_path / "bart"
    build_tiny_bart(tokenizer, d_model=16, layers=1, heads=2, ffn=32, max_positions=32).save_pretrained(tiny_bart_dir)
    tokenizer.save_pretrained(tiny_bart_dir)
    ids = read_table(table_path(tiny_world, "images"), "images")["image_id"].to_pylist()
    w = FeatureWriter(tmp_path / "rn", encoder="fake-rn101", preprocessing={}, shard_size=500)
    w.add(ids, {"grid": torch.randn(len(ids), 49, 8), "cls": torch.randn(len(ids), 8)})
    w.close()
    with pytest.raises(UserError, match=r"has 40 <vis_extra_id_k> tokens, but an image gives 50 .*grid_pool"):
        finetune_vl_model(tiny_world, tmp_path / "rn", tiny_bart_dir, tmp_path / "out", "full",
                          TrainConfig(steps=1), 2, {"vqa": 1})
    assert not (tmp_path / "out").exists()
