"""Converters on tiny fixtures written here in the official release formats."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vltune.data.official import ConvertError, answer_targets, answer_vocab, convert, read_karpathy
from vltune.data.tables import read_table, table_path


def _jpeg(color, fmt="JPEG") -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 6), color).save(buf, fmt)
    return buf.getvalue()


COCO = [  # (subset, numeric id, Karpathy split)
    ("train2014", 9, "train"), ("val2014", 42, "restval"), ("val2014", 73, "val"), ("val2014", 74, "test"),
]


def _coco_name(subset, n):
    return f"COCO_{subset}_{n:012d}"


def _write_coco(raw):
    for i, (subset, n, _) in enumerate(COCO):
        (raw / subset).mkdir(parents=True, exist_ok=True)
        (raw / subset / f"{_coco_name(subset, n)}.jpg").write_bytes(_jpeg((10 * i, 0, 0)))
    (raw / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": [
        {"filepath": subset, "filename": f"{_coco_name(subset, n)}.jpg", "imgid": i, "cocoid": n,
         "split": split, "sentids": [5 * i + j for j in range(5)],
         "sentences": [{"raw": f" A photo number {j} of {n}. ", "tokens": ["a"], "imgid": i, "sentid": 5 * i + j}
                       for j in range(5)]}
        for i, (subset, n, split) in enumerate(COCO)]}))


def _vqa_answers(spec):
    """spec like {"yes": 7, "no": 3} → 10 answer dicts as in v2_mscoco_*_annotations.json."""
    out = [a for a, c in spec.items() for _ in range(c)]
    assert len(out) == 10
    return [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(out)]


VQA = {  # question_id → (subset, image number, question, answers)
    "train2014": {901: (9, "Is it red?", {"yes": 7, "no": 3}),
                  # ten different rare answers: none in the top-3 vocabulary, so it is dropped
                  902: (9, "What colour?", {c: 1 for c in ("red", "tan", "teal", "navy", "gold", "grey", "pink",
                                                             "lime", "plum", "rust")})},
    "val2014": {4201: (42, "How many?", {"2": 4, "two": 3, "3": 1, "yes": 2}),
                7301: (73, "Is it blue?", {"no": 9, "yes": 1}),
                7401: (74, "What is it?", {"zebra-ish": 10})},  # test split: kept whatever its answers
}


def _write_vqa(raw):
    raw.mkdir(parents=True, exist_ok=True)
    for subset, qs in VQA.items():
        (raw / f"v2_OpenEnded_mscoco_{subset}_questions.json").write_text(json.dumps({
            "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "license": {}, "data_subtype": subset,
            "questions": [{"image_id": n, "question": q, "question_id": qid} for qid, (n, q, _) in qs.items()]}))
        (raw / f"v2_mscoco_{subset}_annotations.json").write_text(json.dumps({
            "info": {}, "license": {}, "data_subtype": subset, "annotations": [
                {"question_type": "is it" if q.startswith("Is") else "what", "multiple_choice_answer": max(a, key=a.get),
                 "answers": _vqa_answers(a), "image_id": n, "answer_type": "yes/no" if q.startswith("Is") else "other",
                 "question_id": qid} for qid, (n, q, a) in qs.items()]}))


GQA = {"train": {"02930152": ("2354786", "Is the sky dark?", "yes", "verifyAttr")},
       "val": {"00000001": ("2370799", "What is on the table?", "cup", "relO")},
       "test": {"20968379": ("n288870", "Who is wearing a hat?", "man", "relS")}}


def _write_gqa(raw):
    (raw / "images").mkdir(parents=True)
    names = {"train": "train_balanced_questions.json", "val": "val_balanced_questions.json",
             "test": "testdev_balanced_questions.json"}
    for split, qs in GQA.items():
        (raw / names[split]).write_text(json.dumps({qid: {
            "semantic": [], "entailed": [], "equivalent": [qid], "question": q, "imageId": img, "isBalanced": True,
            "groups": {"global": None, "local": "x"}, "answer": a, "semanticStr": "", "annotations": {},
            "types": {"detailed": t, "semantic": "attr", "structural": "verify"}, "fullAnswer": a}
            for qid, (img, q, a, t) in qs.items()}))
        for img, *_ in qs.values():
            (raw / "images" / f"{img}.jpg").write_bytes(_jpeg((0, 100, 0)))


NLVR2 = [("train", "train-10171-0-0", "There are two dogs.", "True", "23"),
         ("train", "train-10171-0-1", "There is one dog.", "False", "23"),
         ("val", "dev-850-0-0", "A bird is flying.", "False", None),
         ("test", "test1-1-2-3", "Both images show cups.", "True", None)]


def _write_nlvr2(raw):
    files = {"train": "train.json", "val": "dev.json", "test": "test1.json"}
    lines = {s: [] for s in files}
    for split, ident, sent, label, directory in NLVR2:
        ex = {"validation": {}, "sentence": sent, "left_url": "http://x/l.jpg", "writer": "w", "label": label,
              "right_url": "http://x/r.jpg", "synset": "dog", "query": "dogs", "identifier": ident, "extra_validations": {}}
        if directory:
            ex["directory"] = directory
        lines[split].append(json.dumps(ex))
        folder = raw / files[split][:-5] / (directory or "")
        folder.mkdir(parents=True, exist_ok=True)
        base = ident.rsplit("-", 1)[0]
        for side in (0, 1):
            (folder / f"{base}-img{side}.png").write_bytes(_jpeg((0, 0, 50 * side), "PNG"))
    for split, name in files.items():
        (raw / name).write_text("\n".join(lines[split]) + "\n")


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    _write_coco(root / "coco2014")
    _write_vqa(root / "vqav2")
    _write_gqa(root / "gqa")
    _write_nlvr2(root / "nlvr2")
    return root


@pytest.fixture(scope="module")
def converted(raw, tmp_path_factory):
    out = tmp_path_factory.mktemp("vl")
    counts = convert({s: raw / s for s in ("coco2014", "vqav2", "gqa", "nlvr2")}, out, vqa_vocab_size=3)
    return out, counts


def test_karpathy_captions_and_splits(converted):
    out, _ = converted
    caps = read_table(table_path(out, "captions"), "captions").to_pylist()
    assert [(r["image_id"], r["split"]) for r in caps] == [
        ("coco/COCO_train2014_000000000009", "train"), ("coco/COCO_val2014_000000000042", "train"),  # restval → train
        ("coco/COCO_val2014_000000000073", "val"), ("coco/COCO_val2014_000000000074", "test")]
    assert caps[0]["captions"] == [f"A photo number {j} of 9." for j in range(5)]


def test_vqa_rows_splits_and_vocab(converted):
    out, counts = converted
    vqa = {r["question_id"]: r for r in read_table(table_path(out, "vqa"), "vqa").to_pylist()}
    # 902 (train, no answer in the 3-answer vocabulary) is dropped; 7401 (test) is kept
    assert sorted(vqa) == ["4201", "7301", "7401", "901"] and counts["vqa_dropped_no_label"] == 1
    assert vqa["4201"]["image_id"] == "coco/COCO_val2014_000000000042" and vqa["4201"]["split"] == "train"
    assert vqa["7301"]["split"] == "val" and vqa["7401"]["split"] == "test"
    assert vqa["901"]["answers"] == ["yes"] * 7 + ["no"] * 3
    assert vqa["901"]["question_type"] == "is it" and vqa["901"]["answer_type"] == "yes/no"
    # vocabulary from train answers (901, 902, 4201): yes 9, 2 (with "two" → "2") 7, no 3
    vocab = json.loads((out / "vqa_vocab.json").read_text())["answers"]
    assert vocab == ["yes", "2", "no"]


def test_vqa_soft_scores():
    label_of = {"yes": 0, "2": 1, "no": 2}
    # "two" normalises to "2": 4 + 3 = 7 annotators → 1.0; "3" is out of vocabulary; "yes" 2 → 0.6
    assert answer_targets(["2"] * 4 + ["two"] * 3 + ["3"] + ["yes"] * 2, label_of) == ([0, 1], [0.6, 1.0])
    assert answer_targets(["no"] * 9 + ["yes"], label_of) == ([0, 2], [0.3, 1.0])
    assert answer_targets(["x"] * 2 + ["b"] * 3 + ["no"] * 5, {"x": 0, "b": 1}) == ([0, 1], [0.6, 0.9])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.sampled_from(["yes", "no", "2", "red", "blue"]), min_size=10, max_size=10))
def test_soft_scores_follow_annotator_counts(answers):
    vocab = ["yes", "no", "2", "red", "blue"]
    labels, scores = answer_targets(answers, {a: i for i, a in enumerate(vocab)})
    for label, score in zip(labels, scores):
        assert score == {1: 0.3, 2: 0.6, 3: 0.9}.get(answers.count(vocab[label]), 1.0)
    assert {vocab[label] for label in labels} == set(answers)


def test_gqa_rows(converted):
    out, _ = converted
    gqa = read_table(table_path(out, "gqa"), "gqa").to_pylist()
    assert [(r["question_id"], r["image_id"], r["split"], r["answer"], r["question_type"]) for r in gqa] == [
        ("02930152", "gqa/2354786", "train", "yes", "verifyAttr"), ("00000001", "gqa/2370799", "val", "cup", "relO"),
        ("20968379", "gqa/n288870", "test", "man", "relS")]


def test_nlvr2_rows(converted):
    out, _ = converted
    rows = read_table(table_path(out, "nlvr2"), "nlvr2").to_pylist()
    assert [(r["pair_id"], r["left_image_id"], r["right_image_id"], r["split"], r["label"]) for r in rows] == [
        ("train-10171-0-0", "nlvr2/train-10171-0-img0", "nlvr2/train-10171-0-img1", "train", True),
        ("train-10171-0-1", "nlvr2/train-10171-0-img0", "nlvr2/train-10171-0-img1", "train", False),
        ("dev-850-0-0", "nlvr2/dev-850-0-img0", "nlvr2/dev-850-0-img1", "val", False),
        ("test1-1-2-3", "nlvr2/test1-1-2-img0", "nlvr2/test1-1-2-img1", "test", True)]


def test_images_stored_once_as_encoded_bytes(converted, raw):
    out, counts = converted
    images = read_table(table_path(out, "images"), "images").to_pylist()
    ids = [r["image_id"] for r in images]
    assert len(ids) == len(set(ids)) == counts["images"] == 4 + 3 + 6  # COCO, GQA, 3 NLVR2 pairs × 2
    by_id = {r["image_id"]: r for r in images}
    coco = "COCO_val2014_000000000073"
    assert by_id[f"coco/{coco}"]["image"] == (raw / "coco2014" / "val2014" / f"{coco}.jpg").read_bytes()
    assert by_id[f"coco/{coco}"]["split"] == "val"
    assert by_id["nlvr2/train-10171-0-img1"]["image"].startswith(b"\x89PNG")
    assert by_id["gqa/n288870"]["split"] == "test"


FLICKR30K = [("1000092795.jpg", "train"), ("2354786.jpg", "val"), ("1001773457.jpg", "test")]  # 2354786: GQA's too


def _write_flickr30k(raw):
    (raw / "flickr30k-images").mkdir(parents=True)
    for i, (name, _) in enumerate(FLICKR30K):
        (raw / "flickr30k-images" / name).write_bytes(_jpeg((1, 2, 3 + i)))
    (raw / "dataset_flickr30k.json").write_text(json.dumps({"dataset": "flickr30k", "images": [
        {"filename": n, "imgid": i, "split": s, "sentids": [0], "sentences": [{"raw": f"cap {i}", "tokens": []}]}
        for i, (n, s) in enumerate(FLICKR30K)]}))


def test_flickr30k_karpathy(tmp_path):
    raw = tmp_path / "f30k"
    _write_flickr30k(raw)
    counts = convert({"flickr30k": raw}, tmp_path / "out")
    assert counts == {"images": 3, "captions": 3, "vqa": 0, "gqa": 0, "nlvr2": 0}
    caps = read_table(table_path(tmp_path / "out", "captions"), "captions").to_pylist()
    assert [(r["image_id"], r["split"], r["captions"]) for r in caps] == [
        ("flickr30k/1000092795", "train", ["cap 0"]), ("flickr30k/2354786", "val", ["cap 1"]),
        ("flickr30k/1001773457", "test", ["cap 2"])]


def test_equal_stems_of_two_sources_keep_their_own_images(raw, tmp_path):
    """Flickr30k and GQA both name an image 2354786: each dataset's rows get their own bytes."""
    _write_flickr30k(tmp_path / "f30k")
    out = tmp_path / "out"
    convert({"flickr30k": tmp_path / "f30k", "gqa": raw / "gqa"}, out)
    images = {r["image_id"]: r for r in read_table(table_path(out, "images"), "images").to_pylist()}
    flickr = (tmp_path / "f30k" / "flickr30k-images" / "2354786.jpg").read_bytes()
    gqa = (raw / "gqa" / "images" / "2354786.jpg").read_bytes()
    assert flickr != gqa
    assert images["flickr30k/2354786"]["image"] == flickr and images["flickr30k/2354786"]["split"] == "val"
    assert images["gqa/2354786"]["image"] == gqa and images["gqa/2354786"]["split"] == "train"
    caps = read_table(table_path(out, "captions"), "captions").to_pylist()
    questions = read_table(table_path(out, "gqa"), "gqa").to_pylist()
    assert images[caps[1]["image_id"]]["image"] == flickr  # the caption row's image is Flickr30k's
    assert images[questions[0]["image_id"]]["image"] == gqa  # the GQA question's image is GQA's


def test_an_image_twice_in_one_source_is_an_error_naming_both(tmp_path):
    gqa = tmp_path / "gqa"
    _write_gqa(gqa)
    (gqa / "images" / "more").mkdir()
    (gqa / "images" / "more" / "2370799.png").write_bytes(_jpeg((9, 9, 9), "PNG"))
    with pytest.raises(ConvertError, match=r"2370799\.(jpg|png): image 'gqa/2370799' is also .*2370799\.(jpg|png)"):
        convert({"gqa": gqa}, tmp_path / "out")
    assert not (tmp_path / "out" / "images.arrow").exists()


def test_bad_inputs_name_the_file(raw, tmp_path):
    with pytest.raises(ConvertError, match="vqav2 needs coco2014"):
        convert({"vqav2": raw / "vqav2"}, tmp_path / "o")
    with pytest.raises(ConvertError, match="unknown source 'vg'"):
        convert({"vg": raw}, tmp_path / "o")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConvertError, match=r"empty: no train_balanced_questions\.json"):
        convert({"gqa": empty}, tmp_path / "o")
    bad = tmp_path / "dataset_coco.json"
    bad.write_text(json.dumps({"images": [{"filename": "x.jpg", "split": "dev", "sentences": []}]}))
    with pytest.raises(ConvertError, match="x.jpg: unknown Karpathy split 'dev'"):
        read_karpathy(bad, "coco2014")
    nl = tmp_path / "nl"
    nl.mkdir()
    for name in ("train.json", "dev.json", "test1.json"):
        (nl / name).write_text('{"identifier": "a-1-0-0", "sentence": "s", "label": "maybe"}\n')
    with pytest.raises(ConvertError, match=r"train\.json:1: label 'maybe'"):
        convert({"nlvr2": nl}, tmp_path / "o")
    missing_img = tmp_path / "gq"
    _write_gqa(missing_img)
    (missing_img / "images" / "n288870.jpg").unlink()
    with pytest.raises(ConvertError, match="no image file for image_id 'gqa/n288870'"):
        convert({"gqa": missing_img}, tmp_path / "o2")
    assert not (tmp_path / "o2" / "images.arrow").exists()


def test_answer_vocab_counts_train_only(converted):
    out, _ = converted
    vqa = read_table(table_path(out, "vqa"), "vqa")
    assert answer_vocab(vqa, 2, split="val") == ["no", "yes"]
