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
from . import merging_commands as M
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
        ("--source", dict(action="extend", nargs="+", required=True, help="NAME=PATH pairs (coco2014, flickr30k, vqav2, gqa, nlvr2); PATH: the source's download.json or a folder of its unpacked files")),
        ("--out", dict(required=True, help="dataset folder for <kind>.arrow")),
        ("--params", dict(default="{}", help='JSON {"vqa_vocab_size": N}')),
    ]),
    ("fetch-backbone", C.fetch_backbone, "save a published backbone (HF cache / timm / local folder) as resources/backbones/<name>", [
        ("--name", dict(required=True, help="published name (bart-base, t5-base, opt-*, vit-b16, vit-l16, clip-rn101, clip-vit-b32) or any name with --params source")),
        ("--out", dict(required=True, help="output backbone folder")),
        ("--params", dict(default="{}", help='JSON {"source": local folder or Hub id, "kind": seq2seq|causal|image, "library": transformers|timm, "vl_tokens": add <vis_extra_id_k> to the tokenizer}')),
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
    ("pretrain-opt", C.pretrain_opt, "pretrain the tiny OPT as a causal LM on the world's text (eP-ALM)", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help="tokenizer folder (its OPT flavour is saved with the backbone)")),
        ("--out", dict(required=True, help="output backbone folder")),
        ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("pretrain-vit", C.pretrain_vit, "pretrain the tiny ViT as a unimodal scene tagger on the world's images (eP-ALM)", [
        ("--data", dict(required=True, help="folder of canonical tables (images with their scenes)")),
        ("--out", dict(required=True, help="output backbone folder (timm save_for_hf layout)")),
        ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size, patch_loss_weight}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("extract-perception", C.extract_perception, "cache the ViT's per-block [CLS] vectors of every image (eP-ALM)", [
        ("--data", dict(required=True, help="folder of canonical tables (images.arrow)")),
        ("--encoder", dict(required=True, help="ViT folder (timm save_for_hf layout)")),
        ("--out", dict(required=True, help="feature-store folder")),
        ("--params", dict(default="{}", help='JSON {"batch_size", "shard_size", "normalize", "dtype"}')),
    ]),
    ("finetune-epalm", C.finetune_epalm, "train eP-ALM's connection (and prompt) on one task; LM and encoder frozen", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--lm", dict(required=True, help="OPT folder (save_pretrained layout)")),
        ("--encoder", dict(required=True, help="ViT folder (timm save_for_hf layout)")),
        ("--perception", dict(default=None, help="cached perception store (extract-perception); none: run the encoder")),
        ("--task", dict(required=True, help="vqa, gqa or caption")),
        ("--out", dict(required=True, help="output checkpoint folder")),
        ("--method", dict(required=True, help="epalm-linear or epalm-prompt")),
        ("--seed", dict(type=int, required=True, help="run seed")),
        ("--params", dict(required=True, help="JSON {train: {...}, batch_size, loss_weight, augment, method_config, ...}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("evaluate-epalm", C.evaluate_epalm, "evaluate eP-ALM checkpoints (one per task) on the test split", [
        ("--checkpoints", dict(action="extend", nargs="+", required=True, help="TASK=DIR items (checkpoints of finetune-epalm)")),
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--lm", dict(default=None, help="OPT folder (default: the one the checkpoint recorded)")),
        ("--encoder", dict(default=None, help="ViT folder (default: the one the checkpoint recorded)")),
        ("--perception", dict(default=None, help="cached perception store; none: run the encoder")),
        ("--out", dict(required=True, help="metrics.json to write")),
        ("--experiment", dict(default="epalm", help="experiment name recorded in metrics.json")),
        ("--params", dict(default="{}", help="JSON {split, batch_size, num_beams, answer_max_len, caption_max_len}")),
        ("--predictions", dict(default=None, help="optional predictions.json to write")),
    ]),
    ("import-checkpoint", C.import_checkpoint, "map a released checkpoint's official names to vltune's and write a vltune checkpoint", [
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
    ]),
    ("params", C.params, "plan trainable/total parameters of a VL model + PET method (meta device, no download)", [
        ("--arch", dict(required=True, help="architecture preset: bart-base, t5-base, or eP-ALM's <opt-350m|opt-2.7b|opt-6.7b>+<vit-b16|vit-l16>")),
        ("--method", dict(required=True, help="PET method (e.g. vlpet-large, lora, full)")),
        ("--params", dict(default="{}", help="JSON method hyper-parameter overrides, e.g. '{\"adapter_dim\": 48}'")),
    ]),
    ("baselines", C.baselines, "majority-answer and constant-caption baselines", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--out", dict(required=True, help="baselines metrics.json to write")),
    ]),
    ("merge", C.merge, "merge N safetensors state dicts with the same names (lazy, one tensor at a time)", [
        ("--method", dict(required=True, help="merge method: average, interpolation, arithmetic, ties, dare, regmean")),
        ("--inputs", dict(action="extend", nargs="+", required=True, help="safetensors files to merge (same tensor names and shapes)")),
        ("--base", dict(default=None, help="base/central weights for arithmetic, ties, dare (task vectors = input - base)")),
        ("--grams", dict(action="extend", nargs="+", default=None, help="RegMean: one Gram safetensors per input, keyed by Linear module name")),
        ("--param", dict(action="extend", nargs="*", default=[], metavar="K=V", help="method parameters, e.g. ratio=0.3 lambda=0.5 alpha=0.9")),
        ("--out", dict(required=True, help="merged safetensors file to write")),
    ]),
    ("pretrain-vlmo", M.pretrain_vlmo, "pretrain a VLMo (seed / modality-specific / modality-agnostic) with MLM + ITC + ITM", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help="tokenizer folder")),
        ("--mode", dict(required=True, help="agnostic (one shared weight set) or specific (one per modality expert)")),
        ("--init", dict(default=None, help="VLMo folder to start from (a seed: every expert starts as its shared weights)")),
        ("--image-init", dict(default=None, help="timm ViT folder or name whose weights start the image tower and shared blocks")),
        ("--stage", dict(default="", help="name recorded in vlmo.json (seed, specific, agnostic)")),
        ("--out", dict(required=True, help="output VLMo folder (model.safetensors + vlmo.json)")),
        ("--params", dict(required=True, help="JSON {arch: {...}, train: {...}, batch_size, mlm_prob}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("collect-grams", M.collect_grams, "Gram matrices (X^T X, float64) of every expert Linear's inputs over a task split", [
        ("--model", dict(required=True, help="modality-specific VLMo folder")),
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help="tokenizer folder")),
        ("--task", dict(required=True, help="vqa, nlvr2 or retrieval: whose inputs (and experts) the Grams cover")),
        ("--split", dict(default="val", help="split of the pass (the paper: validation)")),
        ("--params", dict(default="{}", help='JSON {"batch_size": N}')),
        ("--out", dict(required=True, help="Gram safetensors file keyed by module name")),
    ]),
    ("merge-experts", M.merge_experts, "merge the modality experts of a specific VLMo into a modality-agnostic one", [
        ("--method", dict(required=True, help="merge method (see `vltune merge`)")),
        ("--specific", dict(required=True, help="modality-specific VLMo folder")),
        ("--base", dict(default=None, help="central weights for arithmetic/ties/dare: the seed VLMo folder")),
        ("--seed", dict(default=None, help="seed VLMo folder: the reference of the diagnostics' task vectors")),
        ("--grams", dict(default=None, help="RegMean: Gram file of the specific model (collect-grams)")),
        ("--param", dict(action="extend", nargs="*", default=[], metavar="K=V", help="method parameters, e.g. ratio=0.5")),
        ("--out", dict(required=True, help="output VLMo folder (model.safetensors, vlmo.json, diagnostics.json)")),
    ]),
    ("finetune-vlmo", M.finetune_vlmo, "fine-tune a VLMo init on each task and evaluate it (one metrics.json)", [
        ("--inits", dict(action="extend", nargs="+", required=True, help="VLMo folder(s): one for every task, or one per task in --tasks order")),
        ("--tasks", dict(action="extend", nargs="+", required=True, help="tasks: vqa, nlvr2, retrieval")),
        ("--name", dict(required=True, help="init name recorded as the method in metrics.json")),
        ("--experiment", dict(default="merging", help="experiment name recorded in metrics.json")),
        ("--seed", dict(type=int, required=True, help="run seed")),
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--tokenizer", dict(required=True, help="tokenizer folder")),
        ("--params", dict(required=True, help="JSON {train: {...}, batch_size, evaluate: {split, batch_size}}")),
        ("--out", dict(required=True, help="output folder (metrics.json, checkpoints/<task>/)")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("das-search", C.das_search, "DAS: search which k encoder blocks to skip for one task; writes skip.json", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--features", dict(default=None, help="feature-store folder (VL-BART / VL-T5)")),
        ("--tokenizer", dict(default=None, help="tokenizer folder (the VLMo)")),
        ("--backbone", dict(required=True, help="BART / T5 folder (save_pretrained layout), or a VLMo folder")),
        ("--family", dict(default="bart", help="backbone family: bart, t5 (encoder-decoder) or vlmo")),
        ("--task", dict(required=True, help="task the skip set is searched for (vqa, gqa, nlvr2, caption)")),
        ("--k", dict(type=int, required=True, help="number of encoder blocks to skip")),
        ("--seed", dict(type=int, required=True, help="run seed")),
        ("--out", dict(required=True, help="skip.json to write")),
        ("--params", dict(required=True, help="JSON {train: {...}, search: {...}, batch_size, dropout, method_config}")),
    ]),
    ("das-finetune", C.das_finetune, "DAS: fine-tune the skipped model (skip set from skip.json) on one task", [
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--features", dict(default=None, help="feature-store folder (VL-BART / VL-T5)")),
        ("--tokenizer", dict(default=None, help="tokenizer folder (the VLMo)")),
        ("--backbone", dict(required=True, help="BART / T5 folder (save_pretrained layout), or a VLMo folder")),
        ("--family", dict(default="bart", help="backbone family: bart, t5 (encoder-decoder) or vlmo")),
        ("--task", dict(required=True, help="task to fine-tune on")),
        ("--skip", dict(default=None, help="skip.json written by das-search (none: k = 0, nothing skipped)")),
        ("--seed", dict(type=int, required=True, help="run seed")),
        ("--out", dict(required=True, help="output checkpoint folder")),
        ("--params", dict(required=True, help="JSON {train: {...}, batch_size, dropout, method_config}")),
        ("--resume-dir", dict(default=None, help="where resume checkpoints live (not a declared output)")),
    ]),
    ("das-evaluate", C.das_evaluate, "DAS: accuracy, inference latency and FLOPs of a skipped model", [
        ("--checkpoint", dict(required=True, help="checkpoint folder written by das-finetune")),
        ("--backbone", dict(default=None, help="backbone folder the checkpoint applies to")),
        ("--data", dict(required=True, help="folder of canonical tables")),
        ("--features", dict(default=None, help="feature-store folder (VL-BART / VL-T5)")),
        ("--tokenizer", dict(default=None, help="tokenizer folder (the VLMo)")),
        ("--task", dict(required=True, help="task to evaluate")),
        ("--experiment", dict(default="das", help="experiment name recorded in metrics.json")),
        ("--params", dict(default="{}", help="JSON {split, batch_size, ..., latency: {batch_size, repeats, warmup}}")),
        ("--out", dict(required=True, help="metrics.json to write")),
    ]),
    ("das-report", C.das_report, "DAS table (k, params, FLOPs, latency, scores) and plots", [
        ("--metrics", dict(action="extend", nargs="+", required=True, help="metrics.json files of das-evaluate")),
        ("--skips", dict(action="extend", nargs="*", default=[], help="skip.json files of das-search (logit plot)")),
        ("--out-dir", dict(required=True, help="folder for das.md, das_latency.png, das_search.png")),
    ]),
    ("report", C.report, "summary.csv, Markdown table and plots from metrics.json files", [
        ("--metrics", dict(action="extend", nargs="+", required=True, help="metrics.json files of runs and baselines")),
        ("--ledgers", dict(action="extend", nargs="*", default=[], help="ledger records of the jobs (ledger.csv)")),
        ("--out-dir", dict(required=True, help="report folder")),
    ]),
    ("verify", C.verify, "check artifacts: tables against their manifest, feature shards, every .safetensors file", [
        ("paths", dict(nargs="+", metavar="PATH", help="dataset or feature-store folder, checkpoint/model folder, .arrow or .safetensors file")),
    ]),
    ("rulegraph", C.rulegraph, "the workflow's rule graph for a config, as an SVG", [
        ("--snakefile", dict(required=True, help="the workflow's Snakefile")),
        ("--config", dict(required=True, help="the resolved config as JSON")),
        ("--out", dict(required=True, help="SVG to write")),
    ]),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vltune", description="vltune: one subcommand per pipeline stage (each Snakemake rule calls one).")
    parser.add_argument("--version", action="version", version=f"vltune {__version__}")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (the rule's threads)")
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs the job was given (the rule's resources.gpu); locally, N free GPUs are claimed")
    parser.add_argument("--processes", type=int, default=None,
                        help="data-parallel training processes (default: one per visible GPU, 1 on CPU)")
    parser.add_argument("--ledger", default=None, help="write this run's ledger record (JSON) here")
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
    from .launch import run

    try:
        return run(args, sys.argv[1:] if argv is None else list(argv))
    except (UserError, FileNotFoundError) as e:  # bad input: one clear line, no traceback
        print(f"vltune {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
