"""DAG wiring without running jobs (snakemake dry run): listing the t5 family adds the tiny T5's
pretraining and fine-tunes each family on its own backbone."""

from __future__ import annotations

from pathlib import Path

import yaml
from dry_runs import ROOT, shell_commands, snakemake_dry_run


def dry_run(tmp_path: Path, *configfiles: Path, output: bool = False):
    """The shell commands `snakemake -n -p all` would run (and its whole output if asked)."""
    proc = snakemake_dry_run(tmp_path, *configfiles)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shell = shell_commands(proc.stdout)
    return (shell, proc.stdout) if output else shell


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
                        short={"steps": 4, "methods": ["full", "bitfit"], "eval_examples": 7})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shell, out = dry_run(tmp_path, tmp_path / "config.yaml", output=True)
    finetune = sorted(c for c in shell if "finetune-vlbart" in c)
    # the long main-budget run is scheduled first; the short ones fill the other cores
    jobs = out.split("rule finetune_vlbart:")[1:]
    prio = {j.split("steps=")[1].split(",")[0]: "priority: 1" in j.split("rule ")[0] for j in jobs}
    assert prio == {"10": True, "4": False}
    outs = sorted(c.split("--out ")[1].split()[0] for c in finetune)
    assert outs == ["results/vlpet/bart/bitfit/steps4/seed1/checkpoint", "results/vlpet/bart/full/steps10/seed1/checkpoint",
                    "results/vlpet/bart/full/steps4/seed1/checkpoint"]
    for c in finetune:
        steps = 4 if "/steps4/" in c else 10
        assert f'"steps": {steps}' in c, c  # the budget in the path is the budget trained
    evaluations = [c for c in shell if "evaluate-vlbart" in c]
    experiments = sorted(c.split("--experiment ")[1].split()[0] for c in evaluations)
    assert experiments == ["vlpet-bart", "vlpet-bart-4steps", "vlpet-bart-4steps"]
    for c in evaluations:  # only short runs are evaluated on a subset
        assert ('"max_examples": 7' in c) == ("/steps4/" in c), c


def test_default_config_runs_every_method_and_full_grid_is_one_switch_away(tmp_path):
    """Acceptance of the PET issue: `snakemake all` on config/config.yaml fine-tunes every registry
    method at least once (`das` in the DAS study); config/synthetic-full.yaml runs methods × 3 seeds ×
    both families."""
    from vltune.pet import method_names

    def finetuned(shell):
        return {tuple(c.split("--out results/vlpet/")[1].split("/")[:4]) for c in shell if "finetune-vlbart" in c}

    shell = dry_run(tmp_path, ROOT / "config/config.yaml")
    # `das` (parallel adapters + skipped blocks) is fine-tuned by the DAS study (das-finetune)
    das_study = {"das"} if any("das-finetune" in c for c in shell) else set()
    assert {m for _, m, _, _ in finetuned(shell)} | das_study == set(method_names())
    full = finetuned(dry_run(tmp_path, ROOT / "config/config.yaml", ROOT / "config/synthetic-full.yaml"))
    assert len(full) == 2 * len(method_names()) * 3
    assert {(f, m) for f, m, _, _ in full} == {(f, m) for f in ("bart", "t5") for m in method_names()}
    assert len({steps for _, _, steps, _ in full}) == 1  # one budget: every row comparable


def test_merging_study_runs_every_merge_method_and_its_grid_is_one_switch_away(tmp_path):
    """Acceptance of the merging issue: the default runs the seed → specific → merge path, the
    agnostic baseline and every merge method once; regmean merges per task with that task's Grams;
    config/synthetic-full.yaml sweeps ratios and λ over several seeds."""
    from vltune.merge import method_names

    shell = dry_run(tmp_path, ROOT / "config/config.yaml")
    merges = [c for c in shell if "merge-experts" in c]
    methods = {c.split("--method ")[1].split()[0] for c in merges}
    assert methods == set(method_names())
    regmean = sorted(c for c in merges if "--method regmean" in c)
    assert [c.split("--out ")[1].split()[0] for c in regmean] == [
        f"results/merging/merged/regmean-{t}" for t in ("retrieval", "vqa")]  # the default's tasks
    for c in regmean:
        task = c.split("--out results/merging/merged/regmean-")[1].split()[0]
        assert f"--grams results/merging/grams/{task}.safetensors" in c
    for c in merges:  # the task-vector merges are centred on the seed
        based = any(f"--method {m} " in c for m in ("arithmetic", "ties", "dare"))
        assert ("--base results/merging/pretrain/seed" in c) == based, c
    assert any("pretrain-vlmo" in c and "--mode specific --init results/merging/pretrain/seed" in c for c in shell)
    finetunes = [c for c in shell if "finetune-vlmo" in c]
    names = {c.split("--name ")[1].split()[0] for c in finetunes}
    assert {"agnostic", "average", "regmean", "ties", "dare"} <= names
    assert any(n.startswith("interpolation-r") for n in names) and any(n.startswith("arithmetic-l") for n in names)
    rm = next(c for c in finetunes if "--name regmean" in c)
    assert "--inits results/merging/merged/regmean-vqa results/merging/merged/regmean-retrieval " \
           "--tasks vqa retrieval" in rm
    full = dry_run(tmp_path, ROOT / "config/config.yaml", ROOT / "config/synthetic-full.yaml")
    rm = next(c for c in full if "finetune-vlmo" in c and "--name regmean" in c)
    assert "--tasks vqa nlvr2 retrieval" in rm  # the grid adds NLVR2
    grid = {(c.split("--name ")[1].split()[0], c.split("--seed ")[1].split()[0]) for c in full if "finetune-vlmo" in c}
    assert len({n for n, _ in grid if n.startswith("interpolation-r")}) >= 5
    assert len({n for n, _ in grid if n.startswith("arithmetic-l")}) >= 3
    assert len({s for _, s in grid}) == 3 and {"seed", "specific"} <= {n for n, _ in grid}
    seed = [c for c in full if "pretrain-vlmo" in c and "--stage seed" in c]
    assert len(seed) == 1 and "--image-init resources/backbones/tiny-vit " in seed[0]  # the paper's BEiT start
    assert any("pretrain-vit " in c for c in full)
    assert not any("--image-init" in c for c in shell)  # the default starts from random weights


def test_image_init_needs_the_vlmo_in_the_vits_shape(tmp_path):
    """merging.pretrain.image_init: vit with a VLMo narrower than the ViT stops before any job,
    naming both keys; a from-scratch agnostic baseline starts from the ViT too."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"merging": {"pretrain": {"image_init": "vit"}}}))
    proc = snakemake_dry_run(tmp_path, ROOT / "config/config.yaml", bad)
    assert proc.returncode != 0
    assert "merging.arch.d_model: 64 differs from backbones.vit.arch.hidden 128" in proc.stderr + proc.stdout
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"merging": {"arch": {"d_model": 128, "mlp_ratio": 2},
                                                "pretrain": {"image_init": "vit", "agnostic_from": "scratch"}}}))
    shell = dry_run(tmp_path, ROOT / "config/config.yaml", good)
    starts = [c for c in shell if "pretrain-vlmo" in c and "--mode agnostic" in c]
    assert len(starts) == 2 and all("--image-init resources/backbones/tiny-vit " in c for c in starts)


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


def test_the_report_ledger_lists_every_job_all_runs(tmp_path):
    """ledger.csv gets a record from every job: with VL-T5 only and a DAS study, the BART that DAS
    fine-tunes is pretrained and its ledger record is among the report's inputs."""
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["vlpet"].update(families=["t5"], methods=["full"], seeds=[1])
    cfg["merging"]["inits"] = ["regmean"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shell = dry_run(tmp_path, tmp_path / "config.yaml")
    written = {c.split("--ledger ")[1].split()[0] for c in shell if "--ledger " in c}
    report = next(c for c in shell if "vltune report" in c)
    listed = set(report.split("--ledgers ")[1].split(" --out-dir")[0].split())
    assert written == listed
    assert {"results/ledger/pretrain_bart/tiny-bart.json", "results/ledger/collect_grams/nlvr2.json",
            "results/ledger/merge_experts/regmean-retrieval.json"} <= listed


def test_das_on_the_vlmo_adapts_the_merging_studys_pretrained_vlmo(tmp_path):
    """das.vlmo plans search → fine-tune → evaluate on results/merging/pretrain/<backbone> with the
    tokenizer and no feature store; with the merging study off, its pretraining still runs and every
    job's ledger record reaches the report."""
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["merging"]["inits"] = []
    cfg["das"].update(tasks=[], vlmo={"tasks": ["retrieval"], "backbone": "seed"})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    shell = dry_run(tmp_path, tmp_path / "config.yaml")
    das = [c for c in shell if " das-" in c and "das-report" not in c]
    assert len(das) == 1 + 2 + 2  # a search for k = 1; fine-tuning and evaluation for k = 0 and 1
    for c in das:
        assert "--tokenizer resources/backbones/tokenizer" in c and "--features" not in c
        assert "results/das/vlmo/retrieval/" in c
    assert all("--family vlmo" in c and "--backbone results/merging/pretrain/seed" in c
               for c in das if "das-evaluate" not in c)
    assert not [c for c in shell if "finetune-vlmo" in c or "agnostic_pretrain" in c]
    written = {c.split("--ledger ")[1].split()[0] for c in shell if "--ledger " in c}
    report = next(c for c in shell if "vltune report" in c)
    assert written == set(report.split("--ledgers ")[1].split(" --out-dir")[0].split())
    assert "results/ledger/seed_pretrain/seed.json" in written
