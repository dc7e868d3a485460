"""config/paper.yaml: the seeds' experiments at real scale plan as one DAG (snakemake dry run) from
official downloads and published backbones, without fetching anything; and the config checks that
keep a half-switched config (a real dataset without sources, a backbone neither fetched nor
pretrained) from starting."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import yaml
from dry_runs import ROOT, shell_commands, snakemake_dry_run

PAPER = ROOT / "config/paper.yaml"


def subcommand(cmd: str) -> str:
    """The vltune subcommand of a shell command (after the global flags)."""
    words = cmd.split()
    i = words.index("vltune") + 1
    while words[i].startswith("--"):
        i += 1 if "=" in words[i] else 2
    return words[i]


def test_paper_config_plans_all_four_studies_from_downloads_and_published_backbones(tmp_path):
    proc = snakemake_dry_run(tmp_path, PAPER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shell = shell_commands(proc.stdout)
    jobs = Counter(subcommand(c) for c in shell)
    paper = yaml.safe_load(PAPER.read_text())

    # data: one verified download per official source, one conversion into the canonical tables
    sources = paper["download"]["sources"]
    assert jobs["download"] == len(sources) == 5
    assert jobs["convert"] == 1 and jobs["make-world"] == 0
    convert = next(c for c in shell if subcommand(c) == "convert")
    assert all(f"{s}=resources/raw/{s}/download.json" in convert for s in sources)  # files found via records
    # backbones: all five are fetched, none pretrained; the VL families get the visual tokens
    fetched = {c.split("--name ")[1].split()[0]: c for c in shell if subcommand(c) == "fetch-backbone"}
    assert set(fetched) == {b["name"] for b in paper["backbones"].values()}
    assert '"vl_tokens": true' in fetched["bart-base"] and '"vl_tokens": false' in fetched["clip-rn101"]
    assert not any(subcommand(c).startswith("pretrain-") and subcommand(c) != "pretrain-vlmo" for c in shell)
    extract = [c for c in shell if subcommand(c) == "extract-features"]
    assert len(extract) == 1 and "--backbone resources/backbones/clip-rn101" in extract[0]
    assert '"grid_layer": -1' in extract[0]  # a CNN's grid is its last map (the tiny ViT CLIP's default is -2)
    # VL-PET: 2 families x 10 methods x 3 seeds, each fine-tuned and evaluated
    v = paper["vlpet"]
    runs = len(v["families"]) * len(v["methods"]) * len(v["seeds"])
    assert jobs["finetune-vlbart"] == jobs["evaluate-vlbart"] == runs == 60
    assert any("--backbone resources/backbones/t5-base --family t5" in c for c in shell)
    # merging: both pretraining stages + the agnostic baseline, Grams per task, every merge, every init x seed
    assert jobs["pretrain-vlmo"] == 3 and jobs["collect-grams"] == 3
    seed = next(c for c in shell if "pretrain-vlmo" in c and "--stage seed" in c)
    assert "--image-init resources/backbones/vit-b16 " in seed  # the published ViT-B/16 stands for BEiT-B/16
    assert jobs["merge-experts"] == 15 and jobs["finetune-vlmo"] == 16 * 3
    # eP-ALM: 2 variants x 3 tasks x 3 seeds on OPT-2.7B + ViT-B/16
    assert jobs["finetune-epalm"] == 18 and jobs["evaluate-epalm"] == 6
    assert all("--lm resources/backbones/opt-2.7b --encoder resources/backbones/vit-b16" in c
               for c in shell if subcommand(c) == "finetune-epalm")
    # DAS: a search per k > 0, fine-tuning and evaluation per k, on bart-base
    d = paper["das"]
    assert jobs["das-search"] == len(d["tasks"]) * 3 * len(d["seeds"])
    assert jobs["das-finetune"] == jobs["das-evaluate"] == len(d["tasks"]) * len(d["k"]) * len(d["seeds"])
    assert jobs["report"] == 1 and jobs["das-report"] == 1
    # the report's ledger lists exactly the records the jobs write
    written = {c.split("--ledger ")[1].split()[0] for c in shell if "--ledger " in c}
    report = next(c for c in shell if subcommand(c) == "report")
    assert written == set(report.split("--ledgers ")[1].split(" --out-dir")[0].split())
    # GPU rules ask for the cluster's A100s; nothing was downloaded or created
    assert "gpu_model=a100" in proc.stdout
    assert not (tmp_path / "resources").exists() and not (tmp_path / "results").exists()


def _config(tmp_path: Path, edit) -> Path:
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    edit(cfg)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_a_real_dataset_without_sources_is_refused_naming_the_key(tmp_path):
    path = _config(tmp_path, lambda c: c.update(dataset="vl-paper"))
    proc = snakemake_dry_run(tmp_path, path)
    out = proc.stdout + proc.stderr  # snakemake prints a workflow error on stdout
    assert proc.returncode != 0
    assert "config key download.sources" in out and "'vl-paper'" in out


def test_a_backbone_neither_published_nor_pretrainable_is_refused(tmp_path):
    def edit(cfg):
        cfg["backbones"]["bart"] = {"name": "my-bart"}

    proc = snakemake_dry_run(tmp_path, _config(tmp_path, edit))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key backbones.bart" in out and "published" in out


def test_a_published_backbone_replaces_its_pretraining_in_the_tiny_config(tmp_path):
    """A local folder as `published.source` (a cluster without internet): fetched, not pretrained."""
    def edit(cfg):
        cfg["backbones"]["bart"] = {"name": "my-bart", "published": {"source": "/models/bart", "kind": "seq2seq"}}

    proc = snakemake_dry_run(tmp_path, _config(tmp_path, edit))
    assert proc.returncode == 0, proc.stderr[-3000:]
    shell = shell_commands(proc.stdout)
    fetch = [c for c in shell if subcommand(c) == "fetch-backbone"]
    assert len(fetch) == 1 and "--name my-bart" in fetch[0] and '"source": "/models/bart"' in fetch[0]
    assert not any(subcommand(c) == "pretrain-bart" for c in shell)
    assert any(subcommand(c) == "finetune-vlbart" and "--backbone resources/backbones/my-bart" in c for c in shell)


def test_more_visual_tokens_per_image_than_the_tokenizer_has_vis_extra_ids_is_refused(tmp_path):
    """The tiny config's tokenizer has 40 <vis_extra_id_k>; a 7×7 grid plus [CLS] needs 50."""
    def edit(cfg):
        cfg.setdefault("features", {})["tokens"] = {"grid_pool": 7, "cls": True}

    proc = snakemake_dry_run(tmp_path, _config(tmp_path, edit))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key features.tokens: an image gives 50 visual tokens" in out and "has 40" in out


def test_the_paper_config_reads_36_pooled_grid_tokens_per_image(tmp_path):
    proc = snakemake_dry_run(tmp_path, PAPER)
    assert proc.returncode == 0, proc.stderr[-3000:]
    finetune = next(c for c in shell_commands(proc.stdout) if subcommand(c) == "finetune-vlbart")
    assert '"visual": {"cls": false, "grid_pool": 6}' in finetune
    extract = next(c for c in shell_commands(proc.stdout) if subcommand(c) == "extract-features")
    assert '"tokens"' not in extract  # how the store is read is not how it is extracted


def test_an_epalm_window_deeper_than_a_local_opt_is_refused_naming_the_key(tmp_path):
    """paper.yaml injects into layers 19..30; a local OPT folder of 2 layers stops the workflow at
    parse time, naming the key, the LM and its depth (its config.json read, no weights)."""
    from transformers import OPTConfig

    opt = tmp_path / "opt-folder"
    OPTConfig(num_hidden_layers=2, hidden_size=16, ffn_dim=32, num_attention_heads=2,
              word_embed_proj_dim=16).save_pretrained(opt)
    cfg = yaml.safe_load(PAPER.read_text())
    cfg["backbones"]["opt"] = {"name": "my-opt", "published": {"source": str(opt)}}
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake_dry_run(tmp_path / "work", path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key epalm.method_configs.epalm-linear.end_layer" in out, out[-3000:]
    assert "'my-opt'" in out and "which has 2 layers" in out


def test_a_backbone_named_dot_dot_is_refused_before_any_rule_can_claim_resources(tmp_path):
    """`..` would make resources/backbones/.. = resources/ a rule's output, which Snakemake deletes
    before the job; names must start with a letter or digit."""
    def edit(cfg):
        cfg["backbones"]["bart"]["name"] = ".."

    proc = snakemake_dry_run(tmp_path, _config(tmp_path, edit))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "'..' does not match" in out, out[-2000:]


def test_a_mistyped_method_in_a_target_is_refused_while_planning(tmp_path):
    proc = snakemake_dry_run(tmp_path, _config(tmp_path, lambda c: None),
                             target="results/vlpet/bart/vlpet-larg/steps10/seed1/metrics.json")
    assert proc.returncode != 0
    assert "MissingRuleException" in proc.stdout + proc.stderr or "No rule to produce" in proc.stdout + proc.stderr


def test_a_nan_or_infinite_number_in_the_config_is_refused_naming_its_key(tmp_path):
    def edit(cfg):
        cfg["vlpet"]["train"]["lr"] = float("nan")

    path = _config(tmp_path, edit)
    assert ".nan" in path.read_text()  # what a user writes in YAML
    proc = snakemake_dry_run(tmp_path, path)
    assert proc.returncode != 0 and "config key vlpet.train.lr: nan is not a finite number" in proc.stdout + proc.stderr
