"""The merging study's subcommands (see cli.py): VLMo pretraining, Gram collection, expert merges,
fine-tuning + evaluation of an init. Each parses its params and calls one library function."""

from __future__ import annotations

import logging
import platform
import time
from pathlib import Path

from .commands import _device, _merge_params, _train_config, parse_params
from .errors import UserError
from .utils.io import config_hash, read_json, write_json

log = logging.getLogger("vltune")


def pretrain_vlmo(args) -> None:
    from .recipes.vlmo.pretrain import pretrain_vlmo as run

    p = parse_params(args.params, "pretrain-vlmo")
    if args.mode not in ("agnostic", "specific"):
        raise UserError(f"--mode must be agnostic or specific, got {args.mode!r}")
    try:
        run(args.data, args.tokenizer, args.out, p["arch"], args.mode, _train_config(p, "pretrain-vlmo"),
            p["batch_size"], p.get("mlm_prob", 0.25), init_dir=args.init, resume_dir=args.resume_dir, stage=args.stage,
            image_init=args.image_init)
    except (KeyError, ValueError) as e:
        raise UserError(f"pretrain-vlmo: bad params ({e})") from None


def collect_grams(args) -> None:
    from .merge.grams import save_grams
    from .recipes.vlmo.tasks import collect_task_grams

    p = parse_params(args.params, "collect-grams")
    t0 = time.perf_counter()
    grams, counts = collect_task_grams(args.model, args.data, args.tokenizer, args.task, args.split,
                                       p.get("batch_size", 128))
    save_grams(grams, counts, args.out, {"task": args.task, "split": args.split, "model": args.model})
    log.info("collected %d Gram matrices on %s/%s in %.1f s", len(grams), args.task, args.split, time.perf_counter() - t0)


def merge_experts(args) -> None:
    from .merge import merge_experts as run
    from .merge.diagnostics import expert_diagnostics
    from .merge.io import SafetensorsSource
    from .recipes.vlmo.pretrain import CONFIG_JSON, WEIGHTS, read_vlmo_config

    cfg, meta = read_vlmo_config(args.specific)
    if cfg.mode != "specific":
        raise UserError(f"{args.specific}: a {cfg.mode} model has no experts to merge")
    if args.base is not None:
        base_cfg, _ = read_vlmo_config(args.base)
        if {**base_cfg.to_dict(), "mode": "specific"} != cfg.to_dict():
            raise UserError(f"{args.base}: the base's architecture differs from {args.specific}'s")
    out = Path(args.out)
    base = Path(args.base) / WEIGHTS if args.base else None
    t0 = time.perf_counter()
    summary = run(args.method, Path(args.specific) / WEIGHTS, out / WEIGHTS, base=base, grams=args.grams,
                  params=_merge_params(args.param))
    merge_s = time.perf_counter() - t0
    write_json(out / CONFIG_JSON, {"arch": {**cfg.to_dict(), "mode": "agnostic"}, "stage": "merged",
                                   "merge": {**summary, "specific": args.specific, "base": args.base, "grams": args.grams,
                                             "wall_s": merge_s}})
    seed = SafetensorsSource(Path(args.seed) / WEIGHTS) if args.seed else None
    diag = expert_diagnostics(SafetensorsSource(Path(args.specific) / WEIGHTS), seed, SafetensorsSource(out / WEIGHTS))
    write_json(out / "diagnostics.json", diag)
    log.info("merged %s with %s %s in %.2f s; diagnostics %s", args.specific, args.method, summary["params"], merge_s,
             diag["summary"])


def finetune_vlmo(args) -> None:
    from .recipes.vlmo.tasks import finetune_vlmo as run

    p = parse_params(args.params, "finetune-vlmo")
    inits = args.inits if len(args.inits) > 1 else args.inits * len(args.tasks)
    if len(inits) != len(args.tasks):
        raise UserError(f"--inits: give one init folder, or one per task ({len(args.tasks)}), got {len(args.inits)}")
    out = Path(args.out)
    cfg = _train_config(p, "finetune-vlmo", args.seed)
    ev = p.get("evaluate", {})
    metrics: dict = {}
    diag: dict[str, list[float]] = {}
    walls = {}
    for task, init in zip(args.tasks, inits):
        r = run(init, args.data, args.tokenizer, task, cfg, p["batch_size"], out_dir=out / "checkpoints" / task,
                eval_split=ev.get("split", "test"), eval_batch_size=ev.get("batch_size", 256),
                resume_dir=f"{args.resume_dir}/{task}" if args.resume_dir else None)
        metrics.update({k: v for k, v in r.items() if k.startswith(("vqa_", "nlvr2_", "retrieval_"))})
        walls[task] = {"train_wall_s": r["train_wall_s"], "eval_wall_s": r["eval_wall_s"],
                       "train_final_loss": r["train_final_loss"]}
        d = Path(init) / "diagnostics.json"
        if d.exists():
            for k, v in read_json(d)["summary"].items():
                diag.setdefault(k, []).append(v)
    arch = read_json(Path(inits[0]) / "vlmo.json").get("arch")
    record = {
        "experiment": args.experiment, "method": args.name, "seed": args.seed, "trainable_pct": 100.0,
        "trainable_params": r["backbone_params"], "total_params": r["backbone_params"], **metrics,
        **{f"merge_{k.removeprefix('merge_')}": sum(v) / len(v) for k, v in diag.items()},
        "tasks": walls, "inits": [str(i) for i in inits],
        "config_hash": config_hash({"params": p, "inits": [str(i) for i in inits], "arch": arch}),
        "device": _device(), "python": platform.python_version(),
    }
    write_json(out / "metrics.json", record)
