"""Data stage (workflow/rules/data.smk): the synthetic world, or official datasets downloaded and
converted into the canonical Arrow tables."""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..utils.io import sha256_file, write_json
from ..settings import Convert, Download
from .common import command, parse_params


@command("make-world", "generate the synthetic shapes world as canonical Arrow tables", [
    ("--out", dict(required=True, help="output folder for <kind>.arrow + world.json")),
    ("--params", dict(default="{}", help="JSON WorldConfig fields")),
])
def make_world(args) -> None:
    from ..data.synthetic import WorldConfig, write_world

    try:
        cfg = WorldConfig.from_dict(parse_params(args.params, "make-world"))
    except ValueError as e:
        raise UserError(str(e)) from None
    write_world(cfg, args.out)


@command("download", "fetch and verify a dataset's official files (resumable; sha256-checked)", [
    ("--dataset", dict(required=True, help="shipped manifest name (e.g. vqav2) or a manifest .json path")),
    ("--out", dict(required=True, help="raw folder; download.json is written there last")),
    ("--params", dict(default="{}", help='JSON {"mirror": base URL or folder, "retries": N, "backoff": s, "timeout": s}')),
])
def download(args) -> None:
    from ..data.download import download_dataset, load_manifest

    settings = Download.from_params(args.params, "download")
    download_dataset(load_manifest(args.dataset), args.out, **settings.to_dict())


@command("convert", "official dataset files → the five canonical Arrow tables (+ vqa_vocab.json)", [
    ("--source", dict(action="extend", nargs="+", required=True, help="NAME=PATH pairs (coco2014, flickr30k, vqav2, gqa, nlvr2); PATH: the source's download.json or a folder of its unpacked files")),
    ("--out", dict(required=True, help="dataset folder for <kind>.arrow")),
    ("--params", dict(default="{}", help='JSON {"vqa_vocab_size": N}')),
])
def convert(args) -> None:
    from ..data.official import convert as convert_official

    settings = Convert.from_params(args.params, "convert")
    sources = {}
    for pair in args.source:
        name, sep, raw = pair.partition("=")
        if not sep or not raw:
            raise UserError(f"convert: --source {pair!r} must be NAME=PATH (a download.json or a raw folder)")
        sources[name] = raw
    counts = convert_official(sources, args.out, **settings.to_dict())
    # what the tables were made from: a download record lists every file's sha256
    made_from = {name: sha256_file(raw) if Path(raw).is_file() else None for name, raw in sorted(sources.items())}
    write_json(Path(args.out) / "convert.json", {**counts, "sources": made_from})
