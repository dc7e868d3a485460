"""Evaluation: task metrics (VQA, GQA, NLVR2, captioning, retrieval) and trivial baselines.

* :mod:`.vqa` — the official VQA accuracy (vqaEval.py normalisation, from :mod:`vltune.data.answers`, when the ten answers
  differ, 10-answer leave-one-out).
* :mod:`.caption` — BLEU-1..4, METEOR, ROUGE-L, CIDEr-D through pycocoevalcap (needs Java).
* :mod:`.metrics` — GQA exact match, NLVR2 accuracy and consistency, retrieval R@K, and the ``METRICS``
  registry (task name -> metric function, all in percent).
* :mod:`.baselines` — majority-answer and constant-caption baselines from the Arrow tables.
"""

from vltune.evaluate.baselines import (
    best_constant_caption,
    cider_d_constant,
    compute_baselines,
    majority_baselines,
    read_table,
)
from vltune.evaluate.caption import (
    CAPTION_KEYS,
    caption_metrics,
    caption_metrics_percent,
    close_meteor,
    ptb_tokenize,
    require_java,
)
from vltune.evaluate.metrics import (
    METRICS,
    binary_accuracy,
    exact_match_accuracy,
    nlvr2_consistency,
    normalize_exact,
    retrieval_metrics,
)
from vltune.data.answers import normalize_answer, soft_scores
from vltune.evaluate.vqa import vqa_accuracy, vqa_score

__all__ = [
    "CAPTION_KEYS",
    "METRICS",
    "best_constant_caption",
    "binary_accuracy",
    "caption_metrics",
    "caption_metrics_percent",
    "cider_d_constant",
    "close_meteor",
    "compute_baselines",
    "exact_match_accuracy",
    "majority_baselines",
    "nlvr2_consistency",
    "normalize_answer",
    "normalize_exact",
    "ptb_tokenize",
    "read_table",
    "require_java",
    "retrieval_metrics",
    "soft_scores",
    "vqa_accuracy",
    "vqa_score",
]
