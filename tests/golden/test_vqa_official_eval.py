"""VQA accuracy equals the official evaluation's, recorded from GT-Vision-Lab/VQA's own
``vqaEval.py`` (commit a013f00) on 1,500 VQA v2-shaped questions: ten answer records each
(``answer``, ``answer_confidence``, ``answer_id``), 439 of them unanimous, answers and predictions
drawn from strings the normalisation changes (capitals, punctuation, digits as words, articles,
contractions, newlines and tabs, over 32 periods)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vltune.evaluate.vqa import vqa_accuracy, vqa_score

GOLDEN = json.loads((Path(__file__).parent / "vqa_v2_official_eval.json").read_text())


def test_every_question_scores_what_the_official_script_gave_it():
    wrong = [(c["question_id"], c["prediction"], c["answers"], vqa_score(c["prediction"], c["answers"]),
              c["official_accuracy"]) for c in GOLDEN["cases"]
             if abs(vqa_score(c["prediction"], c["answers"]) - c["official_accuracy"]) > 1e-9]
    assert not wrong, f"{len(wrong)} questions differ, e.g. {wrong[:3]}"


def test_the_overall_accuracy_is_the_official_one():
    cases = GOLDEN["cases"]
    acc = vqa_accuracy([c["prediction"] for c in cases], [c["answers"] for c in cases])
    assert acc == pytest.approx(100 * sum(c["official_accuracy"] for c in cases) / len(cases), abs=1e-9)
    assert round(acc, 2) == GOLDEN["overall_rounded"]


def test_the_recording_covers_the_cases_where_official_and_always_normalised_differ():
    """The golden set is only a check if it holds questions on which the always-normalise variant
    scores differently (the unanimous answers compared raw)."""
    differ = [c for c in GOLDEN["cases"]
              if abs(vqa_score(c["prediction"], c["answers"], normalize="always") - c["official_accuracy"]) > 1e-9]
    unanimous = [c for c in differ if len(set(c["answers"])) == 1]
    assert len(differ) >= 50 and len(unanimous) >= 20
