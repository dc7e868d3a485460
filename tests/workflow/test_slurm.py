"""`snakemake --profile slurm` on a real Slurm (Debian's slurm-wlm, one node, two fake GPUs, no
accounting database), brought up by scripts/slurm-local.sh: the tiny config runs end to end, GPU
rules are submitted with --gpus (and get a GPU of their own), CPU rules without, and a failing
rule is reported as failed instead of hanging the run.

.ci/run installs slurm-wlm and munge (scripts/test-tools.sh, through slurm-local.sh install); the fixture starts the
daemons and stops exactly those it started. Where Slurm is missing and cannot be installed (not
root, no apt-get, apt-get failed) the tests fail saying why, as they do when a cluster that is
installed does not come up."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / ".test/config/config.yaml"
SCRIPT = ROOT / "scripts/slurm-local.sh"
GPU_RULES = {"pretrain_clip", "pretrain_bart", "extract_features", "finetune_vlbart", "evaluate_vlbart"}
CPU_RULES = {"make_world", "train_tokenizer", "baselines"}
LOCAL_RULES = {"report", "rulegraph", "all"}
# The plugin polls every ~10 s at best: poll from the first second on.
FAST_POLL = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]

pytestmark = [pytest.mark.slurm, pytest.mark.integration]


def _why_slurm_cannot_be_installed() -> str | None:
    """None when Slurm is installed or was just installed; else why it cannot be."""
    if shutil.which("slurmctld") and shutil.which("slurmd") and shutil.which("munged"):
        return None
    if os.geteuid() != 0:
        return "Slurm is not installed and scripts/slurm-local.sh needs root to install it"
    if shutil.which("apt-get") is None:
        return "Slurm is not installed and there is no apt-get to install slurm-wlm and munge"
    inst = subprocess.run(["bash", str(SCRIPT), "install"], capture_output=True, text=True, timeout=900)
    if inst.returncode != 0:
        return f"apt-get could not install slurm-wlm and munge:\n{inst.stderr[-2000:]}"
    return None


@pytest.fixture(scope="module")
def slurm_cluster():
    """A running local Slurm; stopped afterwards only if this fixture started it."""
    already = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True).returncode == 0
    if not already:
        reason = _why_slurm_cannot_be_installed()
        if reason:  # a missing tool fails the suite, as a missing Java does (scripts/test-tools.sh installs both)
            pytest.fail(f"{reason}: run `bash scripts/test-tools.sh` first")
        up = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=300)
        if up.returncode != 0:  # installed but broken: a failure, never a skip
            pytest.fail(f"scripts/slurm-local.sh start failed ({up.returncode}):\n{up.stderr[-4000:]}")
    yield
    if not already:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, timeout=60)


def snakemake_slurm(workdir: Path, *args: str, timeout: int) -> tuple[subprocess.CompletedProcess, float]:
    """`snakemake --profile slurm` as typed from the repository root (./slurm is the profile)."""
    cmd = [sys.executable, "-m", "snakemake", "--profile", "slurm", "--directory", str(workdir), *FAST_POLL, *args]
    t0 = time.monotonic()
    # subprocess kills with SIGKILL at the timeout: a hang fails the test instead of blocking CI.
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - t0


def small_config(tmp_path: Path, **world) -> Path:
    """The tiny config's foundation path with one family, method and seed (fewer jobs: each
    sequential Slurm round costs ~30 s of polling here; the merging, eP-ALM and DAS studies run in
    test_pipeline), plus ``world`` overrides."""
    cfg = {"vlpet": {"families": ["bart"], "methods": ["full"], "seeds": [1]},
           "merging": {"inits": []}, "epalm": {"methods": []}, "das": {"tasks": [], "vlmo": {"tasks": []}}}
    if world:
        cfg["world"] = world
    path = tmp_path / "slurm.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def sbatch_calls(log: str) -> dict[str, list[str]]:
    """Rule → the sbatch command lines the plugin logged (--verbose) for it."""
    calls: dict[str, list[str]] = {}
    for line in log.splitlines():
        if "sbatch call:" in line:
            rule = re.search(r"--comment '?rule_([a-z_0-9]+?)(?:_wildcards|'|\s)", line)
            assert rule, line
            calls.setdefault(rule.group(1), []).append(line)
    return calls


def test_tiny_config_runs_end_to_end_on_slurm(slurm_cluster, tmp_path):
    proc, wall = snakemake_slurm(tmp_path, "all", "--verbose", "--configfile", str(TINY), str(small_config(tmp_path)),
                                 timeout=1500)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    print(f"snakemake --profile slurm all (tiny config, one run): {wall:.0f} s")

    df = pd.read_csv(tmp_path / "results/report/summary.csv")
    assert set(df.experiment) == {"baselines", "vlpet-bart"}
    run = df[df.experiment == "vlpet-bart"].iloc[0]
    assert run.method == "full" and run.seed == 1 and 0 <= run.vqa_accuracy <= 100
    assert (tmp_path / "results/report/rulegraph.svg").read_text().startswith("<svg")

    calls = sbatch_calls(out)
    assert set(calls) == GPU_RULES | CPU_RULES, sorted(calls)  # report, rulegraph, all stay local
    for rule in GPU_RULES:
        assert all("--gpus=1" in c and "--cpus-per-gpu=1" in c for c in calls[rule]), calls[rule]
    for rule in CPU_RULES:
        assert all("--gpus" not in c and "--cpus-per-task=1" in c for c in calls[rule]), calls[rule]

    # Inside the jobs: every job ran under Slurm; Slurm gave each GPU job a GPU of its own.
    ledger = pd.read_csv(tmp_path / "results/report/ledger.csv").set_index("job")
    assert ledger.slurm_job_id.notna().all()
    gpu_jobs = ledger[ledger.command.isin(["pretrain-clip", "pretrain-bart", "extract-features", "finetune-vlbart",
                                           "evaluate-vlbart"])]
    assert len(gpu_jobs) == 5
    records = {job: json.loads((tmp_path / "results/ledger" / f"{job}.json").read_text()) for job in ledger.index}
    assert all(records[j]["cuda_visible_devices"] in ("0", "1") for j in gpu_jobs.index)
    assert all(records[j]["cuda_visible_devices"] is None for j in ledger.index if j not in gpu_jobs.index)


def test_failing_rule_is_reported_as_failed_not_hung(slurm_cluster, tmp_path):
    # Passes the schema, fails in the job: max_objects below min_objects.
    cfg = small_config(tmp_path, min_objects=5, max_objects=2)
    proc, wall = snakemake_slurm(tmp_path, "resources/data/shapes/world.json", "--configfile", str(TINY), str(cfg),
                                 "--retries", "0", timeout=300)  # the profile's retries would only repeat it
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Error in rule make_world" in out, out[-4000:]
    assert "expected between min_objects" in (tmp_path / "logs/make_world/shapes.log").read_text()
    print(f"failure reported after {wall:.0f} s")
