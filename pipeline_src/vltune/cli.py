"""``vltune``: one entry point, one subcommand per pipeline stage (each rule calls exactly one).

Every subcommand takes explicit input/output paths; hyper-parameters come as one JSON object
(``--params``) holding the rule's slice of the validated config. The work lives in
``vltune.commands``; this file only registers the subcommands.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__
from . import commands as C
from .errors import UserError

SUBCOMMANDS = [
    # name, function, help, [(flag, kwargs)]
    ("make-world", C.make_world, "generate the synthetic shapes world as canonical Arrow tables", [
        ("--out", dict(required=True, help="output folder for <kind>.arrow + world.json")),
        ("--params", dict(default="{}", help="JSON WorldConfig fields")),
    ]),
    ("download", C.download, "fetch and verify a dataset's official files (resumable; sha256-checked)", [
        ("--dataset", dict(required=True, help="shipped manifest name (e.g. vqav2) or a manifest .json path")),
        ("--out", dict(required=True, help="raw folder; download.json is written there last")),
        ("--params", dict(default="{}", help='JSON {"mirror": base URL or folder, "retries": N, "backoff": s, "timeout": s}')),
    ]),
    ("convert", C.convert, "official dataset files → the five canonical Arrow tables (+ vqa_vocab.json)", [
        ("--source", dict(nargs="+", required=True, help="NAME=RAW_DIR pairs (coco2014, flickr30k, vqav2, gqa, nlvr2)")),
        ("--out", dict(required=True, help="dataset folder for <kind>.arrow")),
        ("--params", dict(default="{}", help='JSON {"vqa_vocab_size": N}')),
    ]),
    ("fetch-backbone", C.fetch_backbone, "save a published backbone (HF cache / timm / local folder) as resources/backbones/<name>", [
        ("--name", dict(required=True, help="published name (bart-base, t5-base, opt-*, vit-b16, vit-l16, clip-rn101, clip-vit-b32) or any name with --params source")),
        ("--out", dict(required=True, help="output backbone folder")),
        ("--params", dict(default="{}", help='JSON {"source": local folder or Hub id, "kind": seq2seq|causal|image, "library": transformers|timm}')),
    ]),
    ("train-tokenizer", C.train_tokenizer, "train a byte-level BPE tokenizer on the world's train text", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--out", dict(required=True, help="output folder (save_pretrained layout)")),
        ("--params", dict(default="{}", help='JSON {"vocab_size": N}')),
    ]),
    ("pretrain-clip", C.pretrain_clip, "contrastively pretrain the tiny CLIP", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help="tokenizer folder")),
        ("--out", dict(required=True, help="output backbone folder")),
        ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("pretrain-bart", C.pretrain_bart, "pretrain the tiny BART as a denoising LM", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help="tokenizer folder")),
        ("--out", dict(required=True, help="output backbone folder")),
        ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("pretrain-t5", C.pretrain_t5, "pretrain the tiny T5 as a span-corruption denoiser", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help="tokenizer folder (its T5 flavour is saved with the backbone)")),
        ("--out", dict(required=True, help="output backbone folder")),
        ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("extract-features", C.extract_features, "extract CLIP grid/cls/pooled features into the feature store", [
        ("--data", dict(required=True, help="folder of canonical tables (images.arrow)")),
        ("--backbone", dict(required=True, help="CLIP folder (save_pretrained layout)")),
        ("--out", dict(required=True, help="feature-store folder")),
        ("--params", dict(default="{}", help='JSON {"batch_size": N, "shard_size": N}')),
    ]),
    ("finetune-vlbart", C.finetune_vlbart, "multitask fine-tuning of VL-BART or VL-T5", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--features", dict(required=True, help="feature-store folder")),
        ("--backbone", dict(required=True, help="BART or T5 folder (save_pretrained layout)")),
        ("--family", dict(default="bart", help="encoder-decoder family of the backbone: bart or t5")),
        ("--out", dict(required=True, help="output checkpoint folder")),
        ("--method", dict(required=True, help="adaptation method (e.g. full)")),
        ("--seed", dict(type=int, required=True, help="run seed")),
        ("--params", dict(required=True, help="JSON {train: {...}, batch_size, task_weights, dropout, method_config}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("evaluate-vlbart", C.evaluate_vlbart, "evaluate a VL-BART or VL-T5 checkpoint on the test split", [
        ("--checkpoint", dict(required=True, help="checkpoint folder written by finetune-vlbart")),
        ("--backbone", dict(default=None, help="backbone folder a PET checkpoint applies to (default: the one it recorded)")),
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--features", dict(required=True, help="feature-store folder")),
        ("--out", dict(required=True, help="metrics.json to write")),
        ("--experiment", dict(default="vlpet", help="experiment name recorded in metrics.json")),
        ("--params", dict(default="{}", help="JSON {split, tasks, batch_size, caption_beams, ...}")),
        ("--predictions", dict(default=None, help="optional predictions.json to write")),
    ]),
    ("params", C.params, "plan trainable/total parameters of a VL model + PET method (meta device, no download)", [
        ("--arch", dict(required=True, help="architecture preset: bart-base or t5-base")),
        ("--method", dict(required=True, help="PET method (e.g. vlpet-large, lora, full)")),
        ("--params", dict(default="{}", help="JSON method hyper-parameter overrides, e.g. '{\"adapter_dim\": 48}'")),
    ]),
    ("baselines", C.baselines, "majority-answer and constant-caption baselines", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--out", dict(required=True, help="baselines metrics.json to write")),
    ]),
    ("report", C.report, "summary.csv, Markdown table and plots from metrics.json files", [
        ("--metrics", dict(nargs="+", required=True, help="metrics.json files of runs and baselines")),
        ("--out-dir", dict(required=True, help="report folder")),
    ]),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vltune", description="vltune: one subcommand per pipeline stage (each Snakemake rule calls one).")
    parser.add_argument("--version", action="version", version=f"vltune {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (the rule's threads)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, func, help_text, args in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        for flag, kwargs in args:
            p.add_argument(flag, **kwargs)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    C.setup_runtime(args.threads)
    try:
        args.func(args)
    except (UserError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"vltune {args.command}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
