"""VQA accuracy as the official VQA v2 evaluation computes it (GT-Vision-Lab/VQA,
``PythonEvaluationTools/vqaEvaluation/vqaEval.py``, ``VQAEval.evaluate``).

Per question, with the prediction and the ten human answers:

1. every string has newlines and tabs replaced by spaces and is stripped;
2. only when the ten (stripped) answers are *not* all identical, the prediction and every answer
   get the full normalisation :func:`vltune.data.answers.normalize_answer` (``processPunctuation`` then
   ``processDigitArticle``); with ten identical answers the stripped strings are compared as they
   are, case and punctuation included ("Orange" against ten "orange" scores 0);
3. the score is the mean over the ten leave-one-out subsets of nine answers of
   ``min(1, #matches in the subset / 3)``.

The two official functions and the soft training targets live in :mod:`vltune.data.answers`.

VQA v2's annotation answers are *not* stored in this normalised form ("black, white",
"red/yellow", "leaf-hat", "yes, just one" all change under it), so the rule of step 2 changes
scores on real data.

``normalize="always"`` is a named, non-official variant: the prediction and the answers are
always normalised (step 2 skipped), as several re-implementations do. A run scored with it
records ``vqa_normalize: "always"`` in its metrics and the report marks its VQA column.

Scores are returned unrounded (fractions here, percent from :func:`vqa_accuracy`); the official
two-decimal rounding of the overall accuracy happens only where the report prints it
(``vltune.report.summary``, ``summary.md``).
"""

from __future__ import annotations

from typing import Sequence

from ..data.answers import clean_answer, normalize_answer

__all__ = [
    "NORMALIZE_MODES",
    "vqa_accuracy",
    "vqa_score",
]

NUM_ANSWERS = 10

NORMALIZE_MODES = ("official", "always")


def _check_answers(answers: Sequence[str], where: str) -> None:
    if isinstance(answers, str) or len(answers) != NUM_ANSWERS:
        n = "a string" if isinstance(answers, str) else f"{len(answers)} answers"
        raise ValueError(
            f"{where}: expected a list of exactly {NUM_ANSWERS} human answers, got {n}"
        )


def _check_mode(normalize: str) -> None:
    if normalize not in NORMALIZE_MODES:
        raise ValueError(
            f"VQA normalize={normalize!r}: expected one of {', '.join(NORMALIZE_MODES)}"
        )


def _question_score(pred: str, answers: Sequence[str], normalize: str) -> float:
    pred, answers = clean_answer(pred), [clean_answer(a) for a in answers]
    if normalize == "always" or len(set(answers)) > 1:
        pred, answers = normalize_answer(pred), [normalize_answer(a) for a in answers]
    matches = sum(a == pred for a in answers)
    # Leaving out answer j removes one match exactly when a_j itself matches (the official code
    # leaves out one answer record at a time; records differ by their answer_id).
    total = 0.0
    for a in answers:
        total += min(1.0, (matches - (a == pred)) / 3.0)
    return total / len(answers)


def vqa_score(pred: str, answers: Sequence[str], normalize: str = "official") -> float:
    """Official accuracy of one prediction against its 10 human answers, in [0, 1].

    ``normalize``: "official" (normalise only when the answers disagree) or "always" (the
    non-official variant, see the module docstring)."""
    _check_mode(normalize)
    _check_answers(answers, "vqa_score")
    return _question_score(pred, answers, normalize)


def vqa_accuracy(preds: Sequence[str], answers: Sequence[Sequence[str]],
                 normalize: str = "official") -> float:
    """Mean VQA accuracy over questions, in percent (0..100), unrounded."""
    _check_mode(normalize)
    if len(preds) != len(answers):
        raise ValueError(
            f"vqa_accuracy: {len(preds)} predictions but {len(answers)} answer lists"
        )
    if len(preds) == 0:
        raise ValueError("vqa_accuracy: no questions to evaluate (empty input)")
    total = 0.0
    for i, (pred, ans) in enumerate(zip(preds, answers)):
        _check_answers(ans, f"vqa_accuracy: question at index {i}")
        total += _question_score(pred, ans, normalize)
    return 100.0 * total / len(preds)
