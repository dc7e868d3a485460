"""Feature stage (workflow/rules/features.smk): CLIP features of every image into the feature store."""

from __future__ import annotations

from ..errors import UserError
from .common import command, parse_params


@command("extract-features", "extract CLIP grid/cls/pooled features into the feature store", [
    ("--data", dict(required=True, help="folder of canonical tables (images.arrow)")),
    ("--backbone", dict(required=True, help="CLIP folder (save_pretrained layout)")),
    ("--out", dict(required=True, help="feature-store folder")),
    ("--params", dict(default="{}", help='JSON {"batch_size": N, "shard_size": N}')),
])
def extract_features(args) -> None:
    from ..features.extract import ExtractConfig, extract_features as run

    try:
        cfg = ExtractConfig.from_dict(parse_params(args.params, "extract-features"))
    except (TypeError, ValueError) as e:
        raise UserError(f"extract-features: {e}") from None
    run(args.data, args.backbone, args.out, cfg)
