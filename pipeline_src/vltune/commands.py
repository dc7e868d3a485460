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
from .utils.io import config_hash, read_json, sha256_file, write_json
from .utils.ledger import note

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
        cfg = TrainConfig(**fields)
    except (TypeError, ValueError) as e:
        raise UserError(f"{command}: bad train params {fields}: {e}") from None
    note("train", cfg)  # the resolved settings, defaults included, go to the run's ledger
    return cfg


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
            raise UserError(f"convert: --source {pair!r} must be NAME=PATH (a download.json or a raw folder)")
        sources[name] = raw
    counts = convert_official(sources, args.out, **params)
    # what the tables were made from: a download record lists every file's sha256
    made_from = {name: sha256_file(raw) if Path(raw).is_file() else None for name, raw in sorted(sources.items())}
    write_json(Path(args.out) / "convert.json", {**counts, "sources": made_from})


def fetch_backbone(args) -> None:
    from .backbones.pretrained import fetch_backbone as fetch

    params = {k: v for k, v in parse_params(args.params, "fetch-backbone").items() if v is not None}
    unknown = set(params) - {"source", "kind", "library", "vl_tokens"}
    if unknown:
        raise UserError(f"fetch-backbone: unknown param {sorted(unknown)[0]!r}")
    if params.pop("vl_tokens", False):
        from .backbones.tokenizer import N_VIS_EXTRA_IDS_PUBLISHED, vis_extra_ids

        params["add_tokens"] = vis_extra_ids(N_VIS_EXTRA_IDS_PUBLISHED)
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
    _write_train_log(args.out, result)


def pretrain_bart(args) -> None:
    from .backbones.bart import pretrain_bart as run

    p = parse_params(args.params, "pretrain-bart")
    result = run(args.data, args.tokenizer, args.out, p["arch"], _train_config(p, "pretrain-bart"),
                 p["batch_size"], resume_dir=args.resume_dir)
    _write_train_log(args.out, result)


def pretrain_t5(args) -> None:
    from .backbones.t5 import pretrain_t5 as run

    p = parse_params(args.params, "pretrain-t5")
    result = run(args.data, args.tokenizer, args.out, p["arch"], _train_config(p, "pretrain-t5"),
                 p["batch_size"], resume_dir=args.resume_dir)
    _write_train_log(args.out, result)


def _write_train_log(out_dir: str, result: dict) -> None:
    from .train.distributed import is_main_process

    if is_main_process():  # under `accelerate launch`, rank 0 writes the outputs
        write_json(Path(out_dir) / "train_log.json", result)


def extract_features(args) -> None:
    from .features.extract import extract_features as run

    from .features.extract import ExtractConfig

    try:
        cfg = ExtractConfig.from_dict(parse_params(args.params, "extract-features"))
    except (TypeError, ValueError) as e:
        raise UserError(f"extract-features: {e}") from None
    run(args.data, args.backbone, args.out, cfg)


def finetune_vlbart(args) -> None:
    from .recipes.encdec.finetune import METHODS, finetune_vl_model as run, vl_model_class

    if args.method not in METHODS:
        raise UserError(f"--method {args.method!r} is not one of {', '.join(METHODS)}")
    vl_model_class(args.family)  # an unknown family fails here, before any data is read
    p = parse_params(args.params, "finetune-vlbart")
    method_config = p.get("method_config") or {}
    _check_method_config(args.method, method_config, "finetune-vlbart")
    run(args.data, args.features, args.backbone, args.out, args.method, _train_config(p, "finetune-vlbart", args.seed),
        p["batch_size"], p["task_weights"], resume_dir=args.resume_dir, dropout=p.get("dropout"),
        method_config=method_config, family=args.family, visual=_visual_tokens(p))


def _visual_tokens(params: dict):
    from .recipes.encdec.tasks import VisualTokens

    return VisualTokens.from_dict(params.get("visual"))


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
    from .recipes.planner import plan_parameters

    overrides = parse_params(args.params, "params")
    _check_method_config(args.method, overrides, "params")
    try:
        result = plan_parameters(args.arch, {**overrides, "method": args.method})
    except ValueError as e:
        raise UserError(str(e)) from None
    print(json.dumps(result))


def evaluate_vlbart(args) -> None:
    from .recipes.encdec.evaluate import evaluate_vl_model as run
    from .recipes.encdec.finetune import load_vl_model, visual_tokens

    p = parse_params(args.params, "evaluate-vlbart")
    world = _data_record(args.data)  # before hours of decoding, not after
    made = training_record(args.checkpoint)
    tasks = p.pop("tasks", ["vqa", "gqa", "nlvr2", "caption"])
    _caption_scorer_ready("caption" in tasks)
    model, tok, meta = load_vl_model(args.checkpoint, args.backbone)
    preds: dict | None = {} if args.predictions else None
    metrics = run(model, tok, args.data, args.features, tasks, save_predictions=preds, visual=visual_tokens(meta), **p)
    record = {
        "experiment": args.experiment, "family": meta["family"], "method": meta["method"], "seed": meta["seed"],
        "trainable_params": meta["trainable_params"], "total_params": meta["total_params"],
        "trainable_pct": meta["trainable_pct"], **metrics, **made,
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


def _merge_params(pairs: list[str] | None) -> dict:
    """``--param k=v …`` as a dict of strings (the method's resolve() types and checks them)."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UserError(f"--param {pair!r} is not of the form name=value")
        out[key] = value
    return out


def merge(args) -> None:
    from .merge import merge_files

    t0 = time.perf_counter()
    summary = merge_files(args.method, args.inputs, args.out, base=args.base, grams=args.grams,
                          params=_merge_params(args.param))
    log.info("merged %d tensors with %s in %.2f s -> %s", summary["tensors"], args.method,
             time.perf_counter() - t0, args.out)


def report(args) -> None:
    from .report.summary import write_report

    write_report([Path(m) for m in args.metrics], Path(args.out_dir), [Path(m) for m in args.ledgers or []])


def verify(args) -> None:
    """One stdout line per artifact (``ok PATH`` or its problem); any failure is a UserError."""
    from .verify import verify_paths

    results = verify_paths(args.paths)
    for path, problem in results:
        print(f"ok {path}" if problem is None else f"FAILED {problem}", flush=True)
    failed = [problem for _, problem in results if problem is not None]
    if failed:
        raise UserError(f"{len(failed)} of {len(results)} artifacts failed verification; first: {failed[0]}")


def rulegraph(args) -> None:
    from .report.rulegraph import write_rule_graph

    write_rule_graph(args.snakefile, parse_params(args.config, "rulegraph"), args.out)


def pretrain_opt(args) -> None:
    from .backbones.opt import pretrain_opt as run

    p = parse_params(args.params, "pretrain-opt")
    result = run(args.data, args.tokenizer, args.out, p["arch"], _train_config(p, "pretrain-opt"),
                 p["batch_size"], resume_dir=args.resume_dir)
    write_json(Path(args.out) / "train_log.json", result)


def pretrain_vit(args) -> None:
    from .backbones.vit import pretrain_vit as run

    p = parse_params(args.params, "pretrain-vit")
    world = read_json(Path(args.data) / "world.json")
    result = run(args.data, args.out, p["arch"], int(world["config"]["grid"]), _train_config(p, "pretrain-vit"),
                 p["batch_size"], patch_loss_weight=p.get("patch_loss_weight", 1.0), resume_dir=args.resume_dir)
    write_json(Path(args.out) / "train_log.json", result)


def extract_perception(args) -> None:
    from .features.perception import extract_perception as run

    p = parse_params(args.params, "extract-perception")
    try:
        run(args.data, args.encoder, args.out, batch_size=p.get("batch_size", 256), shard_size=p.get("shard_size", 4096),
            normalize=p.get("normalize", "clip"), dtype=p.get("dtype", "float32"))
    except ValueError as e:
        raise UserError(f"extract-perception: {e}") from None


def finetune_epalm(args) -> None:
    from .recipes.epalm.finetune import finetune_epalm as run

    p = parse_params(args.params, "finetune-epalm")
    method_config = p.get("method_config") or {}
    _check_method_config(args.method, method_config, "finetune-epalm")
    if args.perception and p.get("augment", False):  # before any model is loaded
        raise UserError("finetune-epalm: augment needs the encoder every step; drop --perception")
    run(args.data, args.lm, args.encoder, args.out, args.task, args.method, _train_config(p, "finetune-epalm", args.seed),
        p["batch_size"], features_dir=args.perception, augment=p.get("augment", False),
        normalize_images=p.get("normalize", "clip"), loss_weight=p.get("loss_weight", 0.1), dropout=p.get("dropout"),
        method_config=method_config, resume_dir=args.resume_dir)


def evaluate_epalm(args) -> None:
    from .recipes.epalm.evaluate import evaluate_epalm as run

    p = parse_params(args.params, "evaluate-epalm")
    checkpoints = {}
    for item in args.checkpoints:
        task, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"evaluate-epalm: --checkpoints takes TASK=DIR items, got {item!r}")
        checkpoints[task] = path
    preds: dict | None = {} if args.predictions else None
    world = _data_record(args.data)  # before hours of decoding, not after
    _caption_scorer_ready("caption" in checkpoints)
    metrics, metas = run(checkpoints, args.data, args.perception, args.lm, args.encoder, save_predictions=preds, **p)
    first = next(iter(metas.values()))
    made = {t: training_record(c) for t, c in checkpoints.items()}
    imported = {t: m["imported_from"] for t, m in made.items() if "imported_from" in m}
    record = {
        "experiment": args.experiment, "method": first["method"], "seed": first["seed"],
        "trainable_params": first["trainable_params"], "total_params": first["total_params"],
        "trainable_pct": first["trainable_pct"], **metrics,
        "perception": first["perception"],
        "train_wall_s": None if imported else sum(m["train_wall_s"] for m in made.values()),
        "train_final_loss": {t: m["train_final_loss"] for t, m in made.items()},
        **({"imported_from": imported} if imported else {}),
        "config_hash": config_hash({"world": world, "train": metas, "eval": p}),
        "device": _device(), "python": platform.python_version(),
    }
    write_json(args.out, record)
    if preds is not None:
        write_json(args.predictions, preds)


def import_checkpoint(args) -> None:
    from . import import_checkpoint as I

    if args.source not in I.SOURCES:
        raise UserError(f"import-checkpoint: --from {args.source!r} is not one of {', '.join(I.SOURCES)}")
    p = parse_params(args.params, "import-checkpoint")
    unknown = set(p) - {"method_config", "visual"}
    if unknown:
        raise UserError(f"import-checkpoint: unknown param {sorted(unknown)[0]!r} (expected method_config, visual)")
    if args.source == "vl-merging":
        I.refuse_vl_merging(args.path)
    needed = {"vlpet": ("method", "backbone", "features"), "epalm": ("method", "lm", "encoder", "task")}[args.source]
    absent = [f"--{n}" for n in needed if getattr(args, n) is None]
    if absent:
        raise UserError(f"import-checkpoint --from {args.source} needs {', '.join(absent)}")
    method_config = p.get("method_config") or {}
    _check_method_config(args.method, method_config, "import-checkpoint")
    if args.source == "vlpet":
        from .features.store import FeatureStore

        I.check_vlpet_method(args.method)  # before any folder is read
        store = FeatureStore(args.features)
        if "grid" not in store.keys:
            raise UserError(f"{args.features}: the feature store has no 'grid' feature (has {sorted(store.keys)})")
        record = I.import_vlpet(args.path, args.out, args.backbone, int(store.keys["grid"][-1]), args.method,
                                method_config, visual=p.get("visual"), features=args.features,
                                backbone_out=args.backbone_out, family=args.family)
    else:
        record = I.import_epalm(args.path, args.out, args.lm, args.encoder, args.task, args.method, method_config)
    note("imported", record)
    log.info("imported %d tensors of %s (sha256 %s) -> %s", record["tensors"], record["source"], record["sha256"], args.out)


def training_record(checkpoint: str | Path) -> dict:
    """What a metrics record says about how the checkpoint was made: its train_log.json (wall time,
    final loss), or for an imported checkpoint its source (import.json) and no training numbers."""
    from .import_checkpoint import IMPORT_JSON

    checkpoint = Path(checkpoint)
    if not (checkpoint / "train_log.json").exists() and (checkpoint / IMPORT_JSON).exists():
        return {"train_wall_s": None, "train_final_loss": None, "imported_from": read_json(checkpoint / IMPORT_JSON)}
    log = read_json(checkpoint / "train_log.json")
    return {"train_wall_s": log["wall_s"], "train_final_loss": log["final_loss"]}


def _caption_scorer_ready(needed: bool) -> None:
    """Caption metrics run Java (pycocoevalcap): checked when the job starts, not after decoding."""
    if needed:
        from .evaluate.caption import require_java

        try:
            require_java()
        except RuntimeError as e:
            raise UserError(str(e)) from None


def _data_record(data_dir: str) -> dict:
    from .data.tables import data_record

    return data_record(data_dir)


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


# --- DAS (arXiv 2309.01479): search → skip.json → skipped model → fine-tune → accuracy, latency, FLOPs ---

def _das_inputs(args, family: str) -> None:
    """A known family (checked before any data is read) and its inputs: the VLMo reads pixels and a
    tokenizer; VL-BART / VL-T5 read the feature store."""
    if family != "vlmo":
        vl_model_class_check(family)
    needed = "tokenizer" if family == "vlmo" else "features"
    if getattr(args, needed) is None:
        raise UserError(f"{args.command}: --{needed} is required for the {family!r} family")


def das_search(args) -> None:
    from .das.run import search_skips
    from .das.search import SearchConfig

    _das_inputs(args, args.family)
    p = parse_params(args.params, "das-search")
    _check_method_config("das", p.get("method_config") or {}, "das-search")
    try:
        search_cfg = SearchConfig(**{**p.get("search", {}), "k": args.k})
    except (TypeError, ValueError) as e:
        raise UserError(f"das-search: bad search params: {e}") from None
    train_cfg = _train_config(p, "das-search", args.seed)
    if args.family == "vlmo":
        from .das.vlmo import search_skips_vlmo

        search_skips_vlmo(args.backbone, args.data, args.tokenizer, args.out, args.task, train_cfg, search_cfg,
                          p["batch_size"], p.get("method_config"))
        return
    search_skips(args.data, args.features, args.backbone, args.out, args.task, train_cfg,
                 search_cfg, p["batch_size"], p.get("method_config"), args.family, p.get("dropout"),
                 _visual_tokens(p))


def das_finetune(args) -> None:
    from .das.run import skip_method_config
    from .recipes.encdec.finetune import finetune_vl_model

    _das_inputs(args, args.family)
    p = parse_params(args.params, "das-finetune")
    method_config = skip_method_config(p.get("method_config"), args.skip, args.task)
    _check_method_config("das", method_config, "das-finetune")
    train_cfg = _train_config(p, "das-finetune", args.seed)
    if args.family == "vlmo":
        from .das.vlmo import finetune_das_vlmo

        finetune_das_vlmo(args.backbone, args.data, args.tokenizer, args.out, args.task, train_cfg, p["batch_size"],
                          method_config, resume_dir=args.resume_dir)
        return
    finetune_vl_model(args.data, args.features, args.backbone, args.out, "das", train_cfg,
                      p["batch_size"], {args.task: 1}, resume_dir=args.resume_dir, dropout=p.get("dropout"),
                      method_config=method_config, family=args.family, visual=_visual_tokens(p))


def das_evaluate(args) -> None:
    from .das.vlmo import CHECKPOINT_JSON as VLMO_CHECKPOINT
    from .das.vlmo import evaluate_das_vlmo

    p = parse_params(args.params, "das-evaluate")
    cost_params = p.pop("latency", {})
    if (Path(args.checkpoint) / VLMO_CHECKPOINT).is_file():
        _das_inputs(args, "vlmo")
        metrics, model, meta = evaluate_das_vlmo(args.checkpoint, args.data, args.tokenizer, p.get("split", "test"),
                                                 p.get("batch_size", 256), cost_params, args.backbone)
    else:
        _das_inputs(args, "bart")
        metrics, model, meta = _evaluate_das_encdec(args, p, cost_params)
    skip = model.pet_config.skip
    train_log = read_json(Path(args.checkpoint) / "train_log.json")
    record = {
        "experiment": args.experiment, "family": meta["family"], "method": f"das-k{len(skip)}", "seed": meta["seed"],
        "task": args.task, "k": len(skip), "skip": skip,
        "n_blocks": len(skip) + sum(1 for _ in _kept_encoder_blocks(model)),
        "trainable_params": meta["trainable_params"], "total_params": meta["total_params"],
        "trainable_pct": meta["trainable_pct"], **metrics,
        "train_wall_s": train_log["wall_s"], "train_final_loss": train_log["final_loss"],
        "config_hash": config_hash({"train": meta, "eval": p, "task": args.task, "skip": skip}),
        "device": _device(), "python": platform.python_version(),
    }
    write_json(args.out, record)


def _evaluate_das_encdec(args, p: dict, cost_params: dict):
    """VL-BART / VL-T5: task metrics, then FLOPs and latency of the first-token call."""
    from .evaluate.cost import inference_cost
    from .recipes.encdec.evaluate import evaluate_vl_model
    from .features.store import FeatureStore
    from .recipes.encdec.finetune import load_vl_model, visual_tokens
    from .recipes.encdec.tasks import VisualBank, load_task, make_batch

    model, tok, meta = load_vl_model(args.checkpoint, args.backbone)
    visual = visual_tokens(meta)
    metrics = evaluate_vl_model(model, tok, args.data, args.features, [args.task], visual=visual, **p)
    ex = load_task(args.data, args.task, p.get("split", "test"), tok)
    n = min(int(cost_params.get("batch_size", 64)), len(ex))
    batch = make_batch(ex, range(n), VisualBank(FeatureStore(args.features), visual), tok.pad_token_id, rng=None)
    cost = inference_cost(model, batch, repeats=int(cost_params.get("repeats", 20)), warmup=int(cost_params.get("warmup", 3)))
    return {**metrics, **cost}, model, meta


def _kept_encoder_blocks(model):
    from .pet.das.inject import encoder_blocks
    from .pet.das.layer import SkippedBlock

    return (b for b in encoder_blocks(model) if not isinstance(b, SkippedBlock))


def das_report(args) -> None:
    from .report.das import write_das_report

    write_das_report([Path(m) for m in args.metrics], [Path(s) for s in args.skips], Path(args.out_dir))


def vl_model_class_check(family: str) -> None:
    from .recipes.encdec.finetune import vl_model_class

    vl_model_class(family)  # an unknown family fails here, before any data is read
