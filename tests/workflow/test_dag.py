"""DAG wiring without running jobs (snakemake dry run): listing the t5 family adds the tiny T5's
pretraining and fine-tunes each family on its own backbone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_each_family_fine_tunes_its_own_backbone(tmp_path):
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["vlpet"].update(families=["bart", "t5"], seeds=[1])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(tmp_path / "config.yaml"), "-n", "-p", "--cores", "1", "all"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shell = [line for line in proc.stdout.splitlines() if line.startswith("vltune ") or "vltune " in line]
    finetune = {fam: [c for c in shell if f"--out results/vlpet/{fam}/full/seed1/checkpoint" in c] for fam in ("bart", "t5")}
    assert len(finetune["bart"]) == 1 and "--backbone resources/backbones/tiny-bart --family bart" in finetune["bart"][0]
    assert len(finetune["t5"]) == 1 and "--backbone resources/backbones/tiny-t5 --family t5" in finetune["t5"][0]
    assert any("pretrain-t5" in c and "--out resources/backbones/tiny-t5" in c for c in shell)
    assert not (tmp_path / "resources").exists()
