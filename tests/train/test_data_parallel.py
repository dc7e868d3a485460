"""Data-parallel training: `vltune --processes 2` runs the real training commands as 2 CPU processes
(accelerate launch, gloo) that split each global batch; the result equals a 1-process run with the
same global batch up to float summation order. The launched run is CLIP's (gathered contrastive
loss, the harder case); BART's token-mean loss normalised by the global token count is checked in
process, shard by shard, as DDP combines the ranks' gradients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vltune.backbones.bart import build_tiny_bart
from vltune.train.distributed import shard_batch
from vltune.train.objectives import token_ce_terms
from vltune.utils.tensors import pad_sequences

ARCH = {
    "clip": {"image_size": 64, "patch_size": 16, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64,
             "projection": 32, "max_text_len": 40},
    "bart": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "max_positions": 64, "dropout": 0.0},
}


def pretrain(kind: str, processes: int, world: Path, tokenizer: Path, out: Path) -> dict:
    params = {"arch": ARCH[kind], "batch_size": 16, "train": {"steps": 6, "lr": 3e-3, "log_every": 1, "seed": 1}}
    cmd = [sys.executable, "-m", "vltune.cli", "--processes", str(processes), f"pretrain-{kind}", "--data", str(world),
           "--tokenizer", str(tokenizer), "--out", str(out), "--params", json.dumps(params)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((out / "train_log.json").read_text())


def test_two_processes_equal_one_process_at_the_same_global_batch(tiny_world, tokenizer_dir, tmp_path):
    kind = "clip"
    one = pretrain(kind, 1, tiny_world, tokenizer_dir, tmp_path / "one")
    two = pretrain(kind, 2, tiny_world, tokenizer_dir, tmp_path / "two")
    assert [h["step"] for h in two["history"]] == list(range(1, 7))
    losses = torch.tensor([[h["loss"] for h in r["history"]] for r in (one, two)])
    assert torch.allclose(losses[0], losses[1], rtol=1e-5, atol=1e-6), losses
    assert losses[0, -1] < losses[0, 0]  # it trained
    w1, w2 = load_file(str(tmp_path / "one/model.safetensors")), load_file(str(tmp_path / "two/model.safetensors"))
    assert w1.keys() == w2.keys()
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-4, worst  # measured ~6e-6 (CLIP) after 6 steps at lr 3e-3


def test_shard_batch_splits_rows_and_refuses_uneven_or_ragged_batches():
    batch = {"x": torch.arange(12).view(6, 2), "y": torch.arange(6), "meta": "task"}
    parts = [shard_batch(batch, r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p["x"] for p in parts]), batch["x"])
    assert [p["y"].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]] and parts[2]["meta"] == "task"
    assert shard_batch(batch, 0, 1) is batch
    with pytest.raises(ValueError, match="does not split evenly over 4"):
        shard_batch(batch, 0, 4)
    with pytest.raises(ValueError, match="disagree"):
        shard_batch({"x": torch.zeros(4), "y": torch.zeros(2)}, 0, 2)


def test_bart_token_loss_over_shards_recombines_to_the_whole_batch_loss_and_gradient(tokenizer):
    """Each rank's term (token_ce_terms on its shard, × W / global token count), with DDP's mean of
    the ranks' gradients, is the whole batch's token-mean loss and gradient, although the shards hold
    different numbers of target tokens (where a mean of per-rank means would be wrong)."""
    torch.manual_seed(0)
    model = build_tiny_bart(tokenizer, **ARCH["bart"])
    texts = ["a red circle", "a cube",  # rank 0: few target tokens; rank 1: many
             "two blue squares left of a green triangle above a small yellow circle",
             "three purple triangles and one large orange square on the right side"]
    ids = [tokenizer(t)["input_ids"] for t in texts]
    batch = {"input_ids": pad_sequences(ids, tokenizer.pad_token_id), "labels": pad_sequences(ids, -100)}
    batch["attention_mask"] = (batch["input_ids"] != tokenizer.pad_token_id).long()

    def grads() -> list[torch.Tensor]:
        g = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return g

    model(**batch).loss.backward()  # transformers' mean over all target tokens: the 1-process loss
    whole_loss = model(**batch).loss.item()
    whole_grad = grads()

    world = 2
    shards = [shard_batch(batch, r, world) for r in range(world)]
    terms = [token_ce_terms(model, b) for b in shards]
    counts = [int(c) for _, c in terms]
    assert counts[0] != counts[1]
    total = sum(counts)
    rank_grads = []
    for loss_sum, _ in terms:
        (loss_sum * (world / total)).backward(retain_graph=True)
        rank_grads.append(grads())
    ddp_grad = [sum(g) / world for g in zip(*rank_grads)]
    assert abs(sum(t.item() for t, _ in terms) / total - whole_loss) < 1e-5
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(ddp_grad, whole_grad))
    mean_of_means = sum(t.item() / c for t, c in zip((t for t, _ in terms), counts)) / world
    assert abs(mean_of_means - whole_loss) > 1e-3  # what per-rank normalisation would have trained on
