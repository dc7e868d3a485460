"""NLVR2 consistency as the official script computes it (lil-lab/nlvr, nlvr2/eval/metrics.py):
examples are grouped by their identifier with the third part (the image pair) emptied, and a
sentence counts when every one of its examples is right."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vltune.evaluate.metrics import nlvr2_consistency_if_identified
from vltune.evaluate.metrics import binary_accuracy, nlvr2_consistency, nlvr2_sentence_key


def _official_precision_and_consistency(labelled, predictions):
    """The official script's two numbers, restated: ``labelled`` are {"identifier", "label"}
    records with "True"/"False" labels, ``predictions`` maps identifier -> "true"/"false"."""
    correct, consistent = 0, {}
    for ex in labelled:
        parts = ex["identifier"].split("-")
        parts[2] = ""
        sentence = "-".join(parts)
        consistent.setdefault(sentence, True)
        if predictions[ex["identifier"]].lower() == ex["label"].lower():
            correct += 1
        else:
            consistent[sentence] = False
    return correct / len(labelled), sum(consistent.values()) / len(consistent)


def test_sentence_key_empties_the_image_pair_part():
    assert nlvr2_sentence_key("dev-850-2-0") == "dev-850--0"
    # the two sentences written for one image set are different sentences
    assert nlvr2_sentence_key("dev-850-2-0") != nlvr2_sentence_key("dev-850-2-1")


def test_consistency_hand_computed():
    ids = ["dev-1-0-0", "dev-1-1-0", "dev-1-2-0", "dev-1-3-0",  # sentence dev-1--0: 4 pairs
           "dev-1-0-1", "dev-1-1-1",                              # sentence dev-1--1: 2 pairs
           "test1-7-0-0"]                                         # sentence test1-7--0: 1 pair
    labels = [True, False, True, True, False, False, True]
    preds = [True, False, False, True, False, False, True]       # one miss, in dev-1--0
    # accuracy 6/7; consistent sentences: dev-1--1 and test1-7--0, 2 of 3
    assert binary_accuracy(preds, labels) == pytest.approx(100 * 6 / 7)
    assert nlvr2_consistency(preds, labels, ids) == pytest.approx(100 * 2 / 3)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 1), st.booleans(), st.booleans()),
                min_size=1, max_size=30, unique_by=lambda t: t[:3]))
def test_accuracy_and_consistency_equal_the_official_script_restated(rows):
    ids = [f"dev-{s}-{p}-{k}" for s, p, k, _, _ in rows]
    labels = [y for *_, y, _ in rows]
    preds = [p for *_, p in rows]
    labelled = [{"identifier": i, "label": str(y)} for i, y in zip(ids, labels)]
    precision, consistency = _official_precision_and_consistency(
        labelled, {i: str(p).lower() for i, p in zip(ids, preds)})
    assert binary_accuracy(preds, labels) == pytest.approx(100 * precision)
    assert nlvr2_consistency(preds, labels, ids) == pytest.approx(100 * consistency)


def test_identifier_not_of_the_nlvr2_form_is_named():
    with pytest.raises(ValueError, match=r"identifier 'shapes_val_pair_000001' is not of the NLVR2 form "
                                         r"split-set_id-pair_id-sentence_id"):
        nlvr2_consistency([True], [True], ["shapes_val_pair_000001"])
    with pytest.raises(ValueError, match="2 predictions but 1 identifiers"):
        nlvr2_consistency([True, False], [True, False], ["dev-1-0-0"])


def test_evaluation_reports_consistency_only_for_nlvr2_identifiers():
    assert nlvr2_consistency_if_identified([True, False], [True, True], ["dev-3-0-0", "dev-3-1-0"]) == {"nlvr2_consistency": 0.0}
    # ids of the synthetic world carry no sentence grouping: no consistency, rather than a wrong one
    assert nlvr2_consistency_if_identified([True], [True], ["shapes_val_pair_000001"]) == {}
