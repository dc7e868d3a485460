"""config/paper.yaml for real, not as a dry run: the official release formats in a local mirror
(COCO + Karpathy splits, VQA v2 zips, GQA, NLVR2 json lines + image zips, Flickr30k) and local
folders holding the published architectures with random weights (bart-base, t5-base, OPT-125m,
timm ViT-B/16, CLIP RN101; the LMs and the ViT cut to 2 layers, OPT-125m and RN101 whole), run
through every stage of all four studies with a small override (2-3 steps, batch 2, one seed, CPU):
download, convert, fetch, RN101 features pooled to VL-PET's 6×6, every PET method on both
families, the merging study with every merge method and the agnostic baseline, both eP-ALM
variants on VQA and captioning, DAS on bart-base with k = 1, the report; then a second
``snakemake -n`` has nothing to do."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT / "config/paper.yaml"
PET_METHODS = ["full", "bitfit", "layernorm", "lora", "adapter", "prompt",
               "vlpet-small", "vlpet-middlex", "vlpet-middley", "vlpet-large"]
MERGE_INITS = {"agnostic", "seed", "specific", "average", "interpolation-r0.5", "arithmetic-l0.5", "regmean",
               "ties", "dare"}


def _more_examples(fx) -> None:
    """The converter tests' official-format writers (tests/data/test_official.py) with enough
    examples that every split of every task has a few: a batch of 2, a contrastive loss, a
    validation reward and each metric have something to work on."""
    karpathy = ["train"] * 6 + ["restval"] * 2 + ["val"] * 3 + ["test"] * 3
    fx.COCO = [("train2014" if s == "train" else "val2014", 100 + i, s) for i, s in enumerate(karpathy)]
    answers = [{"yes": 7, "no": 3}, {"no": 8, "yes": 2}, {"2": 6, "two": 2, "3": 2}, {"red": 9, "blue": 1}]
    questions = ["Is it red?", "Is there a dog?", "How many cats are there?", "What colour is the car?"]
    fx.VQA = {"train2014": {}, "val2014": {}}
    for i, (subset, n, _) in enumerate(fx.COCO):
        for j in range(2):
            k = (i + j) % len(questions)
            fx.VQA[subset][1000 * n + j] = (n, questions[k], answers[k])
    gqa = {"train": 6, "val": 3, "test": 3}
    fx.GQA = {split: {f"{split[:2]}{i:06d}": (f"{split}{i}", q, a, "verifyAttr")
                      for i, (q, a) in enumerate([("Is the sky dark?", "yes"), ("What is on the table?", "cup"),
                                                  ("Who wears a hat?", "man")] * 2) if i < count}
              for split, count in gqa.items()}
    fx.NLVR2 = ([("train", f"train-{i}-0-0", "There are two dogs.", "True" if i % 2 else "False", str(i % 3))
                 for i in range(6)]
                + [("val", f"dev-{i}-0-0", "A bird is flying.", "True" if i % 2 else "False", None) for i in range(3)]
                + [("test", f"test1-{i}-0-0", "Both images show cups.", "True" if i % 2 else "False", None)
                   for i in range(3)])
    fx.FLICKR30K = [(f"{1000 + i}.jpg", s) for i, s in enumerate(["train"] * 4 + ["val", "test"])]


def _override(mirror: Path, manifests: Path, backbones) -> dict:
    b = {key: {"name": name, "published": {"source": str(backbones[name])}}
         for key, name in [("clip", "clip-rn101"), ("bart", "bart-base"), ("t5", "t5-base"), ("opt", "opt-125m"),
                           ("vit", "vit-b16")]}
    short = {"log_every": 1, "checkpoint_every": 1000}
    return {
        "download": {"sources": ["coco2014", "vqav2", "gqa", "nlvr2", "flickr30k"], "mirror": str(mirror),
                     "manifests": str(manifests), "retries": 0, "timeout": 10.0, "vqa_vocab_size": 6},
        "backbones": b,
        "features": {"batch_size": 8, "shard_size": 16, "num_workers": 0, "decode": "cpu", "precision": "fp32",
                     "compile": False},
        "vlpet": {"seeds": [42], "batch_size": 2, "train": {"steps": 2, **short}},
        "evaluate": {"batch_size": 8, "caption_beams": 2, "caption_max_len": 6, "answer_max_len": 4},
        # VLMo-base's width and heads; 2 blocks, as the ViT-B/16 it starts from here
        "merging": {"arch": {"layers": 2, "vl_layers": 1, "max_text_len": 16},
                    "pretrain": {"batch_size": 2, "seed": {"steps": 2, **short}, "specific": {"steps": 2, **short}},
                    "grams": {"batch_size": 2}, "interpolation": {"ratios": [0.5]}, "arithmetic": {"lambdas": [0.5]},
                    "seeds": [0], "finetune": {"batch_size": 2, "train": {"steps": 2, **short}}, "threads": 1},
        # OPT-125m's 12 layers: the window moves with the depth (paper.yaml's 19..31 is OPT-2.7B's);
        # one perceptual token per block of the 2-block ViT (paper.yaml: the last 6 of 12)
        "epalm": {"seeds": [42], "tasks": ["vqa", "caption"], "batch_size": 2,
                  "method_configs": {"epalm-linear": {"n_tokens": 2, "start_layer": 6, "end_layer": 12},
                                     "epalm-prompt": {"n_tokens": 2, "start_layer": 6, "end_layer": 12,
                                                      "prompt_len": 10, "prompt_mlp": True}},
                  "train": {"steps": 2, **short}, "evaluate": {"num_beams": 2, "answer_max_len": 4,
                                                               "caption_max_len": 6}, "threads": 1},
        "das": {"tasks": ["vqa"], "k": [0, 1], "seeds": [42], "batch_size": 2,
                "search": {"steps": 3, "sets_per_reward": 2, "turn": 1, "warmup_ratio": 0.34, "val_batch_size": 2},
                "train": {"steps": 2, **short}, "latency": {"batch_size": 2, "repeats": 2, "warmup": 1}},
        "resources": {"threads": 1, "mem_mb": 4000, "runtime": 30},
    }


def snakemake(workdir: Path, *args: str, timeout: int = 2400) -> subprocess.CompletedProcess:
    """``snakemake --configfile config/paper.yaml override.yaml --cores 2 <args>`` in ``workdir``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(PAPER), str(workdir / "override.yaml"), "--cores", "2", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def _failure(proc, workdir: Path) -> str:
    logs = "\n".join(f"== {p}\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("logs/**/*.log"))
                     if "Error" in p.read_text() or "error:" in p.read_text())
    return f"{proc.stderr[-4000:]}\n{logs}"


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory, load_module, published_backbones, published_backbones_full):
    rules = load_module(ROOT / "tests/workflow/test_official_data_rules.py", "official_data_rules")
    fx = load_module(ROOT / "tests/data/test_official.py", "official_fixtures_larger")
    _more_examples(fx)
    tmp = tmp_path_factory.mktemp("paper-path")
    mirror = rules._mirror(tmp, fx)
    manifests = rules._manifests(tmp, mirror)
    backbones = {**{n: published_backbones[n] for n in ("bart-base", "t5-base", "vit-b16", "clip-rn101")},
                 "opt-125m": published_backbones_full["opt-125m"]}
    work = tmp / "work"
    work.mkdir()
    (work / "override.yaml").write_text(yaml.safe_dump(_override(mirror, manifests, backbones)))
    proc = snakemake(work, "--keep-going", "all")
    assert proc.returncode == 0, _failure(proc, work)
    return work, mirror


@pytest.mark.integration
def test_every_stage_of_the_four_studies_runs_on_official_formats_and_published_architectures(paper_run):
    work, _ = paper_run
    df = pd.read_csv(work / "results/report/summary.csv")
    assert {"baselines", "vlpet-bart", "vlpet-t5", "merging", "epalm"} <= set(df.experiment)
    for family in ("bart", "t5"):
        runs = df[df.experiment == f"vlpet-{family}"]
        assert sorted(runs.method) == sorted(PET_METHODS)
        assert runs[["vqa_accuracy", "gqa_accuracy", "nlvr2_accuracy", "caption_cider"]].notna().all().all()
        assert (runs.set_index("method").trainable_pct.drop("full") < 100).all()
    assert set(df[df.experiment == "merging"].method) == MERGE_INITS
    epalm = df[df.experiment == "epalm"]
    assert sorted(epalm.method) == ["epalm-linear", "epalm-prompt"]
    assert epalm[["vqa_accuracy", "caption_cider"]].notna().all().all()
    das = pd.read_csv(work / "results/report/das/das.csv")
    bart = das[das.experiment == "das-bart-vqa"]
    assert bart.k.tolist() == [0, 1] and bart.flops_reduction_pct.iloc[1] > 0

    # the converted data: namespaced ids, and evaluations hash the conversion's record
    metrics = json.loads((work / "results/vlpet/bart/vlpet-large/steps2/seed42/metrics.json").read_text())
    assert len(metrics["config_hash"]) > 8 and metrics["vqa_examples"] == 6
    # VL-PET's visual input: RN101's 7×7 grid and its pooled vector stored, 6×6 read
    manifest = json.loads((work / "resources/features/clip-rn101/vl-paper/manifest.json").read_text())
    assert manifest["keys"] == {"grid": [49, 2048], "cls": [2048]}
    meta = json.loads((work / "results/vlpet/t5/full/steps2/seed42/checkpoint/vl_model.json").read_text())
    assert meta["visual"] == {"grid_pool": 6, "cls": False} and meta["feat_dim"] == 2048
    # the published LMs came with their own kind and VL-T5's visual tokens
    record = json.loads((work / "resources/backbones/opt-125m/backbone.json").read_text())
    assert record["kind"] == "causal" and record["added_tokens"] == 0
    assert json.loads((work / "resources/backbones/bart-base/backbone.json").read_text())["added_tokens"] == 100

    # nothing was copied out of the mirror
    assert not [p for p in (work / "resources/raw").rglob("*") if p.is_file() and p.name != "download.json"]


@pytest.mark.integration
def test_a_second_run_of_the_paper_config_has_nothing_to_do(paper_run):
    work, _ = paper_run
    proc = snakemake(work, "-n", "all", timeout=300)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def _vltune(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "vltune.cli", "--threads", "2", *args], capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.mark.integration
@pytest.mark.parametrize("family,name", [("bart", "bart-base"), ("t5", "t5-base")])
def test_vl_pet_on_the_whole_published_architecture(paper_run, published_backbones_full, tmp_path, family, name):
    """bart-base and t5-base at their published depth (the DAG above runs 2 of their layers):
    fetched with VL-T5's visual tokens, fine-tuned on the converted data and RN101 features through
    the commands the rules call, evaluated on every task. The model is the published one plus
    exactly what VL-T5 adds: 100 token rows and the visual embedding of 2048-wide features."""
    from published_backbones import PARAMETERS

    work, _ = paper_run
    data, features = work / "resources/data/vl-paper", work / "resources/features/clip-rn101/vl-paper"
    backbone, ckpt = tmp_path / name, tmp_path / "checkpoint"
    _vltune("fetch-backbone", "--name", name, "--out", str(backbone),
            "--params", json.dumps({"source": str(published_backbones_full[name]), "vl_tokens": True}))
    hp = {"train": {"steps": 1}, "batch_size": 2, "dropout": 0.1, "method_config": {},
          "task_weights": {"vqa": 1, "gqa": 1, "nlvr2": 1, "caption": 1}, "visual": {"grid_pool": 6, "cls": False}}
    _vltune("finetune-vlbart", "--data", str(data), "--features", str(features), "--backbone", str(backbone),
            "--family", family, "--out", str(ckpt), "--method", "full", "--seed", "42", "--params", json.dumps(hp))
    _vltune("evaluate-vlbart", "--checkpoint", str(ckpt), "--backbone", str(backbone), "--data", str(data),
            "--features", str(features), "--out", str(tmp_path / "metrics.json"),
            "--params", json.dumps({"batch_size": 8, "caption_beams": 2, "caption_max_len": 6, "answer_max_len": 4}))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    d, feat = 768, 2048
    # <vis_extra_id_0..99> rows; W_f + LN, W_box + LN (box 5 wide), the image-order table (2 images).
    # T5's norms are scale-only; BART's untied LM head has no rows of its own (tied to the embeddings).
    norm = d if family == "t5" else 2 * d
    added = 100 * d + (feat * d + d + norm) + (5 * d + d + norm) + 2 * d
    if family == "t5":
        added -= 28 * d  # t5-base's 32128 embedding rows hold 28 padding rows: resized to 32100 + 100
    assert metrics["total_params"] == metrics["trainable_params"] == PARAMETERS[name] + added
    assert all(0 <= metrics[f"{t}_accuracy"] <= 100 for t in ("vqa", "gqa", "nlvr2"))
    assert metrics["caption_cider"] >= 0 and metrics["vqa_examples"] == 6
