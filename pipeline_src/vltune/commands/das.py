"""DAS study (workflow/rules/das.smk; "Parameter and Computation Efficient Transfer Learning for
Vision-Language Pre-trained Models", https://arxiv.org/abs/2309.01479): search → skip.json →
skipped model → fine-tune → accuracy, latency and FLOPs → table."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..utils.io import read_json, write_json
from ..settings import DasEvaluate, DasFinetune, DasSearch
from .common import (RESUME_DIR, check_method_config, command, provenance, train_config,
                     visual_tokens, vl_family_check)

_DATA = ("--data", dict(required=True, help="folder of canonical tables"))
_FEATURES = ("--features", dict(default=None, help="feature-store folder (VL-BART / VL-T5)"))
_TOKENIZER = ("--tokenizer", dict(default=None, help="tokenizer folder (the VLMo)"))
_BACKBONE = ("--backbone", dict(required=True, help="BART / T5 folder (save_pretrained layout), or a VLMo folder"))
_FAMILY = ("--family", dict(default="bart", help="backbone family: bart, t5 (encoder-decoder) or vlmo"))
_SEED = ("--seed", dict(type=int, required=True, help="run seed"))


def _das_inputs(args, family: str) -> None:
    """A known family (checked before any data is read) and its inputs: the VLMo reads pixels and a
    tokenizer; VL-BART / VL-T5 read the feature store."""
    if family != "vlmo":
        vl_family_check(family)
    needed = "tokenizer" if family == "vlmo" else "features"
    if getattr(args, needed) is None:
        raise UserError(f"{args.command}: --{needed} is required for the {family!r} family")


@command("das-search", "DAS: search which k encoder blocks to skip for one task; writes skip.json", [
    _DATA, _FEATURES, _TOKENIZER, _BACKBONE, _FAMILY,
    ("--task", dict(required=True, help="task the skip set is searched for (vqa, gqa, nlvr2, caption)")),
    ("--k", dict(type=int, required=True, help="number of encoder blocks to skip")),
    _SEED,
    ("--out", dict(required=True, help="skip.json to write")),
    ("--params", dict(required=True, help="JSON {train: {...}, search: {...}, batch_size, dropout, method_config}")),
])
def das_search(args) -> None:
    from ..das.run import search_skips
    from ..das.search import SearchConfig

    _das_inputs(args, args.family)
    s = DasSearch.from_params(args.params, "das-search")
    check_method_config("das", s.method_config or {}, "das-search")
    try:
        search_cfg = SearchConfig(**{**s.search, "k": args.k})
    except (TypeError, ValueError) as e:
        raise UserError(f"das-search: bad search params: {e}") from None
    train_cfg = train_config(s.train, "das-search", args.seed)
    if args.family == "vlmo":
        from ..das.vlmo import search_skips_vlmo

        search_skips_vlmo(args.backbone, args.data, args.tokenizer, args.out, args.task, train_cfg, search_cfg,
                          s.batch_size, s.method_config)
        return
    search_skips(args.data, args.features, args.backbone, args.out, args.task, train_cfg,
                 search_cfg, s.batch_size, s.method_config, args.family, s.dropout, visual_tokens(s.visual))


@command("das-finetune", "DAS: fine-tune the skipped model (skip set from skip.json) on one task", [
    _DATA, _FEATURES, _TOKENIZER, _BACKBONE, _FAMILY,
    ("--task", dict(required=True, help="task to fine-tune on")),
    ("--skip", dict(default=None, help="skip.json written by das-search (none: k = 0, nothing skipped)")),
    _SEED,
    ("--out", dict(required=True, help="output checkpoint folder")),
    ("--params", dict(required=True, help="JSON {train: {...}, batch_size, dropout, method_config}")),
    RESUME_DIR,
])
def das_finetune(args) -> None:
    from ..das.run import skip_method_config
    from ..recipes.encdec.finetune import finetune_vl_model

    _das_inputs(args, args.family)
    s = DasFinetune.from_params(args.params, "das-finetune")
    method_config = skip_method_config(s.method_config, args.skip, args.task)
    check_method_config("das", method_config, "das-finetune")
    train_cfg = train_config(s.train, "das-finetune", args.seed)
    if args.family == "vlmo":
        from ..das.vlmo import finetune_das_vlmo

        finetune_das_vlmo(args.backbone, args.data, args.tokenizer, args.out, args.task, train_cfg, s.batch_size,
                          method_config, resume_dir=args.resume_dir)
        return
    finetune_vl_model(args.data, args.features, args.backbone, args.out, "das", train_cfg,
                      s.batch_size, {args.task: 1}, resume_dir=args.resume_dir, dropout=s.dropout,
                      method_config=method_config, family=args.family, visual=visual_tokens(s.visual))


@command("das-evaluate", "DAS: accuracy, inference latency and FLOPs of a skipped model", [
    ("--checkpoint", dict(required=True, help="checkpoint folder written by das-finetune")),
    ("--backbone", dict(default=None, help="backbone folder the checkpoint applies to")),
    _DATA, _FEATURES, _TOKENIZER,
    ("--task", dict(required=True, help="task to evaluate")),
    ("--experiment", dict(default="das", help="experiment name recorded in metrics.json")),
    ("--params", dict(default="{}", help="JSON {split, batch_size, ..., latency: {batch_size, repeats, warmup}}")),
    ("--out", dict(required=True, help="metrics.json to write")),
])
def das_evaluate(args) -> None:
    from ..das.vlmo import CHECKPOINT_JSON as VLMO_CHECKPOINT
    from ..das.vlmo import evaluate_das_vlmo

    p = DasEvaluate.from_params(args.params, "das-evaluate").to_dict()
    cost_params = p.pop("latency")
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
        **provenance({"train": meta, "eval": p, "task": args.task, "skip": skip}),
    }
    write_json(args.out, record)


def _evaluate_das_encdec(args, p: dict, cost_params: dict):
    """VL-BART / VL-T5: task metrics, then FLOPs and latency of the first-token call."""
    from ..evaluate.cost import inference_cost
    from ..recipes.encdec.evaluate import evaluate_vl_model
    from ..features.store import FeatureStore
    from ..recipes.encdec.finetune import load_vl_model, visual_tokens as recorded_visual_tokens
    from ..recipes.encdec.tasks import VisualBank, load_task, make_batch

    model, tok, meta = load_vl_model(args.checkpoint, args.backbone)
    visual = recorded_visual_tokens(meta)
    metrics = evaluate_vl_model(model, tok, args.data, args.features, [args.task], visual=visual, **p)
    ex = load_task(args.data, args.task, p.get("split", "test"), tok)
    n = min(int(cost_params.get("batch_size", 64)), len(ex))
    batch = make_batch(ex, range(n), VisualBank(FeatureStore(args.features), visual), tok.pad_token_id, rng=None)
    cost = inference_cost(model, batch, repeats=int(cost_params.get("repeats", 20)), warmup=int(cost_params.get("warmup", 3)))
    return {**metrics, **cost}, model, meta


def _kept_encoder_blocks(model):
    from ..pet.das.inject import encoder_blocks
    from ..pet.das.layer import SkippedBlock

    return (b for b in encoder_blocks(model) if not isinstance(b, SkippedBlock))


@command("das-report", "DAS table (k, params, FLOPs, latency, scores) and plots", [
    ("--metrics", dict(action="extend", nargs="+", required=True, help="metrics.json files of das-evaluate")),
    ("--skips", dict(action="extend", nargs="*", default=[], help="skip.json files of das-search (logit plot)")),
    ("--out-dir", dict(required=True, help="folder for das.md, das_latency.png, das_search.png")),
])
def das_report(args) -> None:
    from ..report.das import write_das_report

    write_das_report([Path(m) for m in args.metrics], [Path(s) for s in args.skips], Path(args.out_dir))
