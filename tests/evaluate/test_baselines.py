"""Majority-answer and constant-caption baselines on tiny hand-made canonical tables."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from vltune.evaluate.baselines import (
    best_constant_caption,
    cider_d_constant,
    compute_baselines,
    majority_baselines,
    select_candidates,
)
from vltune.evaluate.caption import caption_metrics_percent

JUNK = ["pink", "teal", "cyan", "gold", "navy", "lime", "plum"]


def vqa_table() -> pa.Table:
    rows = [
        # train, type "color": 10x "red" on two questions, 3x "blue" on three questions.
        # Annotator counts favour red (20 vs 9) but the mean soft score favours blue
        # (3 x 0.9 = 2.7 vs 2 x 1.0 = 2.0), which is what the official metric rewards.
        ("train", "what color", ["red"] * 10),
        ("train", "what color", ["red"] * 10),
        ("train", "what color", ["blue"] * 3 + JUNK),
        ("train", "what color", ["Blue."] * 3 + JUNK),
        ("train", "what color", ["blue"] * 3 + JUNK),
        # train, type "how many": "two" (normalised "2") everywhere -> overall best (4 x 1.0).
        *[("train", "how many", ["two"] * 10) for _ in range(4)],
        # test
        ("test", "what color", ["blue"] * 4 + ["pink"] * 6),   # blue: 1.0, red: 0, 2: 0
        ("test", "how many", ["2"] * 10),                      # 2: 1.0
        ("test", "what shape", ["circle"] * 7 + ["2"] * 3),    # unseen type -> "2": 0.9
    ]
    n = len(rows)
    return pa.table(
        {
            "question_id": list(range(n)),
            "image_id": [f"img{i}" for i in range(n)],
            "split": [r[0] for r in rows],
            "question": ["q?"] * n,
            "question_type": [r[1] for r in rows],
            "answer_type": ["other"] * n,
            "answers": pa.array([r[2] for r in rows], type=pa.list_(pa.string())),
        }
    )


def gqa_table() -> pa.Table:
    rows = [
        ("train", "color", "Red"), ("train", "color", "red "), ("train", "color", "blue"),
        ("train", "shape", "square"), ("train", "shape", "square"), ("train", "shape", "circle"),
        # overall: red 2, square 2 (tie -> "red", the smaller string), blue 1, circle 1
        ("test", "color", "RED"), ("test", "shape", "square"), ("test", "size", "large"),
        ("test", "size", "red"),
    ]
    n = len(rows)
    return pa.table(
        {
            "question_id": [f"g{i}" for i in range(n)],
            "image_id": [f"img{i}" for i in range(n)],
            "split": [r[0] for r in rows],
            "question": ["q?"] * n,
            "question_type": [r[1] for r in rows],
            "answer": [r[2] for r in rows],
        }
    )


def nlvr2_table() -> pa.Table:
    split = ["train"] * 3 + ["test"] * 4
    labels = [True, True, False, True, False, False, False]
    n = len(split)
    return pa.table(
        {
            "pair_id": [f"p{i}" for i in range(n)],
            "left_image_id": [f"l{i}" for i in range(n)],
            "right_image_id": [f"r{i}" for i in range(n)],
            "split": split,
            "statement": ["s"] * n,
            "label": pa.array(labels, type=pa.bool_()),
        }
    )


COLOURS = ["red", "blue", "green", "yellow", "pink", "white", "black", "grey"]


def captions_table() -> pa.Table:
    # Train images 0-3 share a consensus caption about a red circle (two spellings, 8 captions in
    # all); train images 4-5 say "a star" in all 10 of theirs, so it is the most frequent
    # training caption but fits only 2 of 6 images. CIDEr's idf zeroes n-grams found in every
    # image, so no caption is shared by all of them.
    rows = []
    for i, c in enumerate(COLOURS):
        split = "train" if i < 6 else "test"
        if i in (4, 5):
            caps = ["a star", "A star.", "a star", "a star!", "a star"]
        else:
            caps = ["A red circle above a square.", "a red circle above a square",
                    f"a {c} square on the left", f"{c} square number {i}", f"the {c} thing"]
        rows.append((f"im{i}", split, caps))
    return pa.table(
        {
            "image_id": [r[0] for r in rows],
            "split": [r[1] for r in rows],
            "captions": pa.array([r[2] for r in rows], type=pa.list_(pa.string())),
        }
    )


def test_majority_baselines_hand_computed():
    rows = majority_baselines(vqa_table(), gqa_table(), nlvr2_table())
    by = {r["method"]: r for r in rows}
    assert set(by) == {"majority_type", "majority_overall"}
    assert set(by["majority_type"]) == {"method", "vqa_accuracy", "gqa_accuracy", "nlvr2_accuracy"}
    # VQA per type: color -> "blue" (1.0), how many -> "2" (1.0), unseen "what shape" -> "2" (0.9)
    assert by["majority_type"]["vqa_accuracy"] == pytest.approx(100 * 2.9 / 3)
    # VQA overall "2": 0 + 1.0 + 0.9
    assert by["majority_overall"]["vqa_accuracy"] == pytest.approx(100 * 1.9 / 3)
    # GQA per type: color -> red (hit "RED"), shape -> square (hit), size unseen -> "red"
    # (overall tie red/square -> "red"): misses "large", hits "red" -> 3/4
    assert by["majority_type"]["gqa_accuracy"] == pytest.approx(75.0)
    # GQA overall "red": hits "RED" and "red" -> 2/4
    assert by["majority_overall"]["gqa_accuracy"] == pytest.approx(50.0)
    # NLVR2: train majority True; test has 1 True of 4
    assert by["majority_type"]["nlvr2_accuracy"] == by["majority_overall"]["nlvr2_accuracy"] == 25.0


def test_majority_baselines_bad_tables():
    match = r"vqa table: no rows with split 'val'.*\['test', 'train'\]"
    with pytest.raises(ValueError, match=match):
        majority_baselines(vqa_table(), gqa_table(), nlvr2_table(), eval_split="val")
    with pytest.raises(ValueError, match="gqa table: missing column.*'answer'"):
        majority_baselines(vqa_table(), gqa_table().drop(["answer"]), nlvr2_table())


def test_select_candidates_is_seeded_and_bounded():
    distinct = [f"c{i}" for i in range(100)]
    a = select_candidates(distinct, 20, np.random.default_rng(5))
    assert a == select_candidates(distinct, 20, np.random.default_rng(5))
    assert len(a) == len(set(a)) == 20
    assert a[:5] == distinct[:5]  # the 20 // 4 most frequent always compete
    assert a[5:] == sorted(a[5:], key=distinct.index)  # frequency order kept (tie-break)
    assert select_candidates(distinct[:3], 20, np.random.default_rng(0)) == distinct[:3]


_WORDS = ["a", "red", "circle", "square", "blue", "left", "of", "the"]
_sentence = st.lists(st.sampled_from(_WORDS), min_size=0, max_size=7).map(" ".join)


@settings(max_examples=40, deadline=None)
# edge cases: single words, an empty candidate, an empty reference (punctuation only)
@example(candidates=["red", "a red circle", ""],
         refs=[["red", "a red circle", ""], ["blue square", "a blue"], ["red red", "circle"]])
@given(
    candidates=st.lists(_sentence, min_size=1, max_size=5),
    refs=st.lists(st.lists(_sentence, min_size=1, max_size=4), min_size=1, max_size=6).filter(
        lambda refs: any(r for image_refs in refs for r in image_refs)  # pycocoevalcap needs one
    ),
)
def test_cider_d_constant_equals_pycocoevalcap(candidates, refs):
    from pycocoevalcap.cider.cider import Cider

    gts = {i: r for i, r in enumerate(refs)}
    expected = [Cider().compute_score(gts, {i: [c] for i in gts})[0] for c in candidates]
    np.testing.assert_allclose(cider_d_constant(candidates, refs), expected, rtol=1e-9, atol=1e-12)


@pytest.fixture(scope="module")
def constant_row():
    return best_constant_caption(captions_table(), max_candidates=50, max_images=50, seed=0)


def test_best_constant_caption_is_the_cider_argmax(constant_row):
    from pycocoevalcap.cider.cider import Cider

    from vltune.evaluate.caption import ptb_tokenize

    table = captions_table()
    splits = table["split"].to_pylist()
    train = [c for c, s in zip(table["captions"].to_pylist(), splits) if s == "train"]
    tok = ptb_tokenize({i: caps for i, caps in enumerate(train)})
    gts = {i: tok[i] for i in range(len(train))}
    distinct = sorted({c for caps in gts.values() for c in caps})
    cider = {c: Cider().compute_score(gts, {i: [c] for i in gts})[0] for c in distinct}
    best = max(cider, key=cider.get)
    assert best == "a red circle above a square"
    assert Counter(c for caps in gts.values() for c in caps).most_common(1)[0][0] == "a star"
    # the shown text is the most frequent spelling of the winning tokenized caption (tie:
    # "A red circle above a square." < "a red circle above a square")
    assert constant_row["caption_text"] == "A red circle above a square."
    assert constant_row["selection_cider_train"] == pytest.approx(100 * cider[best])
    assert constant_row["n_candidates"] == len(distinct)

    test_refs = {
        i: c for i, c, s in zip(table["image_id"].to_pylist(), table["captions"].to_pylist(),
                                table["split"].to_pylist()) if s == "test"
    }
    text = constant_row["caption_text"]
    expected = caption_metrics_percent({i: text for i in test_refs}, test_refs)
    for k, v in expected.items():
        assert constant_row[f"caption_{k}"] == pytest.approx(v)
    assert constant_row["method"] == "constant_caption"


def test_compute_baselines_reads_the_arrow_files(tmp_path, constant_row):
    for name, table in (("vqa", vqa_table()), ("gqa", gqa_table()), ("nlvr2", nlvr2_table()),
                        ("captions", captions_table())):
        with pyarrow.ipc.new_file(tmp_path / f"{name}.arrow", table.schema) as writer:
            writer.write_table(table)
    rows = compute_baselines(tmp_path)
    assert [r["method"] for r in rows] == ["majority_type", "majority_overall", "constant_caption"]
    assert rows[:2] == majority_baselines(vqa_table(), gqa_table(), nlvr2_table())
    # same seed -> same caption and scores (default candidate/image bounds cover this table)
    assert rows[2] == constant_row


def test_compute_baselines_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="vqa.arrow"):
        compute_baselines(tmp_path)
