"""Backbone stage (workflow/rules/backbones.smk): fetch a published backbone, or train the
tokenizer and pretrain the tiny CLIP, BART and T5 on the world."""

from __future__ import annotations

from ..errors import UserError
from ..settings import BackboneTrain, TokenizerTrain
from .common import RESUME_DIR, command, parse_params, train_config, write_train_log


@command("fetch-backbone", "save a published backbone (HF cache / timm / local folder) as resources/backbones/<name>", [
    ("--name", dict(required=True, help="published name (bart-base, t5-base, opt-*, vit-b16, vit-l16, clip-rn101, clip-vit-b32) or any name with --params source")),
    ("--out", dict(required=True, help="output backbone folder")),
    ("--params", dict(default="{}", help='JSON {"source": local folder or Hub id, "kind": seq2seq|causal|image, "library": transformers|timm, "vl_tokens": add <vis_extra_id_k> to the tokenizer}')),
])
def fetch_backbone(args) -> None:
    from ..backbones.pretrained import fetch_backbone as fetch

    params = {k: v for k, v in parse_params(args.params, "fetch-backbone").items() if v is not None}
    unknown = set(params) - {"source", "kind", "library", "vl_tokens"}
    if unknown:
        raise UserError(f"fetch-backbone: unknown param {sorted(unknown)[0]!r}")
    if params.pop("vl_tokens", False):
        from ..backbones.tokenizer import N_VIS_EXTRA_IDS_PUBLISHED, vis_extra_ids

        params["add_tokens"] = vis_extra_ids(N_VIS_EXTRA_IDS_PUBLISHED)
    fetch(args.name, args.out, **params)


@command("train-tokenizer", "train a byte-level BPE tokenizer on the world's train text", [
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--out", dict(required=True, help="output folder (save_pretrained layout)")),
    ("--params", dict(default="{}", help='JSON {"vocab_size": N}')),
])
def train_tokenizer(args) -> None:
    from ..backbones.tokenizer import train_tokenizer as train, world_texts

    settings = TokenizerTrain.from_params(args.params, "train-tokenizer")
    train(world_texts(args.data, "train"), int(settings.vocab_size), args.out)


def _pretrain_flags(tokenizer_help: str = "tokenizer folder") -> list:
    return [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help=tokenizer_help)),
        ("--out", dict(required=True, help="output backbone folder")),
        ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size}")),
        RESUME_DIR,
    ]


def _pretrain(args, command: str, run) -> None:
    s = BackboneTrain.from_params(args.params, command, section=f"backbones.{command.removeprefix('pretrain-')}")
    result = run(args.data, args.tokenizer, args.out, s.arch, train_config(s.train, command),
                 s.batch_size, resume_dir=args.resume_dir)
    write_train_log(args.out, result)


@command("pretrain-clip", "contrastively pretrain the tiny CLIP", _pretrain_flags(), multiprocess=True)
def pretrain_clip(args) -> None:
    from ..backbones.clip import pretrain_clip as run

    _pretrain(args, "pretrain-clip", run)


@command("pretrain-bart", "pretrain the tiny BART as a denoising LM", _pretrain_flags(), multiprocess=True)
def pretrain_bart(args) -> None:
    from ..backbones.bart import pretrain_bart as run

    _pretrain(args, "pretrain-bart", run)


@command("pretrain-t5", "pretrain the tiny T5 as a span-corruption denoiser",
         _pretrain_flags("tokenizer folder (its T5 flavour is saved with the backbone)"), multiprocess=True)
def pretrain_t5(args) -> None:
    from ..backbones.t5 import pretrain_t5 as run

    _pretrain(args, "pretrain-t5", run)
