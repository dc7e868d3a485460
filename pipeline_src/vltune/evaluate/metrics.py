"""Task metrics (all in percent) and the ``METRICS`` registry, task name -> metric function.

* ``vqa``: official VQA accuracy (:mod:`vltune.evaluate.vqa`, GT-Vision-Lab vqaEval.py).
* ``gqa``: exact-match accuracy after lower-casing and stripping, as VL-T5 / VL-PET's
  ``GQAEvaluator`` compares the generated answer with the single gold answer.
* ``nlvr2``: binary accuracy of true/false predictions (VL-T5's ``NLVR2Evaluator``), and
  :func:`nlvr2_consistency`, the official NLVR2 script's second number (lil-lab/nlvr,
  ``nlvr2/eval/metrics.py``): the share of unique sentences whose every example is right.
* ``caption``: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D through pycocoevalcap, × 100.
* ``retrieval``: image-text retrieval recall R@K in both directions, with several captions per
  image, as in ALBEF / ViLT's ``itm_eval`` (an image is retrieved correctly for text retrieval
  when *any* of its captions is in the top K).

Every entry is registered with ``higher_is_better=True``, its ``task`` and ``scale="percent"``.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Sequence

import numpy as np

from vltune.evaluate.caption import caption_metrics_percent
from vltune.evaluate.vqa import vqa_accuracy
from vltune.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "METRICS",
    "binary_accuracy",
    "exact_match_accuracy",
    "is_nlvr2_identifier",
    "nlvr2_consistency",
    "nlvr2_sentence_key",
    "normalize_exact",
    "retrieval_metrics",
]

METRICS: Registry = Registry("metric")


def _check_lengths(name: str, preds: Sequence, golds: Sequence) -> None:
    if len(preds) != len(golds):
        raise ValueError(f"{name}: {len(preds)} predictions but {len(golds)} gold labels")
    if len(preds) == 0:
        raise ValueError(f"{name}: nothing to evaluate (empty input)")


def normalize_exact(answer: str) -> str:
    """The comparison key of GQA exact match: stripped and lower-cased."""
    if not isinstance(answer, str):
        raise TypeError(f"answers must be strings, got {type(answer).__name__}: {answer!r}")
    return answer.strip().lower()


def exact_match_accuracy(preds: Sequence[str], golds: Sequence[str]) -> float:
    """Percent of predictions equal to the gold answer after :func:`normalize_exact` (GQA)."""
    _check_lengths("exact_match_accuracy", preds, golds)
    hits = sum(normalize_exact(p) == normalize_exact(g) for p, g in zip(preds, golds))
    return 100.0 * hits / len(preds)


def _as_bool(x: Any, what: str, i: int) -> bool:
    # Only real booleans and 0/1: a string such as "False" is truthy and would be scored
    # as True by bool(), silently.
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)) and x in (0, 1):
        return bool(x)
    raise TypeError(f"binary_accuracy: {what} at index {i} must be a bool (or 0/1), got {x!r}")


def binary_accuracy(preds: Sequence[bool], labels: Sequence[bool]) -> float:
    """Percent of true/false predictions equal to the labels (NLVR2)."""
    _check_lengths("binary_accuracy", preds, labels)
    hits = sum(
        _as_bool(p, "prediction", i) == _as_bool(y, "label", i)
        for i, (p, y) in enumerate(zip(preds, labels))
    )
    return 100.0 * hits / len(preds)


# NLVR2 identifiers are "{split}-{set_id}-{pair_id}-{sentence_id}", e.g. "dev-850-2-0": one
# sentence (set_id, sentence_id) is paired with up to four image pairs (pair_id).
_NLVR2_IDENTIFIER = re.compile(r"[^-]+-[^-]+-[^-]+-[^-]+")


def is_nlvr2_identifier(identifier: Any) -> bool:
    """Whether ``identifier`` has the four dash-separated parts of an NLVR2 identifier."""
    return isinstance(identifier, str) and _NLVR2_IDENTIFIER.fullmatch(identifier) is not None


def nlvr2_sentence_key(identifier: str) -> str:
    """The sentence an NLVR2 example belongs to: its identifier with the third part (the image
    pair) emptied, "dev-850-2-0" -> "dev-850--0", as the official script groups examples."""
    if not is_nlvr2_identifier(identifier):
        raise ValueError(
            f"nlvr2_consistency: identifier {identifier!r} is not of the NLVR2 form "
            f"split-set_id-pair_id-sentence_id (e.g. 'dev-850-2-0')"
        )
    parts = identifier.split("-")
    parts[2] = ""
    return "-".join(parts)


def nlvr2_consistency(
    preds: Sequence[bool], labels: Sequence[bool], identifiers: Sequence[str]
) -> float:
    """Percent of unique sentences whose every example is predicted correctly (NLVR2's
    consistency, lil-lab/nlvr ``nlvr2/eval/metrics.py``)."""
    _check_lengths("nlvr2_consistency", preds, labels)
    if len(identifiers) != len(preds):
        raise ValueError(
            f"nlvr2_consistency: {len(preds)} predictions but {len(identifiers)} identifiers"
        )
    all_right: dict[str, bool] = {}
    for i, (p, y, ident) in enumerate(zip(preds, labels, identifiers)):
        key = nlvr2_sentence_key(ident)
        right = _as_bool(p, "prediction", i) == _as_bool(y, "label", i)
        all_right[key] = all_right.get(key, True) and right
    return 100.0 * sum(all_right.values()) / len(all_right)


def nlvr2_consistency_if_identified(preds: Sequence[bool], labels: Sequence[bool], ids: Sequence[str]) -> dict:
    """``{"nlvr2_consistency": ..}`` when every example has an NLVR2 identifier, else nothing
    (logged): examples of other datasets cannot be grouped by sentence."""
    if ids and all(is_nlvr2_identifier(i) for i in ids):
        return {"nlvr2_consistency": nlvr2_consistency(preds, labels, ids)}
    bad = next((i for i in ids if not is_nlvr2_identifier(i)), None)
    log.info("nlvr2: example ids are not NLVR2 identifiers (e.g. %r); no consistency reported", bad)
    return {}


def _to_numpy(sim: Any) -> np.ndarray:
    if hasattr(sim, "detach") and hasattr(sim, "cpu"):  # a torch.Tensor, without importing torch
        sim = sim.detach().cpu()
        if not sim.is_floating_point() or sim.dtype.itemsize < 4:
            sim = sim.float()  # numpy has no bfloat16; half precision is upcast too
        sim = sim.numpy()
    sim = np.asarray(sim)
    if sim.dtype.kind not in "fiub":
        raise TypeError(f"retrieval_metrics: sim must be numeric, got dtype {sim.dtype}")
    if sim.dtype.kind != "f":
        sim = sim.astype(np.float64)
    return sim


# Rows (or columns) handled per block, so the boolean comparison matrix stays ~64 MB.
_BLOCK_ELEMENTS = 1 << 26


def retrieval_metrics(
    sim: Any, caption_image_index: Sequence[int], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Image-text retrieval recall in percent.

    ``sim``: similarity scores of shape (n_images, n_captions), a numpy array or torch tensor
    (higher = more similar). ``caption_image_index[c]``: the row (image) that caption c
    describes; every image must have at least one caption.

    Returns ``{"tr_r{k}", "ir_r{k}" for k in ks}``:

    * TR (text retrieval, image -> text): an image is a hit at K when one of its captions is
      among its K highest-scoring captions;
    * IR (image retrieval, text -> image): a caption is a hit at K when its image is among its
      K highest-scoring images.

    Ties count against the query: a wrong item scoring *equal* to the best correct one ranks
    above it, so a constant similarity matrix scores (near) zero rather than 100 and the result
    does not depend on the order of images or captions.
    """
    s = _to_numpy(sim)
    if s.ndim != 2:
        raise ValueError(
            f"retrieval_metrics: sim must be 2-D (n_images, n_captions), got {s.shape}"
        )
    n_img, n_cap = s.shape
    if n_img == 0 or n_cap == 0:
        raise ValueError(f"retrieval_metrics: empty similarity matrix {s.shape}")
    idx = np.asarray(caption_image_index)
    if idx.shape != (n_cap,):
        raise ValueError(
            f"retrieval_metrics: caption_image_index has shape {idx.shape}, "
            f"expected ({n_cap},) (one image index per caption column of sim)"
        )
    if idx.dtype.kind not in "iu":
        raise TypeError(
            f"retrieval_metrics: caption_image_index must hold integers, got {idx.dtype}"
        )
    if idx.min() < 0 or idx.max() >= n_img:
        bad = int(np.flatnonzero((idx < 0) | (idx >= n_img))[0])
        raise ValueError(
            f"retrieval_metrics: caption {bad} points to image {int(idx[bad])}, "
            f"outside 0..{n_img - 1}"
        )
    n_caps_per_img = np.bincount(idx, minlength=n_img)
    if (n_caps_per_img == 0).any():
        bad = int(np.flatnonzero(n_caps_per_img == 0)[0])
        raise ValueError(f"retrieval_metrics: image {bad} has no caption in caption_image_index")
    if np.isnan(s).any():
        raise ValueError("retrieval_metrics: sim contains NaN")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"retrieval_metrics: ks must be positive integers, got {ks}")

    gt = s[idx, np.arange(n_cap)]  # score of each caption with its own image

    # TR: rank of image i = number of *other images'* captions scoring >= its best caption.
    best = np.full(n_img, -np.inf, dtype=s.dtype)
    np.maximum.at(best, idx, gt)
    # Own captions that reach the row's best (>= 1 of them) are subtracted from the count.
    own_at_best = np.bincount(idx, weights=(gt >= best[idx]), minlength=n_img)
    tr_rank = np.empty(n_img, dtype=np.int64)
    rows = max(1, _BLOCK_ELEMENTS // n_cap)
    for a in range(0, n_img, rows):
        b = min(n_img, a + rows)
        tr_rank[a:b] = (s[a:b] >= best[a:b, None]).sum(axis=1)
    tr_rank -= own_at_best.astype(np.int64)

    # IR: rank of caption c = number of other images scoring >= its own image.
    ir_rank = np.empty(n_cap, dtype=np.int64)
    cols = max(1, _BLOCK_ELEMENTS // n_img)
    for a in range(0, n_cap, cols):
        b = min(n_cap, a + cols)
        ir_rank[a:b] = (s[:, a:b] >= gt[None, a:b]).sum(axis=0) - 1

    out: dict[str, float] = {}
    for k in ks:
        out[f"tr_r{k}"] = 100.0 * float(np.mean(tr_rank < k))
    for k in ks:
        out[f"ir_r{k}"] = 100.0 * float(np.mean(ir_rank < k))
    return out


METRICS.add("vqa", vqa_accuracy, higher_is_better=True, task="vqa", scale="percent")
METRICS.add("gqa", exact_match_accuracy, higher_is_better=True, task="gqa", scale="percent")
METRICS.add("nlvr2", binary_accuracy, higher_is_better=True, task="nlvr2", scale="percent")
METRICS.add(
    "caption", caption_metrics_percent, higher_is_better=True, task="caption", scale="percent"
)
METRICS.add(
    "retrieval", retrieval_metrics, higher_is_better=True, task="retrieval", scale="percent"
)
