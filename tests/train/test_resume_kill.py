"""A real training job killed with SIGKILL mid-way resumes from its last checkpoint when re-run (the
checkpoints live in --resume-dir, outside the declared outputs) and ends exactly where an
uninterrupted run ends: same loss history, same weights."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

# Dropout stays on: the resumed run must also redraw the same dropout masks.
PARAMS = {"arch": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "max_positions": 64}, "batch_size": 16,
          "train": {"steps": 120, "lr": 1e-3, "log_every": 10, "checkpoint_every": 10, "seed": 3}}


def command(world: Path, tokenizer: Path, out: Path, resume: Path) -> list[str]:
    return [sys.executable, "-m", "vltune.cli", "--threads", "1", "pretrain-bart", "--data", str(world),
            "--tokenizer", str(tokenizer), "--out", str(out), "--params", json.dumps(PARAMS),
            "--resume-dir", str(resume)]


def run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_sigkilled_training_job_resumes_to_the_uninterrupted_result(tiny_world, tokenizer_dir, tmp_path):
    run(command(tiny_world, tokenizer_dir, tmp_path / "ref", tmp_path / "resume-ref"))
    reference = json.loads((tmp_path / "ref/train_log.json").read_text())
    assert reference["resumed_from"] == 0

    out, resume = tmp_path / "out", tmp_path / "resume"
    job = subprocess.Popen(command(tiny_world, tokenizer_dir, out, resume), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (resume / "latest").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)  # mid-way: past the first checkpoint, well before step 120
    assert job.wait() == -signal.SIGKILL, "the job finished before it could be killed"
    assert not (out / "train_log.json").exists()
    killed_at = int((resume / "latest").read_text().removeprefix("step-"))
    assert 0 < killed_at < PARAMS["train"]["steps"]

    run(command(tiny_world, tokenizer_dir, out, resume))  # the re-run, same command
    resumed = json.loads((out / "train_log.json").read_text())
    assert resumed["resumed_from"] == killed_at
    assert resumed["history"] == reference["history"]
    assert resumed["final_loss"] == reference["final_loss"]
    ref_w, res_w = load_file(str(tmp_path / "ref/model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.equal(ref_w[k], res_w[k]) for k in ref_w)
    assert not resume.exists(), "a finished run removes its resume checkpoints"


def _killed_after_first_checkpoint(cmd: list[str], resume: Path) -> None:
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (resume / "latest").exists() and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    job.send_signal(signal.SIGKILL)
    assert job.wait() == -signal.SIGKILL, "the job finished before it could be killed"


def test_a_killed_job_resumes_only_under_the_same_settings_and_inputs(tiny_world, tokenizer_dir, tmp_path):
    """Killed at a checkpoint, then re-run with another batch size, or with a tokenizer whose
    files changed: each stops before training with what changed named, exit 2, the checkpoint kept;
    the same command then resumes it."""
    import shutil

    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_dir, tokenizer)
    out, resume = tmp_path / "out", tmp_path / "resume"
    _killed_after_first_checkpoint(command(tiny_world, tokenizer, out, resume), resume)
    killed_at = (resume / "latest").read_text()

    other = command(tiny_world, tokenizer, out, resume)
    other[other.index("--params") + 1] = json.dumps({**PARAMS, "batch_size": 8})
    proc = subprocess.run(other, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "belongs to another run (changed: params.batch_size 16 → 8)" in proc.stderr
    assert "Traceback" not in proc.stderr

    original = (tokenizer / "tokenizer_config.json").read_bytes()
    config = json.loads(original)
    (tokenizer / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 63}))
    proc = subprocess.run(command(tiny_world, tokenizer, out, resume), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "changed: tokenizer.tokenizer_config.json" in proc.stderr, proc.stderr[-2000:]
    assert (resume / "latest").read_text() == killed_at and not (out / "train_log.json").exists()

    (tokenizer / "tokenizer_config.json").write_bytes(original)
    run(command(tiny_world, tokenizer, out, resume))
    assert json.loads((out / "train_log.json").read_text())["resumed_from"] == int(killed_at.removeprefix("step-"))


def test_a_job_that_fails_while_saving_its_output_keeps_its_checkpoint(tiny_world, tokenizer_dir, tmp_path):
    """Checkpoints are cleared after the job's outputs are written, not when training ends: a job
    whose output cannot be written (here its folder's path runs through a file) resumes from its
    last checkpoint instead of training from step 0 again."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    resume = tmp_path / "resume"
    proc = subprocess.run(command(tiny_world, tokenizer_dir, blocked / "out", resume), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert (resume / "latest").read_text() == "step-00000110"  # the last checkpoint before step 120
    run(command(tiny_world, tokenizer_dir, tmp_path / "out", resume))
    assert json.loads((tmp_path / "out/train_log.json").read_text())["resumed_from"] == 110
    assert not resume.exists()
