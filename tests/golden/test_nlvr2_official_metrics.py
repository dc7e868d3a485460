"""NLVR2 accuracy and consistency equal the official script's, recorded from lil-lab/nlvr's own
``nlvr2/eval/metrics.py`` (commit 18924841a) on 625 examples in 1-4 image pairs per sentence
(dev and test1 identifiers), predictions given to it as CSV in mixed case."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vltune.evaluate.metrics import binary_accuracy, nlvr2_consistency

GOLDEN = json.loads((Path(__file__).parent / "nlvr2_official_metrics.json").read_text())


def test_accuracy_and_consistency_are_the_official_scripts():
    ex = GOLDEN["examples"]
    preds, labels, ids = [e["prediction"] for e in ex], [e["label"] for e in ex], [e["identifier"] for e in ex]
    assert binary_accuracy(preds, labels) == pytest.approx(100 * GOLDEN["accuracy"], abs=1e-9)
    assert nlvr2_consistency(preds, labels, ids) == pytest.approx(100 * GOLDEN["consistency"], abs=1e-9)
    # the recording can tell grouping by sentence from grouping by example or by pair
    assert GOLDEN["consistency"] < GOLDEN["accuracy"] - 0.2
