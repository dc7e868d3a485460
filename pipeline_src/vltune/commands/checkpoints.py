"""``vltune import-checkpoint`` (workflow/rules/vlpet.smk and epalm.smk): a released checkpoint's
official names mapped onto vltune's, written as a vltune checkpoint."""

from __future__ import annotations

from ..errors import UserError
from ..utils.ledger import note
from ..settings import ImportCheckpoint
from .common import check_method_config, command, log


@command("import-checkpoint", "map a released checkpoint's official names to vltune's and write a vltune checkpoint", [
    ("--from", dict(dest="source", required=True, help="whose checkpoint: vlpet (VL-BART / VL-T5), epalm, vl-merging")),
    ("path", dict(help="the released .pth / .bin file")),
    ("--out", dict(required=True, help="checkpoint folder to write (+ import.json: source path and sha256)")),
    ("--method", dict(default=None, help="the vltune method the file holds (vlpet-large, …; epalm-linear, epalm-prompt)")),
    ("--family", dict(default="bart", help="vlpet: bart (VL-BART) or t5 (VL-T5)")),
    ("--backbone", dict(default=None, help="vlpet: BART / T5 folder giving the architecture and tokenizer")),
    ("--features", dict(default=None, help="vlpet: feature-store folder the checkpoint will read (its width)")),
    ("--backbone-out", dict(default=None, help="vlpet: where the released model's own LM is saved (default: <out>/backbone)")),
    ("--lm", dict(default=None, help="epalm: OPT folder (save_pretrained layout)")),
    ("--encoder", dict(default=None, help="epalm: ViT folder (timm save_for_hf layout)")),
    ("--task", dict(default=None, help="epalm: the task the checkpoint was trained on (vqa, gqa, caption)")),
    ("--params", dict(default="{}", help='JSON {"method_config": {...}, "visual": {...}}')),
])
def import_checkpoint(args) -> None:
    from .. import import_checkpoint as I

    if args.source not in I.SOURCES:
        raise UserError(f"import-checkpoint: --from {args.source!r} is not one of {', '.join(I.SOURCES)}")
    s = ImportCheckpoint.from_params(args.params, "import-checkpoint")
    if args.source == "vl-merging":
        I.refuse_vl_merging(args.path)
    needed = {"vlpet": ("method", "backbone", "features"), "epalm": ("method", "lm", "encoder", "task")}[args.source]
    absent = [f"--{n}" for n in needed if getattr(args, n) is None]
    if absent:
        raise UserError(f"import-checkpoint --from {args.source} needs {', '.join(absent)}")
    method_config = s.method_config or {}
    check_method_config(args.method, method_config, "import-checkpoint")
    if args.source == "vlpet":
        from ..features.store import FeatureStore

        I.check_vlpet_method(args.method)  # before any folder is read
        store = FeatureStore(args.features)
        if "grid" not in store.keys:
            raise UserError(f"{args.features}: the feature store has no 'grid' feature (has {sorted(store.keys)})")
        record = I.import_vlpet(args.path, args.out, args.backbone, int(store.keys["grid"][-1]), args.method,
                                method_config, visual=s.visual, features=args.features,
                                backbone_out=args.backbone_out, family=args.family)
    else:
        record = I.import_epalm(args.path, args.out, args.lm, args.encoder, args.task, args.method, method_config)
    note("imported", record)
    log.info("imported %d tensors of %s (sha256 %s) -> %s", record["tensors"], record["source"], record["sha256"], args.out)
