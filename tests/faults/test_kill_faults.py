"""Training jobs killed with SIGKILL resume from their last checkpoint when re-run (the checkpoints
live in --resume-dir, outside the declared outputs) and end exactly where an uninterrupted run
ends.

A real pretrain-bart process killed from outside mid-way; then, for every command that resumes,
a kill at the start of a drawn step and one inside the checkpoint writer (a file half written, or
the checkpoint renamed before ``latest`` moved), each re-run compared bit for bit with the
uninterrupted run's outputs (tests/kill_jobs.py)."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kill_jobs import (assert_same_outputs, at_step, in_checkpoint_write, killed, killed_after_first_checkpoint,
                       outputs, run, run_in_process)

# Dropout stays on: the resumed run must also redraw the same dropout masks.
PARAMS = {"arch": {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "max_positions": 64}, "batch_size": 16,
          "train": {"steps": 120, "lr": 1e-3, "log_every": 10, "checkpoint_every": 10, "seed": 3}}


def command(world: Path, tokenizer: Path, out: Path, resume: Path) -> list[str]:
    return [sys.executable, "-m", "vltune.cli", "--threads", "1", "pretrain-bart", "--data", str(world),
            "--tokenizer", str(tokenizer), "--out", str(out), "--params", json.dumps(PARAMS),
            "--resume-dir", str(resume)]


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


def test_a_killed_job_resumes_only_under_the_same_settings_and_inputs(tiny_world, tokenizer_dir, tmp_path):
    """Killed at a checkpoint, then re-run with another batch size, or with a tokenizer whose
    files changed: each stops before training with what changed named, exit 2, the checkpoint kept;
    the same command then resumes it."""
    import shutil

    tokenizer = tmp_path / "tokenizer"
    shutil.copytree(tokenizer_dir, tokenizer)
    out, resume = tmp_path / "out", tmp_path / "resume"
    killed_after_first_checkpoint(command(tiny_world, tokenizer, out, resume), resume)
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


# --- every training command that resumes: SIGKILL at a step and inside the checkpoint writer ---

STEPS, EVERY = 6, 2  # resume checkpoints after steps 2 and 4
TRAIN = {"steps": STEPS, "lr": 1e-3, "log_every": 1, "checkpoint_every": EVERY, "seed": 3}
BART = {"d_model": 32, "layers": 1, "heads": 2, "ffn": 64, "max_positions": 64}
T5 = {"d_model": 32, "d_ff": 64, "d_kv": 16, "layers": 1, "heads": 2}
CLIP = {"image_size": 32, "patch_size": 16, "hidden": 32, "layers": 1, "heads": 2, "intermediate": 64,
        "projection": 32, "max_text_len": 40}
OPT = {"hidden": 32, "layers": 3, "heads": 2, "ffn": 64, "max_positions": 48}
VIT = {"image_size": 64, "patch_size": 16, "hidden": 32, "layers": 2, "heads": 2, "mlp_ratio": 2.0}
VLMO = {"d_model": 16, "layers": 2, "vl_layers": 1, "heads": 2, "mlp_ratio": 2}


def _pretrain(command, arch, tokenizer=True, *extra_args, **extra):
    def argv(ctx, out, resume):
        return ["--threads", "1", command, "--data", str(ctx.world),
                *(["--tokenizer", str(ctx.tokenizer)] if tokenizer else []), *extra_args, "--out", str(out),
                "--params", json.dumps({"arch": arch, "batch_size": 8, "train": TRAIN, **extra}),
                "--resume-dir", str(resume)]

    return argv


def _finetune_vlbart(ctx, out, resume):
    return ["--threads", "1", "finetune-vlbart", "--data", str(ctx.world), "--features", str(ctx.features()),
            "--backbone", str(ctx.reference_dir("pretrain-bart")), "--family", "bart", "--method", "vlpet-large",
            "--seed", "1", "--out", str(out), "--resume-dir", str(resume), "--params", json.dumps({
                "train": TRAIN, "batch_size": 8, "task_weights": {"vqa": 1, "nlvr2": 1}, "dropout": 0.1,
                "method_config": {"adapter_dim": 8, "gate_dim": 8, "vpa_dim": 8}})]


def _finetune_epalm(ctx, out, resume):
    return ["--threads", "1", "finetune-epalm", "--data", str(ctx.world),
            "--lm", str(ctx.reference_dir("pretrain-opt")), "--encoder", str(ctx.reference_dir("pretrain-vit")),
            "--task", "vqa", "--method", "epalm-prompt", "--seed", "1", "--out", str(out), "--resume-dir", str(resume),
            "--params", json.dumps({"train": TRAIN, "batch_size": 8, "method_config": {
                "n_tokens": 2, "start_layer": 1, "end_layer": 3, "prompt_len": 3}})]


def _finetune_vlmo(ctx, out, resume):
    return ["--threads", "1", "finetune-vlmo", "--inits", str(ctx.reference_dir("pretrain-vlmo")), "--tasks", "vqa",
            "--name", "agnostic", "--seed", "1", "--data", str(ctx.world), "--tokenizer", str(ctx.tokenizer),
            "--out", str(out), "--resume-dir", str(resume), "--params", json.dumps({
                "train": TRAIN, "batch_size": 8, "evaluate": {"split": "val", "batch_size": 16}})]


def _das_finetune(ctx, out, resume):
    return ["--threads", "1", "das-finetune", "--data", str(ctx.world), "--tokenizer", str(ctx.tokenizer),
            "--backbone", str(ctx.reference_dir("pretrain-vlmo")), "--family", "vlmo", "--task", "vqa", "--seed", "1",
            "--out", str(out), "--resume-dir", str(resume), "--params", json.dumps({
                "train": TRAIN, "batch_size": 8, "method_config": {"adapter_dim": 4, "skip_dim": 8}})]


JOBS = {
    "pretrain-bart": _pretrain("pretrain-bart", BART),
    "pretrain-t5": _pretrain("pretrain-t5", T5),
    "pretrain-clip": _pretrain("pretrain-clip", CLIP),
    "pretrain-opt": _pretrain("pretrain-opt", OPT),
    "pretrain-vit": _pretrain("pretrain-vit", VIT, False),
    "pretrain-vlmo": _pretrain("pretrain-vlmo", VLMO, True, "--mode", "agnostic"),
    "finetune-vlbart": _finetune_vlbart,
    "finetune-epalm": _finetune_epalm,
    "finetune-vlmo": _finetune_vlmo,
    "das-finetune": _das_finetune,
}
STAGES = ["model", "optimizer", "pointer"]


def _draw(job: str) -> random.Random:
    """The job's own seeded draw of kill points (the same every run, different across jobs)."""
    return random.Random(f"kill-faults/{job}")


class Jobs:
    """The inputs every job needs, and each job's uninterrupted outputs (run once, on first use;
    a job's output is the input of another: the CLIP's features, the BART, OPT, ViT and VLMo)."""

    def __init__(self, world, tokenizer, root):
        self.world, self.tokenizer, self.root, self._refs, self._features = world, tokenizer, root, {}, None

    def paths(self, job):
        return self.root / job / "out", self.root / job / "resume"

    def reference(self, job):
        if job not in self._refs:
            out, resume = self.paths(job)
            run_in_process(JOBS[job](self, out, resume))
            assert not resume.exists()
            self._refs[job] = outputs(out)
            shutil.copytree(out, self.root / job / "ref")
            shutil.rmtree(out)
        return self._refs[job]

    def reference_dir(self, job):
        self.reference(job)
        return self.root / job / "ref"

    def features(self):
        if self._features is None:
            self._features = self.root / "features"
            run_in_process(["--threads", "1", "extract-features", "--data", str(self.world), "--backbone",
                            str(self.reference_dir("pretrain-clip")), "--out", str(self._features)])
        return self._features


@pytest.fixture(scope="module")
def jobs(tiny_world, tokenizer_dir, tmp_path_factory):
    return Jobs(tiny_world, tokenizer_dir, tmp_path_factory.mktemp("jobs"))


def _kill_and_rerun(jobs, job, kill_point):
    reference = jobs.reference(job)
    out, resume = jobs.paths(job)
    shutil.rmtree(out, ignore_errors=True)  # what an earlier failing example left
    shutil.rmtree(resume, ignore_errors=True)
    argv = JOBS[job](jobs, out, resume)
    killed(argv, kill_point)
    assert not out.exists(), f"a killed job left outputs: {sorted(p.name for p in out.rglob('*'))}"
    run_in_process(argv)
    assert_same_outputs(reference, outputs(out))
    assert not resume.exists(), "a finished job removes its resume checkpoints"


@pytest.mark.parametrize("job", JOBS)
def test_a_job_killed_at_a_step_reruns_to_the_uninterrupted_outputs(jobs, job):
    """SIGKILL at the start of a drawn step after the first checkpoint (the step's work and those
    since the checkpoint lost); the re-run resumes and writes what the uninterrupted run wrote."""
    _kill_and_rerun(jobs, job, at_step(_draw(job).randint(EVERY + 1, STEPS - 1)))


@pytest.mark.parametrize("job", JOBS)
def test_a_job_killed_while_writing_a_checkpoint_reruns_to_the_uninterrupted_outputs(jobs, job):
    """SIGKILL inside the writer of a drawn checkpoint: a file half written in its temporary folder,
    or the folder renamed with ``latest`` not yet moved (the stage cycles over the jobs)."""
    rng = _draw(job)
    rng.random()
    stage = STAGES[list(JOBS).index(job) % len(STAGES)]
    _kill_and_rerun(jobs, job, in_checkpoint_write(rng.randint(1, (STEPS - 1) // EVERY), stage))
