"""VQA answers as the official VQA v2 evaluation normalises them (GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``), and the soft training targets built on them.

:func:`normalize_answer` reproduces the official ``processPunctuation`` then ``processDigitArticle``:

* each mark of the official punctuation list is *deleted* when it touches a space in the input
  or when the input contains a comma between two digits ("1,000"), and is replaced by a space
  otherwise ("t-shirt" -> "t shirt"); apostrophes and colons are not in the list;
* periods not followed by a digit are deleted ("3.5" keeps its period), at most 32 of them (the
  official call passes ``re.UNICODE``, 32, in the position of ``count``);
* lower-case, split on whitespace, number words zero..ten (and "none") become digits, the
  articles a/an/the are dropped, and the official contractions table is applied word by word.

:func:`soft_scores` gives the training targets (0, .3, .6, .9, 1 by annotator count) on the
normalised answers. The accuracy metric that applies these rules is :mod:`vltune.evaluate.vqa`.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from typing import Sequence

__all__ = [
    "CONTRACTIONS",
    "clean_answer",
    "normalize_answer",
    "soft_score_from_count",
    "soft_scores",
]

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
# The official call is ``periodStrip.sub("", outText, re.UNICODE)``: the flag lands in ``count``.
_PERIOD_COUNT = int(re.UNICODE)

def _process_punctuation(text: str) -> str:
    # Both conditions look at the *input* text, as the official code does.
    has_digit_comma = _COMMA_BETWEEN_DIGITS.search(text) is not None
    out = text
    for p in PUNCTUATION:
        if has_digit_comma or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_PERIOD_COUNT)


def _process_digit_article(text: str) -> str:
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(CONTRACTIONS.get(word, word))
    return " ".join(words)


def clean_answer(ans: str) -> str:
    """Newlines and tabs to spaces, then stripped (the first step of every comparison)."""
    if not isinstance(ans, str):
        raise TypeError(f"VQA answers must be strings, got {type(ans).__name__}: {ans!r}")
    return ans.replace("\n", " ").replace("\t", " ").strip()


@functools.lru_cache(maxsize=1 << 17)
def normalize_answer(ans: str) -> str:
    """Official VQA answer normalisation (see the module docstring); cached, answers repeat."""
    return _process_digit_article(_process_punctuation(clean_answer(ans)))


# Exact table values (0.3 * 3 would be 0.8999999999999999 in floating point).
_SOFT_SCORE = {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9}


def soft_score_from_count(count: int) -> float:
    """Training target for an answer given by ``count`` annotators: 0, .3, .6, .9, then 1."""
    if count < 0:
        raise ValueError(f"annotator count must be >= 0, got {count}")
    return _SOFT_SCORE.get(count, 1.0)


def soft_scores(answers: Sequence[str]) -> dict[str, float]:
    """Training targets {normalised answer: score} from the human answers.

    Answers are always normalised here: the targets live on the normalised answer vocabulary a
    model is trained to produce. With 10 answers the target of an answer equals
    ``vltune.evaluate.vqa.vqa_score(answer, answers, normalize="always")`` (1 -> 0.3, 2 -> 0.6, 3 -> 0.9,
    >= 4 -> 1.0), and the official ``vqa_score`` whenever the ten answers are not all
    identical; answers nobody gave score 0 and are absent.
    """
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError("soft_scores: expected a non-empty list of human answers")
    counts = Counter(normalize_answer(a) for a in answers)
    return {a: soft_score_from_count(c) for a, c in counts.items()}
