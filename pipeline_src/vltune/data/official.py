"""Converters from the datasets' official release formats to the canonical Arrow tables.

Each source is given as its download record (``resources/raw/<source>/download.json``: the
files are read where the download left or found them, archive members straight from the archive)
or as a folder holding the unpacked release; see :mod:`vltune.data.source_files`. The files:

- ``coco2014``: ``train2014/``, ``val2014/`` JPEGs + Karpathy's ``dataset_coco.json`` → captions.
  Karpathy splits: ``train`` and ``restval`` → train, ``val`` → val, ``test`` → test.
- ``flickr30k``: ``flickr30k-images/`` + ``dataset_flickr30k.json`` (same Karpathy format).
- ``vqav2``: ``v2_OpenEnded_mscoco_{train,val}2014_questions.json`` +
  ``v2_mscoco_{train,val}2014_annotations.json`` → 10 raw answers per question. A question takes
  the Karpathy split of its COCO image (VL-T5's ``karpathy_{train,val,test}.json``), so it needs
  the ``coco2014`` source beside it.
- ``gqa``: ``{train,val,testdev}_balanced_questions.json`` (→ train/val/test) + ``images/``.
- ``nlvr2``: JSON-lines ``train.json``, ``dev.json``, ``test1.json`` (→ train/val/test, test-P) +
  the image folders; image stems follow the feature files of VL-Adapter (``train-10171-0-img0``).

Image ids are namespaced by the source the image comes from, so equal file
stems of two sources (Flickr30k and GQA/VG both use bare numbers) never meet in one table:
``coco/<file stem>`` (``coco/COCO_val2014_000000391895``; VQA v2 questions point at these),
``flickr30k/<file stem>``, ``gqa/<imageId>``, ``nlvr2/<pair>-img0`` / ``-img1``. Within one source
an image stem found twice is an error naming both files. Images stay as their encoded bytes and
are stored once per dataset, however many tasks use them, in the order their files are listed
(sources in ``SOURCES`` order), so every archive is read front to back once. Real images have no
scene description, so the ``scene`` column is empty.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from .source_files import ConvertError, SourceFile, SourceFiles
from .tables import SCHEMAS, TABLE_KINDS, table_path, write_table, write_table_manifest

log = logging.getLogger(__name__)

SOURCES = ("coco2014", "flickr30k", "vqav2", "gqa", "nlvr2")
KARPATHY_SPLIT = {"train": "train", "restval": "train", "val": "val", "test": "test"}
GQA_FILES = {"train": "train_balanced_questions.json", "val": "val_balanced_questions.json",
             "test": "testdev_balanced_questions.json"}
NLVR2_FILES = {"train": "train.json", "val": "dev.json", "test": "test1.json"}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Image id prefix per source that holds images (VQA v2 questions use the coco2014 images).
IMAGE_NAMESPACE = {"coco2014": "coco", "flickr30k": "flickr30k", "gqa": "gqa", "nlvr2": "nlvr2"}


def _load_json(f: SourceFile):
    try:
        return json.loads(f.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConvertError(f"{f.where}: not valid JSON ({e})") from None


def _need(record: dict, keys: Iterable[str], where: str) -> None:
    for k in keys:
        if k not in record:
            raise ConvertError(f"{where}: record has no {k!r} field: {str(record)[:200]}")


def image_id(source: str, stem: str) -> str:
    """The canonical id of image ``stem`` (file stem, GQA ``imageId``) of ``source``."""
    return f"{IMAGE_NAMESPACE[source]}/{stem}"


def index_images(files: SourceFiles, source: str) -> dict[str, SourceFile]:
    """image id (namespaced by ``source``) → its file, for every image of the source; an image
    found twice is an error naming both files."""
    return files.images(IMAGE_SUFFIXES, lambda stem: image_id(source, stem))


# ----------------------------------------------------------------------------- per-source readers
def read_karpathy(f: SourceFile | str | os.PathLike, source: str) -> list[dict]:
    """Karpathy's ``dataset_{coco,flickr30k}.json`` → [{image_id, split, captions}], file order;
    image ids namespaced by ``source`` (coco2014 or flickr30k)."""
    f = f if isinstance(f, SourceFile) else SourceFile.of_path(f)
    data = _load_json(f)
    if not isinstance(data, dict) or "images" not in data:
        raise ConvertError(f"{f.where}: no 'images' list (expected Karpathy's dataset_*.json)")
    rows = []
    for img in data["images"]:
        _need(img, ("filename", "split", "sentences"), f.where)
        if img["split"] not in KARPATHY_SPLIT:
            raise ConvertError(f"{f.where}: {img['filename']}: unknown Karpathy split {img['split']!r}")
        rows.append({"image_id": image_id(source, os.path.splitext(img["filename"])[0]), "split": KARPATHY_SPLIT[img["split"]],
                     "captions": [s["raw"].strip() for s in img["sentences"]]})
    return rows


def read_vqav2(files: SourceFiles, image_split: dict[str, str]) -> list[dict]:
    """Questions + annotations of train2014 and val2014 → vqa rows with the image's Karpathy split."""
    rows = []
    for subset in ("train2014", "val2014"):
        qfile = files.find(f"v2_OpenEnded_mscoco_{subset}_questions.json")
        afile = files.find(f"v2_mscoco_{subset}_annotations.json")
        qpath, apath = qfile.where, afile.where
        questions, annotations = _load_json(qfile), _load_json(afile)
        questions = questions.get("questions") if isinstance(questions, dict) else None
        annotations = annotations.get("annotations") if isinstance(annotations, dict) else None
        if questions is None or annotations is None:
            raise ConvertError(f"{qpath} / {apath}: expected 'questions' and 'annotations' lists")
        by_qid = {}
        for a in annotations:
            _need(a, ("question_id", "answers", "question_type", "answer_type"), apath)
            by_qid[a["question_id"]] = a
        for q in questions:
            _need(q, ("question_id", "image_id", "question"), qpath)
            ann = by_qid.get(q["question_id"])
            if ann is None:
                raise ConvertError(f"{apath}: no annotation for question_id {q['question_id']}")
            answers = [a["answer"] for a in ann["answers"]]
            if len(answers) != 10:
                raise ConvertError(f"{apath}: question_id {q['question_id']} has {len(answers)} answers, expected 10")
            coco_id = image_id("coco2014", f"COCO_{subset}_{q['image_id']:012d}")
            if coco_id not in image_split:
                raise ConvertError(f"{qpath}: image {coco_id} of question {q['question_id']} is not in the Karpathy split")
            rows.append({"question_id": str(q["question_id"]), "image_id": coco_id,
                         "split": image_split[coco_id], "question": q["question"],
                         "question_type": ann["question_type"], "answer_type": ann["answer_type"],
                         "answers": answers})
    return rows


def read_gqa(files: SourceFiles) -> list[dict]:
    rows = []
    for split, name in GQA_FILES.items():
        f = files.find(name)
        data = _load_json(f)
        if not isinstance(data, dict):
            raise ConvertError(f"{f.where}: expected an object of questions by question id")
        for qid, q in data.items():
            _need(q, ("imageId", "question", "answer", "types"), f"{f.where}: question {qid}")
            rows.append({"question_id": str(qid), "image_id": image_id("gqa", str(q["imageId"])), "split": split,
                         "question": q["question"], "question_type": q["types"]["detailed"],
                         "answer": q["answer"]})
    return rows


def read_nlvr2(files: SourceFiles) -> list[dict]:
    rows = []
    for split, name in NLVR2_FILES.items():
        f = files.find(name)
        path = f.where
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                ex = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConvertError(f"{path}:{n}: not a JSON line ({e})") from None
            _need(ex, ("identifier", "sentence", "label"), f"{path}:{n}")
            if str(ex["label"]) not in ("True", "False"):
                raise ConvertError(f"{path}:{n}: label {ex['label']!r}, expected 'True' or 'False'")
            base = ex["identifier"].rsplit("-", 1)[0]  # train-10171-0-0 → image pair train-10171-0
            rows.append({"pair_id": ex["identifier"], "left_image_id": image_id("nlvr2", f"{base}-img0"),
                         "right_image_id": image_id("nlvr2", f"{base}-img1"), "split": split, "statement": ex["sentence"],
                         "label": str(ex["label"]) == "True"})
    return rows


# ----------------------------------------------------------------------------- VQA answer targets
def answer_vocab(vqa: pa.Table, top_k: int = 3129, split: str = "train") -> list[str]:
    """The ``top_k`` most frequent normalised human answers of ``split`` (ties alphabetical)."""
    from .answers import normalize_answer

    mask = [s == split for s in vqa["split"].to_pylist()]
    counts = Counter(normalize_answer(a) for answers, keep in zip(vqa["answers"].to_pylist(), mask)
                     if keep for a in answers)
    return [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]]


def answer_targets(answers: list[str], label_of: dict[str, int]) -> tuple[list[int], list[float]]:
    """Soft VQA targets inside the vocabulary: (labels, scores) (ViLT's
    ``answer_labels`` / ``answer_scores``); answers outside the vocabulary are dropped."""
    from .answers import soft_scores

    pairs = sorted((label_of[a], s) for a, s in soft_scores(answers).items() if a in label_of)
    return [label for label, _ in pairs], [s for _, s in pairs]


# ----------------------------------------------------------------------------- the whole dataset
def _write_images(wanted: dict[str, tuple[str, str]], indexes: dict[str, dict[str, SourceFile]],
                  where: dict[str, str], path: Path, batch: int = 512) -> int:
    """Stream the images table batch by batch (COCO alone is ~19 GB of JPEGs: never all in RAM).

    Rows follow the sources' listing order (sources in ``SOURCES`` order), so each archive is read
    front to back once, whether it is a zip or a compressed tar.
    """
    from ..utils.io import atomic_path

    schema = SCHEMAS["images"]
    for iid, (_split, src) in wanted.items():  # every file found before anything is written
        if iid not in indexes[src]:
            raise ConvertError(f"{where[src]}: no image file for image_id {iid!r} ({src})")
    items = sorted(((SOURCES.index(src), indexes[src][iid].order), iid, split, indexes[src][iid])
                   for iid, (split, src) in wanted.items())  # the (source, order) keys are unique
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for start in range(0, max(len(items), 1), batch):
                chunk = items[start:start + batch]
                writer.write_batch(pa.record_batch({
                    "image_id": [c[1] for c in chunk], "split": [c[2] for c in chunk],
                    "image": [c[3].read_bytes() for c in chunk], "scene": [""] * len(chunk)}, schema=schema))
    return len(items)


def _table(kind: str, rows: list[dict]) -> pa.Table:
    schema = SCHEMAS[kind]
    return pa.table({name: [r[name] for r in rows] for name in schema.names}, schema=schema)


def convert(sources: dict[str, str | os.PathLike], out_dir: str | os.PathLike, vqa_vocab_size: int = 3129) -> dict:
    """Write the five canonical tables of a dataset assembled from official ``sources``
    ({source name: its download record or raw folder}), plus ``vqa_vocab.json`` when VQA is among
    them; return counts.

    Tables of tasks no source provides are written empty, so every dataset has the same files.
    Train VQA questions with no answer inside the vocabulary are dropped (as ViLT's and VLMo's code does).
    """
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ConvertError(f"unknown source {sorted(unknown)[0]!r}; expected some of {', '.join(SOURCES)}")
    if "vqav2" in sources and "coco2014" not in sources:
        raise ConvertError("source vqav2 needs coco2014 beside it (Karpathy splits and COCO images)")
    with ExitStack() as stack:
        files = {k: stack.enter_context(SourceFiles.open(v)) for k, v in sources.items()}
        return _convert(files, Path(out_dir), vqa_vocab_size)


def _convert(files: dict[str, SourceFiles], out_dir: Path, vqa_vocab_size: int) -> dict:
    rows: dict[str, list[dict]] = {k: [] for k in TABLE_KINDS}
    wanted: dict[str, tuple[str, str]] = {}  # image_id → (split, source)

    def want(iid: str, split: str, source: str) -> None:
        wanted.setdefault(iid, (split, source))

    for src, name in (("coco2014", "dataset_coco.json"), ("flickr30k", "dataset_flickr30k.json")):
        if src in files:
            caps = read_karpathy(files[src].find(name), src)
            rows["captions"] += caps
            for r in caps:
                want(r["image_id"], r["split"], src)
    if "vqav2" in files:
        image_split = {r["image_id"]: r["split"] for r in rows["captions"]
                       if r["image_id"].startswith(IMAGE_NAMESPACE["coco2014"] + "/")}
        rows["vqa"] = read_vqav2(files["vqav2"], image_split)
    if "gqa" in files:
        rows["gqa"] = read_gqa(files["gqa"])
        for r in rows["gqa"]:
            want(r["image_id"], r["split"], "gqa")
    if "nlvr2" in files:
        rows["nlvr2"] = read_nlvr2(files["nlvr2"])
        for r in rows["nlvr2"]:
            want(r["left_image_id"], r["split"], "nlvr2")
            want(r["right_image_id"], r["split"], "nlvr2")

    counts = {}
    if rows["vqa"]:
        vqa = _table("vqa", rows["vqa"])
        vocab = answer_vocab(vqa, vqa_vocab_size)
        label_of = {a: i for i, a in enumerate(vocab)}
        keep = [r["split"] != "train" or bool(answer_targets(r["answers"], label_of)[0]) for r in rows["vqa"]]
        counts["vqa_dropped_no_label"] = keep.count(False)
        rows["vqa"] = [r for r, k in zip(rows["vqa"], keep) if k]
        from ..utils.io import write_json

        write_json(out_dir / "vqa_vocab.json", {"answers": vocab, "top_k": vqa_vocab_size})

    indexes = {src: index_images(files[src], src) for src in sorted({s for _, s in wanted.values()})}
    where = {src: files[src].where for src in indexes}
    counts["images"] = _write_images(wanted, indexes, where, table_path(out_dir, "images"))
    for kind in TABLE_KINDS[1:]:
        write_table(_table(kind, rows[kind]), table_path(out_dir, kind), kind)
        counts[kind] = len(rows[kind])
    write_table_manifest(out_dir)  # before convert.json, the record the caller writes last
    log.info("converted %s → %s: %s", sorted(files), out_dir, counts)
    return counts
