"""Official VQA accuracy (VQA v2 vqaEval.py): normalisation, when it applies, the 10-answer
leave-one-out score, the named always-normalise variant, soft targets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vltune.data.answers import CONTRACTIONS, normalize_answer, soft_score_from_count, soft_scores
from vltune.evaluate.vqa import vqa_accuracy, vqa_score


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
    # ten identical "Two" are compared raw with "2" (0.0); "the dog" x 4 and "cat" x 6 differ, so
    # both sides are normalised and "Dog!" matches "the dog" four times (1.0): 50 %
    assert vqa_accuracy(["2", "Dog!"], [["Two"] * 10, ["the dog"] * 4 + ["cat"] * 6]) == 50.0


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
def test_soft_scores_equal_the_score_of_predicting_that_answer(answers, pred):
    # Training targets are the always-normalised score of predicting the answer, and the official
    # score whenever the ten answers are not all identical.
    target = soft_scores(answers).get(normalize_answer(pred), 0.0)
    assert vqa_score(pred, answers, normalize="always") == pytest.approx(target)
    if len(set(answers)) > 1:
        assert vqa_score(pred, answers) == pytest.approx(target)


# --- the official rules, restated independently of vltune.data.answers -------------------------------
# From the VQA v2 evaluation (GT-Vision-Lab/VQA, PythonEvaluationTools/vqaEvaluation/vqaEval.py):
# the contractions table as key>value pairs, the number words, the articles, the punctuation list.
_OFFICIAL_CONTRACTIONS = dict(pair.split(">") for pair in """
aint>ain't arent>aren't cant>can't couldve>could've couldnt>couldn't couldn'tve>couldn't've
couldnt've>couldn't've didnt>didn't doesnt>doesn't dont>don't hadnt>hadn't hadnt've>hadn't've
hadn'tve>hadn't've hasnt>hasn't havent>haven't hed>he'd hed've>he'd've he'dve>he'd've hes>he's
howd>how'd howll>how'll hows>how's Id've>I'd've I'dve>I'd've Im>I'm Ive>I've isnt>isn't itd>it'd
itd've>it'd've it'dve>it'd've itll>it'll let's>let's maam>ma'am mightnt>mightn't
mightnt've>mightn't've mightn'tve>mightn't've mightve>might've mustnt>mustn't mustve>must've
neednt>needn't notve>not've oclock>o'clock oughtnt>oughtn't ow's'at>'ow's'at 'ows'at>'ow's'at
'ow'sat>'ow's'at shant>shan't shed've>she'd've she'dve>she'd've she's>she's shouldve>should've
shouldnt>shouldn't shouldnt've>shouldn't've shouldn'tve>shouldn't've somebody'd>somebodyd
somebodyd've>somebody'd've somebody'dve>somebody'd've somebodyll>somebody'll
somebodys>somebody's someoned>someone'd someoned've>someone'd've someone'dve>someone'd've
someonell>someone'll someones>someone's somethingd>something'd somethingd've>something'd've
something'dve>something'd've somethingll>something'll thats>that's thered>there'd
thered've>there'd've there'dve>there'd've therere>there're theres>there's theyd>they'd
theyd've>they'd've they'dve>they'd've theyll>they'll theyre>they're theyve>they've twas>'twas
wasnt>wasn't wed've>we'd've we'dve>we'd've weve>we've werent>weren't whatll>what'll
whatre>what're whats>what's whatve>what've whens>when's whered>where'd wheres>where's
whereve>where've whod>who'd whod've>who'd've who'dve>who'd've wholl>who'll whos>who's
whove>who've whyll>why'll whyre>why're whys>why's wont>won't wouldve>would've wouldnt>wouldn't
wouldnt've>wouldn't've wouldn'tve>wouldn't've yall>y'all yall'll>y'all'll y'allll>y'all'll
yall'd've>y'all'd've y'alld've>y'all'd've y'all'dve>y'all'd've youd>you'd youd've>you'd've
you'dve>you'd've youll>you'll youre>you're youve>you've
""".split())
_OFFICIAL_NUMBERS = dict(zip("none zero one two three four five six seven eight nine ten".split(),
                             "0 0 1 2 3 4 5 6 7 8 9 10".split()))
_OFFICIAL_ARTICLES = ("a", "an", "the")
_OFFICIAL_PUNCT = ';/[]"{}()=+\\_-><@`,?!'
_DIGITS = "0123456789"


def _official_punctuation(text: str) -> str:
    # processPunctuation: a mark is deleted when it touches a space in the input, or everywhere
    # when the input has a comma between two digits; replaced by a space otherwise.
    digit_comma = any(text[i] in _DIGITS and text[i + 1] == "," and text[i + 2] in _DIGITS
                      for i in range(len(text) - 2))
    out = text
    for p in _OFFICIAL_PUNCT:
        out = out.replace(p, "" if digit_comma or p + " " in text or " " + p in text else " ")
    # periodStrip: a period not followed by a digit is deleted; re.UNICODE (32) sits in the
    # `count` slot of the official sub() call, so only the first 32 such periods go.
    kept, deleted = [], 0
    for i, ch in enumerate(out):
        if ch == "." and deleted < 32 and not (i + 1 < len(out) and out[i + 1] in _DIGITS):
            deleted += 1
            continue
        kept.append(ch)
    return "".join(kept)


def _official_digit_article(text: str) -> str:
    words = [_OFFICIAL_NUMBERS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in _OFFICIAL_ARTICLES]
    return " ".join(_OFFICIAL_CONTRACTIONS.get(w, w) for w in words)


def _official_clean(s: str) -> str:
    return s.replace("\n", " ").replace("\t", " ").strip()


def _official_evaluate_question(pred: str, record: dict) -> float:
    # VQAEval.evaluate for one question, on answer records as in the annotation file.
    gts = [dict(a, answer=_official_clean(a["answer"])) for a in record["answers"]]
    res = _official_clean(pred)
    if len({a["answer"] for a in gts}) > 1:
        gts = [dict(a, answer=_official_digit_article(_official_punctuation(a["answer"]))) for a in gts]
        res = _official_digit_article(_official_punctuation(res))
    accs = []
    for left_out in gts:
        others = [a for a in gts if a != left_out]  # records differ by answer_id
        accs.append(min(1, len([a for a in others if a["answer"] == res]) / 3))
    return sum(accs) / len(accs)


def test_restated_contractions_table_is_the_one_in_vltune():
    assert len(_OFFICIAL_CONTRACTIONS) == 120
    assert CONTRACTIONS == _OFFICIAL_CONTRACTIONS


# Text built from what the rules react to: digits, every punctuation mark of the list and the
# ones outside it (. ' :), articles, number words, contractions, capitals, spaces, tabs, newlines.
_PIECES = st.one_of(
    st.sampled_from(list(_OFFICIAL_PUNCT + ".':")),
    st.sampled_from(list(_DIGITS)),
    st.sampled_from([" ", "  ", "\t", "\n"]),
    st.sampled_from(["a", "an", "the", "A", "The", "AN", "x", "T-shirt", "cat"]),
    st.sampled_from(["none", "zero", "One", "two", "TEN", "eleven"]),
    st.sampled_from(["dont", "Dont", "isnt", "Im", "Ive", "ow's'at", "'ows'at", "yall'd've", "somebody'd",
                     "let's", "whats", "wont", "oclock"]),
    st.sampled_from(["1,000", "3.5", "u.s.", "2.0.", "...", "1.", ".5"]),
)
_TEXT = st.lists(_PIECES, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=_TEXT)
def test_normalize_answer_equals_the_official_rules_restated(text):
    assert normalize_answer(text) == _official_digit_article(_official_punctuation(_official_clean(text)))


def test_only_the_first_32_periods_are_stripped_as_in_the_official_call():
    # 40 periods, none before a digit: the official sub() deletes 32 of them and keeps 8.
    assert normalize_answer("x" + "." * 40) == "x" + "." * 8
    assert normalize_answer("x" + "." * 32) == "x"


@pytest.mark.parametrize("raw, normalised", [
    # answers as they stand in VQA v2's annotations; none of them is in normalised form
    ("black, white", "black white"),
    ("red/yellow", "red yellow"),
    ("leaf-hat", "leaf hat"),
    ("yes, just one", "yes just 1"),
    ("Two", "2"),
])
def test_vqa_v2_annotation_answers_are_not_already_normalised(raw, normalised):
    assert normalize_answer(raw) == normalised != raw


def _record(answers, qid=262148000):
    """An annotation record shaped like VQA v2's (v2_mscoco_val2014_annotations.json)."""
    return {"question_id": qid, "image_id": qid // 1000, "question_type": "what color is the",
            "answer_type": "other", "multiple_choice_answer": answers[0],
            "answers": [{"answer": a, "answer_confidence": "yes" if i % 3 else "maybe", "answer_id": i + 1}
                        for i, a in enumerate(answers)]}


# (prediction, the ten answers, official accuracy worked out by hand)
_HAND_CASES = [
    # ten identical answers: compared as stripped strings, no normalisation, case-sensitive
    ("Orange", ["orange"] * 10, 0.0),            # "Orange" != "orange"
    (" orange\n", ["orange"] * 10, 1.0),         # stripped: "orange", 10 matches
    ("two", ["2"] * 10, 0.0),                    # "two" is not turned into "2" here
    ("2", ["2"] * 10, 1.0),
    # answers differ: everything normalised
    # "black, white" -> "black white" (", " touches a space), "black and white" stays, "white";
    # "Black/White" -> "black white" ("/" touches no space, becomes one): 3 matches -> 0.9
    ("Black/White", ["black, white"] * 3 + ["black and white"] * 5 + ["white"] * 2, 0.9),
    ("black and white", ["black, white"] * 3 + ["black and white"] * 5 + ["white"] * 2, 1.0),
    # "red/yellow" -> "red yellow" twice: 2 matches -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    ("Red Yellow", ["red/yellow"] * 2 + ["red and yellow"] + ["yellow"] * 7, 0.6),
    # "One" -> "1"; "yes, just one" -> "yes just 1" does not match; one "1": 0.3
    ("One", ["yes, just one"] + ["yes"] * 8 + ["1"], 0.3),
    # "Yes!" -> "yes" ("!" touches no space, becomes one, then split away): 8 matches -> 1.0
    ("Yes!", ["yes, just one"] + ["yes"] * 8 + ["1"], 1.0),
    # "leaf-hat" -> "leaf hat" four times: 4 matches -> 1.0
    ("Leaf hat", ["leaf-hat"] * 4 + ["hat"] * 6, 1.0),
    # "Two." -> "2" (period before no digit deleted, number word): 9 matches of "2" -> 1.0
    ("Two.", ["2"] * 9 + ["3"], 1.0),
]


@pytest.mark.parametrize("pred, answers, expected", _HAND_CASES)
def test_vqa_score_on_annotation_records_matches_hand_computed_official_accuracy(pred, answers, expected):
    rec = _record(answers)
    ten = [a["answer"] for a in rec["answers"]]
    assert vqa_score(pred, ten) == pytest.approx(expected, abs=1e-12)
    assert _official_evaluate_question(pred, rec) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_on_annotation_records_is_the_mean_in_percent():
    preds = [c[0] for c in _HAND_CASES]
    answers = [c[1] for c in _HAND_CASES]
    # 0 + 1 + 0 + 1 + .9 + 1 + .6 + .3 + 1 + 1 + 1 = 7.8 over 11 questions
    assert vqa_accuracy(preds, answers) == pytest.approx(100 * 7.8 / 11)


def test_always_normalise_is_a_named_non_official_variant():
    # with ten identical answers only the variant normalises: "Orange" and "two" then match
    assert vqa_score("Orange", ["orange"] * 10, normalize="always") == 1.0
    assert vqa_score("two", ["2"] * 10, normalize="always") == 1.0
    assert vqa_accuracy(["Orange", "two"], [["orange"] * 10, ["2"] * 10], normalize="always") == 100.0
    assert vqa_accuracy(["Orange", "two"], [["orange"] * 10, ["2"] * 10]) == 0.0
    with pytest.raises(ValueError, match=r"VQA normalize='sometimes': expected one of official, always"):
        vqa_accuracy(["x"], [["x"] * 10], normalize="sometimes")


@settings(max_examples=200, deadline=None)
@given(answers=st.lists(st.sampled_from(["yes", "Yes", "no", "two", "2", "red", "a red", "blue.", "t-shirt",
                                         "t shirt", "black, white", "black white"]), min_size=10, max_size=10),
       pred=st.sampled_from(["yes", "Yes", "2", "two", "red", "Red!", "blue", "T-Shirt", "black white", " no "]))
def test_vqa_score_equals_the_official_evaluate_loop_restated(answers, pred):
    assert vqa_score(pred, answers) == pytest.approx(_official_evaluate_question(pred, _record(answers)), abs=1e-12)


def test_unknown_vqa_normalize_is_refused_before_any_decoding(tmp_path):
    from vltune.errors import UserError
    from vltune.recipes.encdec.evaluate import evaluate_vl_model

    # no model, no data: the check comes first, so a long decode is never lost to a typo
    with pytest.raises(UserError, match=r"^eval params: vqa_normalize='Always', expected one of official, always$"):
        evaluate_vl_model(None, None, tmp_path, tmp_path, ["vqa"], vqa_normalize="Always")
