"""eP-ALM stage (workflow/rules/epalm.smk): pretrain the tiny OPT and ViT, cache the ViT's
perception, train the connection (and prompt) per task, evaluate."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..utils.io import read_json, write_json
from ..settings import BackboneTrain, EpalmEvaluate, EpalmTrain, Perception, VitTrain
from .common import (RESUME_DIR, caption_scorer_ready, check_method_config, command, data_record,
                     provenance, train_config, training_record)


@command("pretrain-opt", "pretrain the tiny OPT as a causal LM on the world's text (eP-ALM)", [
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--tokenizer", dict(required=True, help="tokenizer folder (its OPT flavour is saved with the backbone)")),
    ("--out", dict(required=True, help="output backbone folder")),
    ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size}")),
    RESUME_DIR,
])
def pretrain_opt(args) -> None:
    from ..backbones.opt import pretrain_opt as run

    s = BackboneTrain.from_params(args.params, "pretrain-opt", section="backbones.opt")
    result = run(args.data, args.tokenizer, args.out, s.arch, train_config(s.train, "pretrain-opt"),
                 s.batch_size, resume_dir=args.resume_dir)
    write_json(Path(args.out) / "train_log.json", result)


@command("pretrain-vit", "pretrain the tiny ViT as a unimodal scene tagger on the world's images (eP-ALM)", [
    ("--data", dict(required=True, help="folder of canonical tables (images with their scenes)")),
    ("--out", dict(required=True, help="output backbone folder (timm save_for_hf layout)")),
    ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size, patch_loss_weight}")),
    RESUME_DIR,
])
def pretrain_vit(args) -> None:
    from ..backbones.vit import pretrain_vit as run

    s = VitTrain.from_params(args.params, "pretrain-vit")
    world = read_json(Path(args.data) / "world.json")
    result = run(args.data, args.out, s.arch, int(world["config"]["grid"]), train_config(s.train, "pretrain-vit"),
                 s.batch_size, patch_loss_weight=s.patch_loss_weight, resume_dir=args.resume_dir)
    write_json(Path(args.out) / "train_log.json", result)


@command("extract-perception", "cache the ViT's per-block [CLS] vectors of every image (eP-ALM)", [
    ("--data", dict(required=True, help="folder of canonical tables (images.arrow)")),
    ("--encoder", dict(required=True, help="ViT folder (timm save_for_hf layout)")),
    ("--out", dict(required=True, help="feature-store folder")),
    ("--params", dict(default="{}", help='JSON {"batch_size", "shard_size", "normalize", "dtype"}')),
])
def extract_perception(args) -> None:
    from ..features.perception import extract_perception as run

    s = Perception.from_params(args.params, "extract-perception")
    try:
        run(args.data, args.encoder, args.out, batch_size=s.batch_size, shard_size=s.shard_size,
            normalize=s.normalize, dtype=s.dtype)
    except ValueError as e:
        raise UserError(f"extract-perception: {e}") from None


@command("finetune-epalm", "train eP-ALM's connection (and prompt) on one task; LM and encoder frozen", [
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--lm", dict(required=True, help="OPT folder (save_pretrained layout)")),
    ("--encoder", dict(required=True, help="ViT folder (timm save_for_hf layout)")),
    ("--perception", dict(default=None, help="cached perception store (extract-perception); none: run the encoder")),
    ("--task", dict(required=True, help="vqa, gqa or caption")),
    ("--out", dict(required=True, help="output checkpoint folder")),
    ("--method", dict(required=True, help="epalm-linear or epalm-prompt")),
    ("--seed", dict(type=int, required=True, help="run seed")),
    ("--params", dict(required=True, help="JSON {train: {...}, batch_size, loss_weight, augment, method_config, ...}")),
    RESUME_DIR,
])
def finetune_epalm(args) -> None:
    from ..recipes.epalm.finetune import finetune_epalm as run

    s = EpalmTrain.from_params(args.params, "finetune-epalm")
    method_config = s.method_config or {}
    check_method_config(args.method, method_config, "finetune-epalm")
    if args.perception and s.augment:  # before any model is loaded
        raise UserError("finetune-epalm: augment needs the encoder every step; drop --perception")
    run(args.data, args.lm, args.encoder, args.out, args.task, args.method,
        train_config(s.train, "finetune-epalm", args.seed),
        s.batch_size, features_dir=args.perception, augment=s.augment,
        normalize_images=s.normalize, loss_weight=s.loss_weight, dropout=s.dropout,
        method_config=method_config, resume_dir=args.resume_dir)


@command("evaluate-epalm", "evaluate eP-ALM checkpoints (one per task) on the test split", [
    ("--checkpoints", dict(action="extend", nargs="+", required=True, help="TASK=DIR items (checkpoints of finetune-epalm)")),
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--lm", dict(default=None, help="OPT folder (default: the one the checkpoint recorded)")),
    ("--encoder", dict(default=None, help="ViT folder (default: the one the checkpoint recorded)")),
    ("--perception", dict(default=None, help="cached perception store; none: run the encoder")),
    ("--out", dict(required=True, help="metrics.json to write")),
    ("--experiment", dict(default="epalm", help="experiment name recorded in metrics.json")),
    ("--params", dict(default="{}", help="JSON {split, batch_size, num_beams, answer_max_len, caption_max_len}")),
    ("--predictions", dict(default=None, help="optional predictions.json to write")),
])
def evaluate_epalm(args) -> None:
    from ..recipes.epalm.evaluate import evaluate_epalm as run

    p = EpalmEvaluate.from_params(args.params, "evaluate-epalm").to_dict()
    checkpoints = {}
    for item in args.checkpoints:
        task, sep, path = item.partition("=")
        if not sep:
            raise UserError(f"evaluate-epalm: --checkpoints takes TASK=DIR items, got {item!r}")
        checkpoints[task] = path
    preds: dict | None = {} if args.predictions else None
    world = data_record(args.data)  # before hours of decoding, not after
    caption_scorer_ready("caption" in checkpoints)
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
        **provenance({"world": world, "train": metas, "eval": p}),
    }
    write_json(args.out, record)
    if preds is not None:
        write_json(args.predictions, preds)
