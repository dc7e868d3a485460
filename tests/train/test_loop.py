"""The training loop: deterministic per seed, and a run interrupted after a checkpoint resumes to
exactly the weights of an uninterrupted run (resume state lives outside the outputs)."""

from __future__ import annotations

import pytest
import torch

from vltune.errors import UserError
from vltune.train.loop import TrainConfig, train


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(6, 16)
        self.drop = torch.nn.Dropout(0.3)  # exercises the per-step RNG re-seeding
        self.b = torch.nn.Linear(16, 1)

    def forward(self, x):
        return self.b(self.drop(torch.relu(self.a(x))))


def batch_fn(step):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(8, 6, generator=g)
    return {"x": x, "y": x.sum(1, keepdim=True)}


def loss_fn(m, b):
    return torch.nn.functional.mse_loss(m(b["x"]), b["y"])


class Interrupt(Exception):
    pass


def _cfg(**kw):
    return TrainConfig(steps=12, lr=1e-2, seed=5, checkpoint_every=4, log_every=2, **kw)


def test_same_seed_same_weights_and_loss_decreases():
    m1, m2 = Net(), Net()
    cfg = TrainConfig(steps=80, lr=2e-2, seed=5, log_every=20)
    r1 = train(m1, batch_fn, loss_fn, cfg)
    train(m2, batch_fn, loss_fn, cfg)
    for p1, p2 in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(p1, p2)
    assert r1["history"][-1]["loss"] < 0.5 * r1["history"][0]["loss"]


def test_killed_run_resumes_to_identical_weights(tmp_path):
    reference = Net()
    train(reference, batch_fn, loss_fn, _cfg())

    def dying_batch_fn(step):
        if step == 10:  # after the checkpoint at step 8
            raise Interrupt
        return batch_fn(step)

    resume = tmp_path / "resume"
    with pytest.raises(Interrupt):
        train(Net(), dying_batch_fn, loss_fn, _cfg(), resume_dir=resume)
    assert (resume / "latest").read_text() == "step-00000008"

    resumed = Net()
    result = train(resumed, batch_fn, loss_fn, _cfg(), resume_dir=resume)
    assert result["resumed_from"] == 8
    for p_ref, p_res in zip(reference.parameters(), resumed.parameters()):
        assert torch.equal(p_ref, p_res)
    assert [h["step"] for h in result["history"]] == [2, 4, 6, 8, 10, 12]
    assert not resume.exists(), "a finished run must remove its resume checkpoints"


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    resume = tmp_path / "resume"

    def dying(step):
        if step == 5:
            raise Interrupt
        return batch_fn(step)

    with pytest.raises(Interrupt):
        train(Net(), dying, loss_fn, _cfg(), resume_dir=resume)
    with pytest.raises(UserError, match="other training settings"):
        train(Net(), batch_fn, loss_fn, TrainConfig(steps=20, lr=1e-2, seed=5, checkpoint_every=4), resume_dir=resume)


def test_bad_train_config_names_the_field():
    with pytest.raises(ValueError, match="steps"):
        TrainConfig(steps=0)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(steps=1, mixed_precision="fp8")
    with pytest.raises(ValueError, match="no_decay must be one of"):
        TrainConfig(steps=1, no_decay="norms")


def test_no_decay_name_filter_is_the_vlpet_codes():
    """VL-PET, arXiv 2308.09804: the reference exempts names with 'bias' or 'LayerNorm.weight' only, so
    BART's `*_layer_norm.weight` and middleY's `z` are decayed; the default exempts every 1-D tensor."""
    from transformers import BartConfig, BartModel

    from vltune.train.loop import make_optimizer

    model = BartModel(BartConfig(vocab_size=20, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                                 decoder_attention_heads=2, encoder_ffn_dim=8, decoder_ffn_dim=8, max_position_embeddings=8))
    model.register_parameter("z", torch.nn.Parameter(torch.zeros(8)))  # a middleY-like 1-D vector
    names = {id(p): n for n, p in model.named_parameters()}

    def undecayed(rule):
        groups = make_optimizer(model, TrainConfig(steps=1, no_decay=rule)).param_groups
        return {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}

    ref = undecayed("name")
    assert ref == {n for n in names.values() if n.endswith("bias")}
    assert "encoder.layers.0.self_attn_layer_norm.weight" not in ref and "z" not in ref
    std = undecayed("bias_and_norm")
    assert {"z", "encoder.layers.0.self_attn_layer_norm.weight", "encoder.layernorm_embedding.weight"} <= std


def test_clearing_a_finished_runs_checkpoints_leaves_no_empty_folders_under_resume(tmp_path, monkeypatch):
    """resume/<rule>/<wildcards>/ is resume state only: once the outputs are saved, the run's
    folder and the parents it leaves empty go; a sibling run's checkpoint stays."""
    from vltune.train.checkpoint import clear_checkpoints

    def dying(step):
        if step == 6:  # after the checkpoint at step 4
            raise Interrupt
        return batch_fn(step)

    monkeypatch.chdir(tmp_path)
    run, sibling = "resume/finetune/bart/lora/seed0", "resume/finetune/bart/prompt/seed0"
    for resume_dir in (run, sibling):
        with pytest.raises(Interrupt):
            train(Net(), dying, loss_fn, _cfg(), resume_dir=resume_dir)
        assert (tmp_path / resume_dir / "latest").exists()
    clear_checkpoints(run, recursive=True)
    assert not (tmp_path / "resume/finetune/bart/lora").exists()
    assert (tmp_path / sibling / "latest").exists()
    train(Net(), batch_fn, loss_fn, _cfg(), resume_dir=sibling)  # finishes: the loop clears its own state
    assert list(tmp_path.iterdir()) == []
