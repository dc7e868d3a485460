"""The DAS study's config: schema checks of the das section, its method config checked when the
workflow is parsed, and the default / full-grid DAGs wiring search → fine-tuning → evaluation."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = str(ROOT / "workflow/schemas/config.schema.yaml")


def _tiny():
    return yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())


@pytest.mark.parametrize("key, value, expected", [
    ("search", {"stepz": 3}, "'stepz' was unexpected"),
    ("tasks", ["retrieval"], "'retrieval' is not one of"),
    ("k", [-1], "-1 is less than the minimum of 0"),
    ("latency", {"repeats": 0}, "0 is less than the minimum of 1"),
])
def test_bad_das_key_is_rejected_naming_it(key, value, expected):
    cfg = _tiny()
    cfg["das"][key] = value
    with pytest.raises(WorkflowError, match=re.escape(expected)):
        validate(cfg, SCHEMA)


def _dry_run(cfg: dict, tmp_path: Path, *extra: Path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml"), *map(str, extra), "-n", "-p", "--cores", "2", "all"],
        capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def test_das_method_config_typo_or_skip_stops_the_workflow_before_any_job(tmp_path):
    cfg = _tiny()
    cfg["das"]["method_config"] = {"skip_dimm": 8}
    rc, out = _dry_run(cfg, tmp_path)
    assert rc != 0 and "das.method_config" in out and "'skip_dimm'" in out and "skip_dim" in out
    cfg["das"]["method_config"] = {"skip": [0]}
    rc, out = _dry_run(cfg, tmp_path)
    assert rc != 0 and "das.method_config.skip" in out and "skip.json" in out
    assert not (tmp_path / "resources").exists()


def test_default_and_full_grid_dags_search_only_for_k_above_zero(tmp_path):
    rc, out = _dry_run(yaml.safe_load((ROOT / "config/config.yaml").read_text()), tmp_path)
    assert rc == 0, out[-3000:]
    shell = [line for line in out.splitlines() if "vltune " in line]
    search = [c for c in shell if "das-search" in c]
    finetune = [c for c in shell if "das-finetune" in c]
    # The default: DAS on the VLMo, two tasks, one search each (k = 1), fine-tuning for k = 0 and 1.
    assert len(search) == 2 and all("--family vlmo" in c and "--k 1" in c for c in search)
    assert sorted(next(t for t in ("vqa", "nlvr2", "retrieval") if f"--task {t} " in c) for c in search) \
        == ["retrieval", "vqa"]
    for task in ("vqa", "retrieval"):
        mine = [c for c in finetune if f"results/das/vlmo/{task}/" in c]
        assert sorted(f"--skip results/das/vlmo/{task}/k1/seed42/skip.json" in c for c in mine) == [False, True]
    assert not any("--family bart" in c for c in search + finetune)
    assert sum("das-evaluate" in c for c in shell) == 4 and sum("das-report" in c for c in shell) == 1
    rc, out = _dry_run(yaml.safe_load((ROOT / "config/config.yaml").read_text()), tmp_path,
                       ROOT / "config/synthetic-full.yaml")
    assert rc == 0, out[-3000:]
    shell = [line for line in out.splitlines() if "vltune " in line]
    # (4 VL-BART tasks + 3 VLMo tasks) × k ∈ {1, 2} × seeds
    assert sum("das-search" in c for c in shell) == (4 + 3) * 2 * 3
    assert sum("das-search" in c and "--family vlmo" in c for c in shell) == 3 * 2 * 3
    assert sum("das-finetune" in c for c in shell) == (4 + 3) * 3 * 3
