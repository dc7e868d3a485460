"""What one dry run of the tiny config says about planning itself: the report reads exactly the
ledgers the jobs write, the resource helpers give each job the config's placement, and parsing
the workflow imports no torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from dry_runs import ROOT, shell_commands

PLACEMENT = {"gpus": 2, "threads": 3, "gpu_partition": "gpu-p", "cpu_partition": "cpu-p", "gpu_model": "h100",
             "mem_mb": 7000, "runtime": 45}


def _dry_run(tmp_path: Path) -> str:
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg.setdefault("resources", {}).update(PLACEMENT)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    # snakemake's own entry point, then whether torch was imported by the time it exits
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('TORCH IMPORTED:', 'torch' in sys.modules))\n"
            f"sys.argv = ['snakemake', '-s', {str(ROOT / 'Snakefile')!r}, '--directory', {str(tmp_path)!r},"
            f" '--configfile', {str(tmp_path / 'config.yaml')!r}, '-n', '-p', '--cores', '3', 'all']\n"
            "runpy.run_module('snakemake', run_name='__main__')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _jobs(stdout: str) -> dict[str, list[str]]:
    """rule name -> the `resources:` line of each of its jobs."""
    jobs, rule = {}, None
    for line in stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\S+):$", line)
        if m:
            rule = m.group(1)
        elif rule and line.startswith("    resources: "):
            jobs.setdefault(rule, []).append(line.removeprefix("    resources: "))
    return jobs


def test_the_report_reads_every_ledger_the_jobs_write_the_placement_is_the_configs_and_no_torch(tmp_path):
    out = _dry_run(tmp_path)
    assert "TORCH IMPORTED: False" in out
    shell = shell_commands(out)
    written = {m.group(1) for c in shell for m in [re.search(r"--ledger (\S+)", c)] if m}
    report = next(c for c in shell if c.startswith("vltune report "))
    read = set(re.search(r"--ledgers (.*?) --out-dir", report).group(1).split())
    assert written and read == written
    jobs = _jobs(out)
    # a training rule: resources.gpus GPUs, ceil(3 threads / 2 GPUs) = 2 CPUs each, on the GPU partition
    for res in jobs["pretrain_clip"] + jobs["finetune_vlbart"]:
        fields = set(res.split(", "))
        assert {"gpu=2", "cpus_per_gpu=2", "gpu_model=h100", "slurm_partition=gpu-p", "mem_mb=7000", "runtime=45"} <= fields
    # a one-GPU rule and CPU-only rules
    assert {"gpu=1", "cpus_per_gpu=3", "slurm_partition=gpu-p"} <= set(jobs["extract_features"][0].split(", "))
    assert {"mem_mb=2000", "runtime=10", "slurm_partition=cpu-p"} <= set(jobs["make_world"][0].split(", "))
    assert {"mem_mb=4000", "runtime=20", "slurm_partition=cpu-p"} <= set(jobs["baselines"][0].split(", "))
    assert not (tmp_path / "resources").exists()
