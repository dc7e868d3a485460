"""Bad inputs stop with one line naming what is wrong, and lose nothing already computed: a loss
that turns NaN or infinite, and config numbers that YAML 1.1 reads as strings."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from vltune.train.loop import NonFiniteLoss, TrainConfig, train


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _batches(bad_step=None, bad_weight=1.0):
    """Step ``t``'s batch; at ``bad_step`` (0-based) its loss weights are ``bad_weight``."""

    def batch_fn(step):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=g)
        w = torch.full((8, 1), bad_weight if step == bad_step else 1.0)
        return {"x": x, "y": x.sum(1, keepdim=True), "w": w}

    return batch_fn


def loss_fn(m, b):
    return ((m(b["x"]) - b["y"]) ** 2 * b["w"]).mean()


CFG = dict(steps=8, lr=1e-2, seed=1, checkpoint_every=2, log_every=1)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("bad", [math.nan, math.inf], ids=["nan", "inf"])
def test_a_non_finite_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, bad):
    """NaN/inf at step 6 of 8 (checkpoints every 2 steps): one line naming the run, the step, the
    loss and the checkpoint kept; that checkpoint is byte for byte the one a run stopped cleanly at
    step 6 leaves, no checkpoint of step 6 exists, and re-running on good input resumes it to the
    uninterrupted run's weights and history."""
    resume = tmp_path / "resume"
    with pytest.raises(NonFiniteLoss) as err:
        train(Net(), _batches(bad_step=5, bad_weight=bad), loss_fn, TrainConfig(**CFG), resume_dir=resume, desc="toy[run]")
    assert str(err.value) == (
        f"toy[run]: loss is {bad} at step 6 of 8 (lr 0.01); training stopped before that update, nothing saved "
        f"(resume checkpoint {resume / 'step-00000004'} kept); lower train.lr or check the inputs")
    assert sorted(p.name for p in resume.iterdir()) == ["latest", "step-00000004"]

    clean = tmp_path / "clean"

    def stop_at_5(step):
        if step == 5:
            raise Interrupt
        return _batches()(step)

    with pytest.raises(Interrupt):
        train(Net(), stop_at_5, loss_fn, TrainConfig(**CFG), resume_dir=clean)
    for name in ("model.safetensors", "optimizer.safetensors", "state.json"):
        assert (resume / "step-00000004" / name).read_bytes() == (clean / "step-00000004" / name).read_bytes(), name

    resumed_model, reference_model = Net(), Net()
    resumed = train(resumed_model, _batches(), loss_fn, TrainConfig(**CFG), resume_dir=resume)
    reference = train(reference_model, _batches(), loss_fn, TrainConfig(**CFG))
    assert resumed["resumed_from"] == 4
    assert resumed["history"] == reference["history"]
    assert all(torch.equal(p, q) for p, q in zip(resumed_model.state_dict().values(),
                                                 reference_model.state_dict().values()))


def test_a_command_whose_loss_diverges_exits_2_with_one_line_and_no_output(tiny_world, tokenizer_dir, tmp_path,
                                                                           capsys):
    """A real job (pretrain-bart) at lr 1e30 diverges at step 2: exit 2, a single error line naming
    the run, the step and the loss, no output folder, the step-1 checkpoint kept."""
    from vltune.cli import main

    params = {"arch": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "max_positions": 64}, "batch_size": 8,
              "train": {"steps": 6, "lr": 1e30, "grad_clip": 0, "log_every": 1, "checkpoint_every": 1, "seed": 3}}
    out, resume = tmp_path / "out", tmp_path / "resume"
    rc = main(["--threads", "1", "pretrain-bart", "--data", str(tiny_world), "--tokenizer", str(tokenizer_dir),
               "--out", str(out), "--params", json.dumps(params), "--resume-dir", str(resume)])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert rc == 2
    assert len(errors) == 1 and re.fullmatch(
        r"vltune pretrain-bart: error: pretrain_bart: loss is (nan|inf) at step 2 of 6 \(lr 1e\+30\); training "
        rf"stopped before that update, nothing saved \(resume checkpoint {re.escape(str(resume / 'step-00000001'))} "
        r"kept\); lower train\.lr or check the inputs", errors[0]), errors
    assert not out.exists()
    assert (resume / "latest").read_text() == "step-00000001"


ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"


@pytest.mark.parametrize("text", ["1e-4", "1.0e9", "5E3", "-2e-3", "5.e3", "1e+2"])
def test_the_suggested_spelling_is_the_number_yaml_1_1_reads(text):
    """PyYAML (YAML 1.1) reads each ``text`` as a string, and the spelling suggested as the float
    ``text`` means."""
    import yaml

    from vltune.config_numbers import yaml11_spelling

    assert yaml.safe_load(f"v: {text}")["v"] == text
    spelling = yaml11_spelling(text, integer=False)
    loaded = yaml.safe_load(f"v: {spelling}")["v"]
    assert isinstance(loaded, float) and loaded == float(text)


def _tiny_config(yaml_text: str) -> dict:
    """The tiny test config with ``yaml_text`` merged into it, as Snakemake merges a --configfile."""
    import yaml
    from snakemake.utils import update_config

    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    update_config(cfg, yaml.safe_load(yaml_text))
    return cfg


def test_numbers_yaml_reads_as_text_are_named_with_their_key_and_spelling():
    """Where the schema wants a number: a plain key, a key whose schema is a oneOf (null or a
    number), a list item, and an integer key; strings the schema allows are left alone."""
    import yaml

    from vltune.config_numbers import numbers_written_as_text

    cfg = _tiny_config("vlpet: {train: {lr: 1e-4}, dropout: 1e-1}\n"
                       "merging: {arithmetic: {lambdas: [0.5, 1e-1]}}\n"
                       "world: {seed: 1e3}\n")
    assert numbers_written_as_text(cfg, yaml.safe_load(SCHEMA.read_text())) == [
        "config key merging.arithmetic.lambdas[1]: '1e-1' is text, not a number, to YAML 1.1 (a float needs a dot "
        "and a signed exponent); write 1.0e-1",
        "config key vlpet.dropout: '1e-1' is text, not a number, to YAML 1.1 (a float needs a dot and a signed "
        "exponent); write 1.0e-1",
        "config key vlpet.train.lr: '1e-4' is text, not a number, to YAML 1.1 (a float needs a dot and a signed "
        "exponent); write 1.0e-4",
        "config key world.seed: '1e3' is text, not a number, to YAML 1.1 (a float needs a dot and a signed "
        "exponent); write 1000",
    ]
    assert numbers_written_as_text(_tiny_config("vlpet: {train: {lr: 1.0e-4}}\n"),
                                   yaml.safe_load(SCHEMA.read_text())) == []


def test_snakemake_refuses_a_learning_rate_written_1e_4_naming_the_key_and_the_fix(tmp_path, load_module):
    """The real parse (`snakemake -n`, the tiny config plus an override file): non-zero exit, the
    message names the key and how to write it, and no job ran."""
    snakemake_dry_run = load_module(ROOT / "tests/workflow/dry_runs.py", "dry_runs").snakemake_dry_run

    override = tmp_path / "override.yaml"
    override.write_text("vlpet:\n  train:\n    lr: 1e-4\n")
    proc = snakemake_dry_run(tmp_path, ROOT / ".test/config/config.yaml", override)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("config key vlpet.train.lr: '1e-4' is text, not a number, to YAML 1.1 (a float needs a dot and a "
            "signed exponent); write 1.0e-4") in out, out[-2000:]
    assert "Failed validating" not in out
    assert not (tmp_path / "resources").exists()
