"""VL-PET stage (workflow/rules/vlpet.smk): multitask fine-tuning of VL-BART / VL-T5 with a PET
method, and its evaluation on the test split."""

from __future__ import annotations

from ..errors import UserError
from ..utils.io import write_json
from ..settings import Evaluate, VlpetFinetune
from .common import (RESUME_DIR, caption_scorer_ready, check_method_config, command, data_record,
                     provenance, train_config, training_record, visual_tokens)


@command("finetune-vlbart", "multitask fine-tuning of VL-BART or VL-T5", [
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--features", dict(required=True, help="feature-store folder")),
    ("--backbone", dict(required=True, help="BART or T5 folder (save_pretrained layout)")),
    ("--family", dict(default="bart", help="encoder-decoder family of the backbone: bart or t5")),
    ("--out", dict(required=True, help="output checkpoint folder")),
    ("--method", dict(required=True, help="adaptation method (e.g. full)")),
    ("--seed", dict(type=int, required=True, help="run seed")),
    ("--params", dict(required=True, help="JSON {train: {...}, batch_size, task_weights, dropout, method_config}")),
    RESUME_DIR,
], multiprocess=True)
def finetune_vlbart(args) -> None:
    from ..recipes.encdec.finetune import METHODS, finetune_vl_model as run, vl_model_class

    if args.method not in METHODS:
        raise UserError(f"--method {args.method!r} is not one of {', '.join(METHODS)}")
    vl_model_class(args.family)  # an unknown family fails here, before any data is read
    s = VlpetFinetune.from_params(args.params, "finetune-vlbart")
    method_config = s.method_config or {}
    check_method_config(args.method, method_config, "finetune-vlbart")
    run(args.data, args.features, args.backbone, args.out, args.method,
        train_config(s.train, "finetune-vlbart", args.seed),
        s.batch_size, s.task_weights, resume_dir=args.resume_dir, dropout=s.dropout,
        method_config=method_config, family=args.family, visual=visual_tokens(s.visual))


@command("evaluate-vlbart", "evaluate a VL-BART or VL-T5 checkpoint on the test split", [
    ("--checkpoint", dict(required=True, help="checkpoint folder written by finetune-vlbart")),
    ("--backbone", dict(default=None, help="backbone folder a PET checkpoint applies to (default: the one it recorded)")),
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--features", dict(required=True, help="feature-store folder")),
    ("--out", dict(required=True, help="metrics.json to write")),
    ("--experiment", dict(default="vlpet", help="experiment name recorded in metrics.json")),
    ("--params", dict(default="{}", help="JSON {split, tasks, batch_size, caption_beams, ...}")),
    ("--predictions", dict(default=None, help="optional predictions.json to write")),
])
def evaluate_vlbart(args) -> None:
    from ..recipes.encdec.evaluate import evaluate_vl_model as run
    from ..recipes.encdec.finetune import load_vl_model, visual_tokens as recorded_visual_tokens

    p = Evaluate.from_params(args.params, "evaluate-vlbart").to_dict()
    world = data_record(args.data)  # before hours of decoding, not after
    made = training_record(args.checkpoint)
    tasks = p.pop("tasks")
    caption_scorer_ready("caption" in tasks)
    model, tok, meta = load_vl_model(args.checkpoint, args.backbone)
    preds: dict | None = {} if args.predictions else None
    metrics = run(model, tok, args.data, args.features, tasks, save_predictions=preds,
                  visual=recorded_visual_tokens(meta), **p)
    record = {
        "experiment": args.experiment, "family": meta["family"], "method": meta["method"], "seed": meta["seed"],
        "trainable_params": meta["trainable_params"], "total_params": meta["total_params"],
        "trainable_pct": meta["trainable_pct"], **metrics, **made,
        **provenance({"world": world, "train": meta, "eval": p, "tasks": tasks}),
    }
    write_json(args.out, record)
    if preds is not None:
        write_json(args.predictions, preds)
