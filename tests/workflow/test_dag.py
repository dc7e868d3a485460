"""DAG wiring without running jobs (snakemake dry run): listing the t5 family adds the tiny T5's
pretraining and fine-tunes each family on its own backbone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def dry_run(tmp_path: Path, *configfiles: Path) -> list[str]:
    """The shell commands `snakemake -n -p all` would run."""
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", *map(str, configfiles), "-n", "-p", "--cores", "2", "all"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line.strip().removeprefix("Shell command: ") for line in proc.stdout.splitlines() if "vltune " in line]


def test_each_family_fine_tunes_its_own_backbone(tmp_path):
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["vlpet"].update(families=["bart", "t5"], seeds=[1])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shell = dry_run(tmp_path, tmp_path / "config.yaml")
    finetune = {fam: [c for c in shell if f"--out results/vlpet/{fam}/full/steps10/seed1/checkpoint" in c]
                for fam in ("bart", "t5")}
    assert len(finetune["bart"]) == 1 and "--backbone resources/backbones/tiny-bart --family bart" in finetune["bart"][0]
    assert len(finetune["t5"]) == 1 and "--backbone resources/backbones/tiny-t5 --family t5" in finetune["t5"][0]
    assert any("pretrain-t5" in c and "--out resources/backbones/tiny-t5" in c for c in shell)
    assert not (tmp_path / "resources").exists()


def test_short_budget_runs_are_their_own_experiment_and_never_share_paths(tmp_path):
    """vlpet.short adds every listed method at its own step count, under a path holding the steps
    (so it cannot overwrite a main run of the same method) and reported as vlpet-<family>-<N>steps."""
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["vlpet"].update(families=["bart"], seeds=[1], methods=["full"],
                        short={"steps": 4, "methods": ["full", "bitfit"], "threads": 1})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shell = dry_run(tmp_path, tmp_path / "config.yaml")
    finetune = sorted(c for c in shell if "finetune-vlbart" in c)
    outs = sorted(c.split("--out ")[1].split()[0] for c in finetune)
    assert outs == ["results/vlpet/bart/bitfit/steps4/seed1/checkpoint", "results/vlpet/bart/full/steps10/seed1/checkpoint",
                    "results/vlpet/bart/full/steps4/seed1/checkpoint"]
    for c in finetune:
        steps = 4 if "/steps4/" in c else 10
        assert f'"steps": {steps}' in c, c  # the budget in the path is the budget trained
        assert c.startswith(f"vltune --threads {1 if steps == 4 else cfg['resources']['threads']} "), c
    experiments = sorted(c.split("--experiment ")[1].split()[0] for c in shell if "evaluate-vlbart" in c)
    assert experiments == ["vlpet-bart", "vlpet-bart-4steps", "vlpet-bart-4steps"]


def test_default_config_runs_every_method_and_full_grid_is_one_switch_away(tmp_path):
    """Acceptance of the PET issue: `snakemake all` on config/config.yaml fine-tunes every registry
    method at least once; config/synthetic-full.yaml runs methods × 3 seeds × both families."""
    from vltune.pet import method_names

    def finetuned(shell):
        return {tuple(c.split("--out results/vlpet/")[1].split("/")[:4]) for c in shell if "finetune-vlbart" in c}

    default = finetuned(dry_run(tmp_path, ROOT / "config/config.yaml"))
    assert {m for _, m, _, _ in default} == set(method_names())
    full = finetuned(dry_run(tmp_path, ROOT / "config/config.yaml", ROOT / "config/synthetic-full.yaml"))
    assert len(full) == 2 * len(method_names()) * 3
    assert {(f, m) for f, m, _, _ in full} == {(f, m) for f in ("bart", "t5") for m in method_names()}
    assert len({steps for _, _, steps, _ in full}) == 1  # one budget: every row comparable


def test_epalm_runs_both_variants_per_task_on_cached_perception(tmp_path):
    """The default trains epalm-linear and epalm-prompt on VQA and captioning (one checkpoint per
    task, as the reference), reading the cached [CLS] store; the full grid adds GQA and 3 seeds;
    `perception: recomputed` drops the cache and runs the encoder inside training instead."""

    def runs(shell):
        return {tuple(c.split("--out results/epalm/")[1].split("/")[:3]) for c in shell if "finetune-epalm" in c}

    shell = dry_run(tmp_path, ROOT / "config/config.yaml")
    assert runs(shell) == {(m, "seed42", t) for m in ("epalm-linear", "epalm-prompt") for t in ("vqa", "caption")}
    assert sum("extract-perception" in c for c in shell) == 1
    assert all("--perception resources/features/tiny-vit/shapes" in c for c in shell if "-epalm " in c)
    evals = [c for c in shell if "evaluate-epalm" in c]
    assert len(evals) == 2 and all("vqa=results/epalm/" in c and "caption=results/epalm/" in c for c in evals)
    assert any("results/epalm/epalm-prompt/seed42/metrics.json" in c for c in shell if "vltune report" in c)
    full = runs(dry_run(tmp_path, ROOT / "config/config.yaml", ROOT / "config/synthetic-full.yaml"))
    assert len(full) == 2 * 3 * 3
    recomputed = tmp_path / "recomputed.yaml"
    recomputed.write_text(yaml.safe_dump({"epalm": {"perception": "recomputed"}}))
    shell = dry_run(tmp_path, ROOT / "config/config.yaml", recomputed)
    assert not any("extract-perception" in c for c in shell)
    assert not any("--perception" in c for c in shell if "-epalm " in c)
