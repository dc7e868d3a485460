"""Official VQA accuracy: normalisation, 10-answer leave-one-out score, soft targets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vltune.evaluate.vqa import (
    CONTRACTIONS,
    normalize_answer,
    soft_score_from_count,
    soft_scores,
    vqa_accuracy,
    vqa_score,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        # lower-case, whitespace, tabs and newlines
        ("  Yes\n", "yes"),
        ("The  Red\tcar", "red car"),
        # number words -> digits ("none" too, as in the official manualMap)
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),
        ("Two dogs.", "2 dogs"),
        # articles dropped
        ("a cat", "cat"),
        ("an apple", "apple"),
        ("the the", ""),
        # contractions (after lower-casing)
        ("dont", "don't"),
        ("Isnt", "isn't"),
        ("whats up", "what's up"),
        ("somebody'd", "somebodyd"),  # an oddity of the official table, kept
        # punctuation replaced by a space when it touches no space ...
        ("t-shirt", "t shirt"),
        ("red/blue", "red blue"),
        ("hello!", "hello"),
        # ... deleted when it touches a space
        ("yes, sir", "yes sir"),
        ("left - hand", "left hand"),
        # ... and deleted everywhere when the text has a comma between digits
        ("1,000", "1000"),
        ("1,000-2", "10002"),
        # periods: deleted unless a digit follows
        ("3.5", "3.5"),
        ("2.0.", "2.0"),
        ("u.s.", "us"),
        # apostrophes are not punctuation here
        ("man's", "man's"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_contractions_table_is_complete():
    # The official table has 120 entries; spot-check a few that are easy to drop.
    assert len(CONTRACTIONS) == 120
    for k, v in {"yall'd've": "y'all'd've", "'ows'at": "'ow's'at", "oclock": "o'clock",
                 "wouldn'tve": "wouldn't've", "Im": "I'm"}.items():
        assert CONTRACTIONS[k] == v


# Leave-one-out by hand, c = number of the 10 human answers equal to the prediction. Leaving out
# a matching answer leaves c-1 matches, leaving out another one leaves c:
#   c=0: 0
#   c=1: (1 * min(1, 0/3) + 9 * min(1, 1/3)) / 10 = 3/10 = 0.3
#   c=2: (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10 = 0.6
#   c=3: (3 * 2/3 + 7 * 1) / 10 = (2 + 7) / 10 = 0.9
#   c=4: (4 * min(1, 3/3) + 6 * 1) / 10 = 1.0, and 1.0 for every c >= 4.
@pytest.mark.parametrize(
    "count, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)]
)
def test_vqa_score_leave_one_out(count, expected):
    answers = ["yes"] * count + ["no"] * (10 - count)
    assert vqa_score("yes", answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_score_normalises_prediction_and_answers():
    # 3 annotators wrote "Two", 7 "three"; the prediction "2." is the same answer.
    answers = ["Two"] * 3 + ["three"] * 7
    assert vqa_score("2.", answers) == pytest.approx(0.9)
    assert vqa_score("the 3", answers) == pytest.approx(1.0)
    assert vqa_score("four", answers) == 0.0


def test_vqa_accuracy_is_mean_in_percent():
    answers = [["yes"] * 10, ["no"] * 9 + ["yes"], ["red"] * 10]
    # 1.0, 0.3, 0.0 -> mean 0.4333 -> 43.33 %
    assert vqa_accuracy(["yes", "yes", "blue"], answers) == pytest.approx(100 * 1.3 / 3)
    # both sides normalised: "Two" x 10 vs "2"; "the dog" x 4 vs "Dog!"
    assert vqa_accuracy(["2", "Dog!"], [["Two"] * 10, ["the dog"] * 4 + ["cat"] * 6]) == 100.0


def test_vqa_accuracy_errors():
    ten = ["yes"] * 10
    with pytest.raises(ValueError, match="2 predictions but 1"):
        vqa_accuracy(["a", "b"], [ten])
    with pytest.raises(ValueError, match="empty"):
        vqa_accuracy([], [])
    with pytest.raises(ValueError, match="index 1.*exactly 10.*got 9"):
        vqa_accuracy(["a", "b"], [ten, ["yes"] * 9])
    with pytest.raises(ValueError, match="exactly 10"):
        vqa_score("yes", ["yes"] * 11)
    with pytest.raises(TypeError):
        vqa_accuracy([None], [ten])


def test_soft_scores_table():
    answers = ["Yes"] * 4 + ["no"] * 3 + ["two", "2", "maybe"]
    assert soft_scores(answers) == {"yes": 1.0, "no": 0.9, "2": 0.6, "maybe": 0.3}
    assert [soft_score_from_count(c) for c in range(6)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0]
    with pytest.raises(ValueError):
        soft_scores([])


@settings(max_examples=200, deadline=None)
@given(
    answers=st.lists(st.sampled_from(["yes", "no", "two", "2", "red", "a red", "blue."]),
                     min_size=10, max_size=10),
    pred=st.sampled_from(["yes", "2", "red", "blue", "green"]),
)
def test_soft_scores_equal_official_score_for_ten_answers(answers, pred):
    # The §5.3 training targets are exactly the official accuracy of predicting that answer.
    targets = soft_scores(answers)
    assert vqa_score(pred, answers) == pytest.approx(targets.get(normalize_answer(pred), 0.0))
