"""The whole DAG, for real: snakemake on the tiny test config, end to end, then the checks a
researcher relies on (summary.csv shape, nothing left to do, reproducible re-run, HTML report)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / ".test/config/config.yaml"
VOLATILE = {"train_wall_s", "eval_wall_s"}


def snakemake(workdir: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    # A hang guard, not a timing check: the tiny DAG took ~6 min on one 2-core machine and about
    # twice that on a slower one, so 600 s was too close.
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(TINY), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in sorted(workdir.glob("logs/**/*.log")))
        pytest.fail(f"snakemake {' '.join(args)} failed:\n{proc.stderr[-4000:]}\n{logs}")
    return proc


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pipeline")
    snakemake(workdir, "all")
    return workdir


@pytest.mark.integration
def test_summary_has_one_row_per_run_and_baseline(pipeline_run):
    df = pd.read_csv(pipeline_run / "results/report/summary.csv")
    assert list(df.columns[:6]) == ["experiment", "method", "seed", "trainable_params", "total_params", "trainable_pct"]
    for col in ("vqa_accuracy", "gqa_accuracy", "nlvr2_accuracy", "caption_cider", "caption_bleu4",
                "caption_meteor", "caption_rouge_l"):
        assert col in df.columns
    assert set(df.experiment) == {"baselines", "vlpet-bart", "vlpet-t5", "merging", "epalm"}  # one experiment per family
    for family in ("bart", "t5"):
        runs = df[df.experiment == f"vlpet-{family}"]
        assert sorted(runs.seed.tolist()) == [1, 1] and set(runs.method) == {"full", "vlpet-large"}
        full, pet = runs[runs.method == "full"], runs[runs.method == "vlpet-large"]
        assert (full.trainable_pct == 100.0).all() and (full.trainable_params == full.total_params).all()
        # a PET run trains a small share of a bigger model (its layers are added to the same backbone)
        assert (pet.trainable_pct < 50).all() and (pet.total_params > full.total_params.iloc[0]).all()
        assert runs[["vqa_accuracy", "gqa_accuracy", "nlvr2_accuracy"]].apply(lambda s: s.between(0, 100)).all().all()
    assert set(df[df.experiment == "baselines"].method) == {"majority_type", "majority_overall", "constant_caption"}
    epalm = df[df.experiment == "epalm"]
    assert sorted(epalm.method) == ["epalm-linear", "epalm-prompt"] and (epalm.trainable_pct < 10).all()
    assert epalm.vqa_accuracy.between(0, 100).all() and epalm.caption_cider.notna().all()
    assert epalm.nlvr2_accuracy.isna().all()  # eP-ALM trains VQA and captioning only here
    md = (pipeline_run / "results/report/summary.md").read_text()
    assert md.count("| full |") == 2 and md.count("| vlpet-large |") == 2  # a table per family
    assert "### vlpet-bart" in md and "### vlpet-t5" in md
    # merging study: every init once, with the paper's four scores; merges carry their diagnostics
    merging = df[df.experiment == "merging"].set_index("method")
    assert set(merging.index) == {"agnostic", "average", "interpolation-r0.25", "arithmetic-l0.75", "regmean", "ties", "dare"}
    for col in ("vqa_accuracy", "nlvr2_accuracy", "retrieval_tr_r1", "retrieval_ir_r1"):
        assert merging[col].between(0, 100).all(), col
    assert merging.drop(index="agnostic")["merge_expert_cos"].notna().all()
    assert pd.isna(merging.loc["agnostic", "merge_expert_cos"])
    assert "### merging" in md and "| TR@1 | IR@1 |" in md
    assert (pipeline_run / "results/report/merging.png").stat().st_size > 5000
    assert (pipeline_run / "results/merging/merged/regmean-vqa/diagnostics.json").exists()
    # declared outputs only: resume checkpoints are gone once a run finished
    assert not any((pipeline_run / "resume").glob("**/step-*"))


@pytest.mark.integration
def test_nothing_left_to_do_and_rerun_reproduces_metrics(pipeline_run):
    dry = snakemake(pipeline_run, "-n", "all")
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # full (every weight saved) and a PET method (only its tensors, re-applied to the backbone)
    targets = ["results/vlpet/bart/full/steps10/seed1/metrics.json",
               "results/vlpet/bart/vlpet-large/steps10/seed1/metrics.json",
               "results/vlpet/t5/vlpet-large/steps10/seed1/metrics.json"]
    before = [json.loads((pipeline_run / t).read_text()) for t in targets]
    snakemake(pipeline_run, "--forcerun", "finetune_vlbart", *targets)
    after = [json.loads((pipeline_run / t).read_text()) for t in targets]
    for b, a in zip(before, after):
        assert {k: v for k, v in b.items() if k not in VOLATILE} == {k: v for k, v in a.items() if k not in VOLATILE}


def report_data(html: str, name: str) -> dict:
    """The JSON a Snakemake HTML report embeds as ``<script id="NAME">var NAME = {...};</script>``."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (\{{.*?\}});\s*</script>', html, re.S)
    assert match, f"no {name} in the report"
    return json.loads(match.group(1))


@pytest.mark.integration
def test_html_report_holds_every_stage_by_category_with_labels_ledger_and_rule_graph(pipeline_run):
    snakemake(pipeline_run, "--report", "report.html", timeout=300)
    html = (pipeline_run / "report.html").read_text(errors="replace")
    categories, results = report_data(html, "categories"), report_data(html, "results")
    assert {"Data", "Backbones", "PET", "Merging", "eP-ALM", "DAS", "Evaluation", "Provenance"} <= set(categories)
    assert categories["Data"]["Other"] == ["resources/data/shapes/world.json"]
    assert sorted(categories["Backbones"]["Other"]) == [f"resources/backbones/tiny-{b}/train_log.json"
                                                        for b in ("bart", "clip", "opt", "t5", "vit")]
    assert {"summary.csv", "summary.md", "scores.png", "pareto.png"} <= {
        Path(f).name for f in categories["Evaluation"]["Other"]}
    assert sorted(categories["Provenance"]["Other"]) == ["results/report/ledger.csv", "results/report/rulegraph.svg"]
    for family in ("bart", "t5"):  # one subcategory per family, every run labelled by method and seed
        runs = categories["Evaluation"][family]
        assert len(runs) == 2 and len(categories["PET"][family]) == 2
        labels = {(results[r]["labels"]["method"], results[r]["labels"]["seed"]) for r in runs}
        assert labels == {("full", "1"), ("vlpet-large", "1")}
    assert categories["Merging"]["Other"] == ["results/report/merging.png"]
    inits = {results[r]["labels"]["init"] for r in categories["Merging"]["fine-tuned inits"]}
    assert inits == {"agnostic", "average", "interpolation-r0.25", "arithmetic-l0.75", "regmean", "ties", "dare"}
    epalm = {(results[r]["labels"]["method"], results[r]["labels"]["seed"]) for r in categories["eP-ALM"]["metrics"]}
    assert epalm == {("epalm-linear", "1"), ("epalm-prompt", "1")}
    assert sorted(results[r]["labels"]["k"] for r in categories["DAS"]["nlvr2"]) == ["0", "1"]
    assert {Path(f).name for f in categories["DAS"]["Other"]} == {"das.csv", "das.md", "das_latency.png", "das_search.png"}
    assert all(results[f]["caption"].strip() for c in categories.values() for fs in c.values() for f in fs)
    svg = results["results/report/rulegraph.svg"]
    assert svg["data_uri"].startswith("data:image/svg+xml")
    ledger = pd.read_csv(pipeline_run / "results/report/ledger.csv")
    # every job of the DAG but the local report / rule graph, each with its commit, device, time, memory
    # (VL-PET: 2 families x 2 methods, each fine-tuned and evaluated; merging: 3 pretraining stages,
    # 3 RegMean Gram sets, 8 merges, 7 fine-tuned inits; eP-ALM: OPT, ViT, perception store, 2 methods
    # x 2 tasks fine-tuned, 2 evaluations; DAS on VL-BART and on the VLMo: 1 search each, k = 0 and 1
    # fine-tuned and evaluated)
    assert len(ledger) == 1 + 1 + 3 + 1 + 1 + 2 * 4 + 3 + 3 + 8 + 7 + 3 + 4 + 2 + 2 * (1 + 2 * 2)
    assert ledger[["git_commit", "device", "wall_s", "peak_rss_mb", "pkg:torch"]].notna().all().all()
    assert ledger.job.str.startswith("finetune_vlbart/").sum() == 4
    assert ledger.job.str.startswith("finetune_vlmo/").sum() == 7


@pytest.mark.integration
def test_das_skip_set_flows_from_search_to_fine_tuning_and_report(pipeline_run):
    """skip.json → das_finetune with no manual step: the searched blocks are the checkpoint's skip
    set, and the skipped run costs fewer FLOPs than k = 0 (DAS issue acceptance)."""
    run = pipeline_run / "results/das/bart/nlvr2"
    skip = json.loads((run / "k1/seed1/skip.json").read_text())
    assert skip["k"] == 1 and skip["skip"] == [0] and skip["task"] == "nlvr2"
    assert [t["step"] for t in skip["trace"]] == [2, 4, 6]  # warm-up 0.25 · 8, then every 2 steps
    pet = json.loads((run / "k1/seed1/checkpoint/adapter/pet_config.json").read_text())
    assert pet["method"] == "das" and pet["skip"] == skip["skip"]
    k0, k1 = (json.loads((run / f"k{k}/seed1/metrics.json").read_text()) for k in (0, 1))
    assert (k0["skip"], k1["skip"]) == ([], [0]) and k1["flops_per_sample"] < k0["flops_per_sample"]
    assert 0 <= k1["nlvr2_accuracy"] <= 100 and k1["latency_ms"] > 0
    table = pd.read_csv(pipeline_run / "results/report/das/das.csv")
    bart = table[table.experiment == "das-bart-nlvr2"]
    assert bart.k.tolist() == [0, 1] and bart.flops_reduction_pct.iloc[0] == 0
    assert bart.flops_reduction_pct.iloc[1] > 0
    assert "| 1 | 0 |" in (pipeline_run / "results/report/das/das.md").read_text()
    # The same three stages on the merging study's VLMo (2 blocks): its skip set reaches its run too.
    run = pipeline_run / "results/das/vlmo/vqa"
    skip = json.loads((run / "k1/seed1/skip.json").read_text())
    assert skip["k"] == 1 and len(skip["skip"]) == 1 and skip["task"] == "vqa"
    k0, k1 = (json.loads((run / f"k{k}/seed1/metrics.json").read_text()) for k in (0, 1))
    assert (k0["skip"], k1["skip"]) == ([], skip["skip"]) and k1["flops_per_sample"] < k0["flops_per_sample"]
    assert (k0["family"], k0["n_blocks"]) == ("vlmo", 2) and 0 <= k1["vqa_accuracy"] <= 100
    assert table[table.experiment == "das-vlmo-vqa"].k.tolist() == [0, 1]
