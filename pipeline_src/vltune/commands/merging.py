"""Merging study (workflow/rules/merging.smk): merge safetensors files, pretrain VLMo models,
collect Gram matrices, merge a model's experts, fine-tune + evaluate an init."""

from __future__ import annotations

import time
from pathlib import Path

from ..errors import UserError
from ..merge_methods import MERGE_METHODS
from ..settings import CollectGrams, VlmoFinetune, VlmoPretrain
from ..utils.io import read_json, write_json
from .common import RESUME_DIR, command, log, merge_params, provenance, train_config


@command("merge", "merge N safetensors state dicts with the same names (lazy, one tensor at a time)", [
    ("--method", dict(required=True, help="merge method: " + ", ".join(MERGE_METHODS))),
    ("--inputs", dict(action="extend", nargs="+", required=True, help="safetensors files to merge (same tensor names and shapes)")),
    ("--base", dict(default=None, help="base/central weights for arithmetic, ties, dare (task vectors = input - base)")),
    ("--grams", dict(action="extend", nargs="+", default=None, help="RegMean: one Gram safetensors per input, keyed by Linear module name")),
    ("--param", dict(action="extend", nargs="*", default=[], metavar="K=V", help="method parameters, e.g. ratio=0.3 lambda=0.5 alpha=0.9")),
    ("--out", dict(required=True, help="merged safetensors file to write")),
])
def merge(args) -> None:
    from ..merge import merge_files

    t0 = time.perf_counter()
    summary = merge_files(args.method, args.inputs, args.out, base=args.base, grams=args.grams,
                          params=merge_params(args.param))
    log.info("merged %d tensors with %s in %.2f s -> %s", summary["tensors"], args.method,
             time.perf_counter() - t0, args.out)


@command("pretrain-vlmo", "pretrain a VLMo (seed / modality-specific / modality-agnostic) with MLM + ITC + ITM", [
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--tokenizer", dict(required=True, help="tokenizer folder")),
    ("--mode", dict(required=True, help="agnostic (one shared weight set) or specific (one per modality expert)")),
    ("--init", dict(default=None, help="VLMo folder to start from (a seed: every expert starts as its shared weights)")),
    ("--image-init", dict(default=None, help="timm ViT folder or name whose weights start the image tower and shared blocks")),
    ("--stage", dict(default="", help="name recorded in vlmo.json (seed, specific, agnostic)")),
    ("--out", dict(required=True, help="output VLMo folder (model.safetensors + vlmo.json)")),
    ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size, mlm_prob}")),
    RESUME_DIR,
])
def pretrain_vlmo(args) -> None:
    from ..recipes.vlmo.pretrain import pretrain_vlmo as run

    s = VlmoPretrain.from_params(args.params, "pretrain-vlmo")
    if args.mode not in ("agnostic", "specific"):
        raise UserError(f"--mode must be agnostic or specific, got {args.mode!r}")
    try:
        run(args.data, args.tokenizer, args.out, s.arch, args.mode, train_config(s.train, "pretrain-vlmo"),
            s.batch_size, s.mlm_prob, init_dir=args.init, resume_dir=args.resume_dir, stage=args.stage,
            image_init=args.image_init)
    except (KeyError, ValueError) as e:
        raise UserError(f"pretrain-vlmo: bad params ({e})") from None


@command("collect-grams", "Gram matrices (X^T X, float64) of every expert Linear's inputs over a task split", [
    ("--model", dict(required=True, help="modality-specific VLMo folder")),
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--tokenizer", dict(required=True, help="tokenizer folder")),
    ("--task", dict(required=True, help="vqa, nlvr2 or retrieval: whose inputs (and experts) the Grams cover")),
    ("--split", dict(default="val", help="split of the pass (the paper: validation)")),
    ("--params", dict(default="{}", help='JSON {"batch_size": N}')),
    ("--out", dict(required=True, help="Gram safetensors file keyed by module name")),
])
def collect_grams(args) -> None:
    from ..merge.grams import save_grams
    from ..recipes.vlmo.tasks import collect_task_grams

    s = CollectGrams.from_params(args.params, "collect-grams")
    t0 = time.perf_counter()
    grams, counts = collect_task_grams(args.model, args.data, args.tokenizer, args.task, args.split,
                                       s.batch_size)
    save_grams(grams, counts, args.out, {"task": args.task, "split": args.split, "model": args.model})
    log.info("collected %d Gram matrices on %s/%s in %.1f s", len(grams), args.task, args.split, time.perf_counter() - t0)


@command("merge-experts", "merge the modality experts of a specific VLMo into a modality-agnostic one", [
    ("--method", dict(required=True, help="merge method (see `vltune merge`)")),
    ("--specific", dict(required=True, help="modality-specific VLMo folder")),
    ("--base", dict(default=None, help="central weights for arithmetic/ties/dare: the seed VLMo folder")),
    ("--seed", dict(default=None, help="seed VLMo folder: the reference of the diagnostics' task vectors")),
    ("--grams", dict(default=None, help="RegMean: Gram file of the specific model (collect-grams)")),
    ("--param", dict(action="extend", nargs="*", default=[], metavar="K=V", help="method parameters, e.g. ratio=0.5")),
    ("--out", dict(required=True, help="output VLMo folder (model.safetensors, vlmo.json, diagnostics.json)")),
])
def merge_experts(args) -> None:
    from ..recipes.vlmo.experts import merge_experts as run

    run(args.method, args.specific, args.out, base=args.base, seed=args.seed, grams=args.grams,
        params=merge_params(args.param))


@command("finetune-vlmo", "fine-tune a VLMo init on each task and evaluate it (one metrics.json)", [
    ("--inits", dict(action="extend", nargs="+", required=True, help="VLMo folder(s): one for every task, or one per task in --tasks order")),
    ("--tasks", dict(action="extend", nargs="+", required=True, help="tasks: vqa, nlvr2, retrieval")),
    ("--name", dict(required=True, help="init name recorded as the method in metrics.json")),
    ("--experiment", dict(default="merging", help="experiment name recorded in metrics.json")),
    ("--seed", dict(type=int, required=True, help="run seed")),
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--tokenizer", dict(required=True, help="tokenizer folder")),
    ("--params", dict(required=True, help="JSON {train: {...}, batch_size, evaluate: {split, batch_size}}")),
    ("--out", dict(required=True, help="output folder (metrics.json, checkpoints/<task>/)")),
    RESUME_DIR,
])
def finetune_vlmo(args) -> None:
    from ..recipes.vlmo.experts import finetune_inits

    p = VlmoFinetune.from_params(args.params, "finetune-vlmo").to_dict()
    inits = args.inits if len(args.inits) > 1 else args.inits * len(args.tasks)
    if len(inits) != len(args.tasks):
        raise UserError(f"--inits: give one init folder, or one per task ({len(args.tasks)}), got {len(args.inits)}")
    out = Path(args.out)
    cfg = train_config(p["train"], "finetune-vlmo", args.seed)
    ev = p["evaluate"]
    r = finetune_inits(inits, args.tasks, args.data, args.tokenizer, cfg, p["batch_size"], out,
                       ev.get("split", "test"), ev.get("batch_size", 256), resume_dir=args.resume_dir)
    arch = read_json(Path(inits[0]) / "vlmo.json").get("arch")
    record = {
        "experiment": args.experiment, "method": args.name, "seed": args.seed, "trainable_pct": 100.0,
        "trainable_params": r["backbone_params"], "total_params": r["backbone_params"], **r["metrics"],
        **r["diagnostics"], "tasks": r["tasks"], "inits": [str(i) for i in inits],
        **provenance({"params": p, "inits": [str(i) for i in inits], "arch": arch}),
    }
    write_json(out / "metrics.json", record)
