"""VQA accuracy, following the official VQA evaluation (GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``) as used by VL-T5 / VL-PET's
``VQAEvaluator.evaluate_raw``.

Normalisation (:func:`normalize_answer`) reproduces ``processPunctuation`` and
``processDigitArticle``:

* newlines and tabs become spaces, the answer is stripped;
* each punctuation mark of the official list is *deleted* when it touches a space in the
  input or when the input contains a comma between two digits ("1,000"), and is replaced by
  a space otherwise ("t-shirt" -> "t shirt", "1,000" -> "1000");
* a period not followed by a digit is deleted ("3.5" keeps its period);
* lower-case, split on whitespace, number words zero..ten (and "none") become digits, the
  articles a/an/the are dropped, and the official contractions table is applied word by word.

Score (:func:`vqa_score`): for each of the 10 human answers a_j, ``min(1, #{k != j:
a_k == pred} / 3)``; the question's score is the mean over j (ten leave-one-out subsets).

One deliberate difference: the official ``evaluate`` normalises the prediction and the
ground-truth answers only when the ten answers disagree (with ten identical answers it compares
the raw, merely stripped strings, so "Two" would not match "2"); VL-T5's ``evaluate_raw`` always
normalises the prediction but the answers only for punctuation. Here the prediction and every
answer always get the full normalisation. VQA v2's annotation answers were already normalised
this way when the data set was built, so official numbers are unchanged on real data, and on
synthetic or converted data the comparison is symmetric.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Sequence

__all__ = [
    "CONTRACTIONS",
    "normalize_answer",
    "soft_score_from_count",
    "soft_scores",
    "vqa_accuracy",
    "vqa_score",
]

NUM_ANSWERS = 10

# The official contractions table, reproduced entry for entry (including its oddities: the
# capitalised keys can never match after lower-casing, and "somebody'd" maps to "somebodyd").
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}

# Official "manualMap": number words to digits ("none" counts as zero there too).
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES = frozenset({"a", "an", "the"})
# Official punctuation list; note that "'" and "." are not in it (periods have their own rule).
PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">",
               "<", "@", "`", ",", "?", "!")

_COMMA_BETWEEN_DIGITS = re.compile(r"\d,\d")
# The official pattern "(?!<=\d)(\.)(?!\d)" is a mistyped look-behind; what it does is delete
# every period that is not followed by a digit, which is what this pattern states directly.
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")


def _process_punctuation(text: str) -> str:
    # Both conditions look at the *input* text, as the official code does.
    has_digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if has_digit_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out)


def _process_digit_article(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


@functools.lru_cache(maxsize=1 << 17)
def normalize_answer(ans: str) -> str:
    """Official VQA answer normalisation (see the module docstring); cached, answers repeat."""
    if not isinstance(ans, str):
        raise TypeError(f"VQA answers must be strings, got {type(ans).__name__}: {ans!r}")
    text = ans.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(text))


def _check_answers(answers: Sequence[str], where: str) -> None:
    if isinstance(answers, str) or len(answers) != NUM_ANSWERS:
        n = "a string" if isinstance(answers, str) else f"{len(answers)} answers"
        raise ValueError(
            f"{where}: expected a list of exactly {NUM_ANSWERS} human answers, got {n}"
        )


def vqa_score(pred: str, answers: Sequence[str]) -> float:
    """Official accuracy of one prediction against its 10 human answers, in [0, 1]."""
    _check_answers(answers, "vqa_score")
    return _score_normalized(normalize_answer(pred), [normalize_answer(a) for a in answers])


def _score_normalized(pred: str, answers: list[str]) -> float:
    matches = sum(a == pred for a in answers)
    # Leaving out answer j removes one match exactly when a_j itself matches.
    total = 0.0
    for a in answers:
        total += min(1.0, (matches - (a == pred)) / 3.0)
    return total / len(answers)


def vqa_accuracy(preds: Sequence[str], answers: Sequence[Sequence[str]]) -> float:
    """Mean official VQA accuracy over questions, in percent (0..100)."""
    if len(preds) != len(answers):
        raise ValueError(
            f"vqa_accuracy: {len(preds)} predictions but {len(answers)} answer lists"
        )
    if len(preds) == 0:
        raise ValueError("vqa_accuracy: no questions to evaluate (empty input)")
    total = 0.0
    for i, (pred, ans) in enumerate(zip(preds, answers)):
        _check_answers(ans, f"vqa_accuracy: question at index {i}")
        total += _score_normalized(normalize_answer(pred), [normalize_answer(a) for a in ans])
    return 100.0 * total / len(preds)


# Exact table values (0.3 * 3 would be 0.8999999999999999 in floating point).
_SOFT_SCORE = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9}


def soft_score_from_count(count: int) -> float:
    """Training target for an answer given by ``count`` annotators: 0, .3, .6, .9, then 1."""
    if count < 0:
        raise ValueError(f"annotator count must be >= 0, got {count}")
    return _SOFT_SCORE.get(count, 1.0)


def soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """Soft targets {normalised answer: score} from the human answers (seeds-spec §5.3).

    With 10 answers the score of an answer equals :func:`vqa_score` of predicting it
    (1 -> 0.3, 2 -> 0.6, 3 -> 0.9, >= 4 -> 1.0); answers nobody gave score 0 and are absent.
    """
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError("soft_scores: expected a non-empty list of human answers")
    counts = Counter(normalize_answer(a) for a in answers)
    return {a: soft_score_from_count(c) for a, c in counts.items()}
