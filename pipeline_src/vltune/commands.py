"""The subcommands behind ``vltune`` (see cli.py): each parses its params and calls one library
function. Heavy imports happen inside each command so ``vltune --help`` stays fast."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from pathlib import Path

from .errors import UserError
from .utils.io import config_hash, read_json, write_json

log = logging.getLogger("vltune")


def setup_runtime(threads: int | None) -> None:
    import torch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Denormal optimiser state made CPU steps 10–20× slower in the prototype (DESIGN.md).
    torch.set_flush_denormal(True)
    if threads:
        torch.set_num_threads(threads)


def parse_params(text: str, command: str) -> dict:
    try:
        params = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--params for {command} is not valid JSON: {e}") from None
    if not isinstance(params, dict):
        raise UserError(f"--params for {command} must be a JSON object, got {type(params).__name__}")
    return params


def _train_config(params: dict, command: str, seed: int | None = None):
    from .train.loop import TrainConfig

    fields = dict(params.get("train", {}))
    if seed is not None:
        fields["seed"] = seed
    try:
        return TrainConfig(**fields)
    except (TypeError, ValueError) as e:
        raise UserError(f"{command}: bad train params {fields}: {e}") from None


def download(args) -> None:
    from .data.download import download_dataset, load_manifest

    params = parse_params(args.params, "download")
    unknown = set(params) - {"mirror", "retries", "backoff", "timeout"}
    if unknown:
        raise UserError(f"download: unknown param {sorted(unknown)[0]!r}")
    download_dataset(load_manifest(args.dataset), args.out, **params)


def convert(args) -> None:
    from .data.official import convert as convert_official

    params = parse_params(args.params, "convert")
    sources = {}
    for pair in args.source:
        name, sep, raw = pair.partition("=")
        if not sep or not raw:
            raise UserError(f"convert: --source {pair!r} must be NAME=RAW_DIR")
        sources[name] = raw
    write_json(Path(args.out) / "convert.json", convert_official(sources, args.out, **params))


def fetch_backbone(args) -> None:
    from .backbones.pretrained import fetch_backbone as fetch

    params = {k: v for k, v in parse_params(args.params, "fetch-backbone").items() if v is not None}
    unknown = set(params) - {"source", "kind", "library"}
    if unknown:
        raise UserError(f"fetch-backbone: unknown param {sorted(unknown)[0]!r}")
    fetch(args.name, args.out, **params)


def make_world(args) -> None:
    from .data.synthetic import WorldConfig, write_world

    try:
        cfg = WorldConfig.from_dict(parse_params(args.params, "make-world"))
    except ValueError as e:
        raise UserError(str(e)) from None
    write_world(cfg, args.out)


def train_tokenizer(args) -> None:
    from .backbones.tokenizer import train_tokenizer as train, world_texts

    p = parse_params(args.params, "train-tokenizer")
    train(world_texts(args.data, "train"), int(p.get("vocab_size", 1000)), args.out)


def pretrain_clip(args) -> None:
    from .backbones.clip import pretrain_clip as run

    p = parse_params(args.params, "pretrain-clip")
    result = run(args.data, args.tokenizer, args.out, p["arch"], _train_config(p, "pretrain-clip"),
                 p["batch_size"], resume_dir=args.resume_dir)
    write_json(Path(args.out) / "train_log.json", result)


def pretrain_bart(args) -> None:
    from .backbones.bart import pretrain_bart as run

    p = parse_params(args.params, "pretrain-bart")
    result = run(args.data, args.tokenizer, args.out, p["arch"], _train_config(p, "pretrain-bart"),
                 p["batch_size"], resume_dir=args.resume_dir)
    write_json(Path(args.out) / "train_log.json", result)


def pretrain_t5(args) -> None:
    from .backbones.t5 import pretrain_t5 as run

    p = parse_params(args.params, "pretrain-t5")
    result = run(args.data, args.tokenizer, args.out, p["arch"], _train_config(p, "pretrain-t5"),
                 p["batch_size"], resume_dir=args.resume_dir)
    write_json(Path(args.out) / "train_log.json", result)


def extract_features(args) -> None:
    from .features.extract import extract_features as run

    from .features.extract import ExtractConfig

    try:
        cfg = ExtractConfig.from_dict(parse_params(args.params, "extract-features"))
    except (TypeError, ValueError) as e:
        raise UserError(f"extract-features: {e}") from None
    run(args.data, args.backbone, args.out, cfg)


def finetune_vlbart(args) -> None:
    from .train.multitask import METHODS, finetune_vl_model as run, vl_model_class

    if args.method not in METHODS:
        raise UserError(f"--method {args.method!r} is not one of {', '.join(METHODS)}")
    vl_model_class(args.family)  # an unknown family fails here, before any data is read
    p = parse_params(args.params, "finetune-vlbart")
    method_config = p.get("method_config") or {}
    _check_method_config(args.method, method_config, "finetune-vlbart")
    run(args.data, args.features, args.backbone, args.out, args.method, _train_config(p, "finetune-vlbart", args.seed),
        p["batch_size"], p["task_weights"], resume_dir=args.resume_dir, dropout=p.get("dropout"),
        method_config=method_config, family=args.family)


def _check_method_config(method: str, overrides: dict, command: str) -> None:
    """Validate PET hyper-parameters before any work (unknown key, bad value → one clear line)."""
    from .pet import resolve_config

    if not isinstance(overrides, dict):
        raise UserError(f"{command}: method_config must be a JSON object, got {overrides!r}")
    try:
        resolve_config({**overrides, "method": method})
    except ValueError as e:
        raise UserError(f"{command}: {e}") from None


def params(args) -> None:
    from .pet.planner import plan_parameters

    overrides = parse_params(args.params, "params")
    _check_method_config(args.method, overrides, "params")
    try:
        result = plan_parameters(args.arch, {**overrides, "method": args.method})
    except ValueError as e:
        raise UserError(str(e)) from None
    print(json.dumps(result))


def evaluate_vlbart(args) -> None:
    from .evaluate.encdec import evaluate_vl_model as run
    from .train.multitask import load_vl_model

    p = parse_params(args.params, "evaluate-vlbart")
    model, tok, meta = load_vl_model(args.checkpoint, args.backbone)
    preds: dict | None = {} if args.predictions else None
    tasks = p.pop("tasks", ["vqa", "gqa", "nlvr2", "caption"])
    metrics = run(model, tok, args.data, args.features, tasks, save_predictions=preds, **p)
    train_log = read_json(Path(args.checkpoint) / "train_log.json")
    world = read_json(Path(args.data) / "world.json")
    record = {
        "experiment": args.experiment, "family": meta["family"], "method": meta["method"], "seed": meta["seed"],
        "trainable_params": meta["trainable_params"], "total_params": meta["total_params"],
        "trainable_pct": meta["trainable_pct"], **metrics,
        "train_wall_s": train_log["wall_s"], "train_final_loss": train_log["final_loss"],
        "config_hash": config_hash({"world": world, "train": meta, "eval": p, "tasks": tasks}),
        "device": _device(), "python": platform.python_version(),
    }
    write_json(args.out, record)
    if preds is not None:
        write_json(args.predictions, preds)


def baselines(args) -> None:
    from .evaluate.baselines import compute_baselines

    t0 = time.perf_counter()
    rows = compute_baselines(args.data)
    write_json(args.out, {"experiment": "baselines", "rows": rows, "wall_s": time.perf_counter() - t0})


def report(args) -> None:
    from .report.summary import write_report

    write_report([Path(m) for m in args.metrics], Path(args.out_dir))


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
