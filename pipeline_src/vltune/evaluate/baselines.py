"""Trivial baselines a model must beat, computed from the canonical Arrow tables.

* ``majority_type``: per question type, the training answer that scores best on the training
  split; question types never seen in training fall back to the overall answer.
  For VQA "best" means the highest mean VQA soft score (the official metric gives 0.3 / 0.6 /
  0.9 partial credit, so an answer that 3 annotators give on many questions beats one that all
  10 give on a few; counting annotators would pick the weaker answer). For GQA it is the most
  frequent (normalised) answer. NLVR2 has no question types: both rows use the majority label.
* ``majority_overall``: one answer for every question, chosen the same way over all types.
* ``constant_caption``: one training caption output for every test image — the one with the
  highest CIDEr-D against the training references (the most frequent caption is a poor and
  unstable choice), found with an exact vectorised CIDEr-D (:func:`cider_d_constant`, tested
  equal to pycocoevalcap's). Final scores come from :func:`caption_metrics` (pycocoevalcap).

Ties are broken by the lexicographically smallest answer (and ``True`` for NLVR2), so every
baseline is deterministic.

Tables (Arrow IPC files ``<data_dir>/{vqa,gqa,nlvr2,captions}.arrow``) and the columns used:
vqa(split, question_type, answers: list<string>[10]), gqa(split, question_type, answer),
nlvr2(split, label: bool), captions(image_id, split, captions: list<string>).
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vltune.evaluate.caption import caption_metrics, ptb_tokenize
from vltune.evaluate.metrics import binary_accuracy, exact_match_accuracy, normalize_exact
from vltune.data.answers import normalize_answer
from vltune.evaluate.vqa import vqa_accuracy

__all__ = [
    "best_constant_caption",
    "cider_d_constant",
    "compute_baselines",
    "majority_baselines",
    "read_table",
    "select_candidates",
]

TABLES = ("vqa", "gqa", "nlvr2", "captions")
_REQUIRED = {
    "vqa": ("split", "question_type", "answers"),
    "gqa": ("split", "question_type", "answer"),
    "nlvr2": ("split", "label"),
    "captions": ("image_id", "split", "captions"),
}
# VQA soft scores in tenths (0.3 -> 3, ..., >= 4 annotators -> 10): integer sums make equal
# totals compare equal, so ties fall to the deterministic tie-break instead of float noise.
_TENTHS = {1: 3, 2: 6, 3: 9}


def read_table(path: str | os.PathLike) -> pa.Table:
    """Read one canonical Arrow IPC file through the data stage's reader (its manifest checks and
    errors that name the file); the columns the baselines need are checked where they are used."""
    from vltune.data.tables import read_table as read_canonical

    return read_canonical(path)


def _split_columns(table: pa.Table, name: str, split: str, columns: Sequence[str]) -> dict:
    """Python lists of ``columns`` for the rows of ``split``; clear errors for bad tables."""
    missing = [c for c in _REQUIRED[name] if c not in table.column_names]
    if missing:
        raise ValueError(
            f"{name} table: missing column(s) {missing}; has {table.column_names}"
        )
    rows = table.filter(pc.equal(table["split"], split))
    if rows.num_rows == 0:
        present = sorted(set(table["split"].to_pylist()))
        raise ValueError(f"{name} table: no rows with split {split!r} (splits present: {present})")
    return {c: rows[c].to_pylist() for c in columns}


def _best(scores: dict[str, int | float]) -> str:
    """Highest score; ties -> lexicographically smallest key."""
    return min(scores.items(), key=lambda kv: (-kv[1], kv[0]))[0]


def _vqa_majority(vqa: pa.Table, train_split: str) -> tuple[dict[str, str], str]:
    train = _split_columns(vqa, "vqa", train_split, ("question_type", "answers"))
    per_type: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for i, (qtype, answers) in enumerate(zip(train["question_type"], train["answers"])):
        if not answers:
            raise ValueError(f"vqa table: {train_split} row {i} has no answers")
        counts = Counter(normalize_answer(a) for a in answers)
        for ans, c in counts.items():
            tenths = _TENTHS.get(c, 10)
            per_type[qtype][ans] += tenths
            overall[ans] += tenths
    # Mean over the type's questions = sum / n: the same argmax, so sums suffice.
    return {t: _best(s) for t, s in per_type.items()}, _best(overall)


def _gqa_majority(gqa: pa.Table, train_split: str) -> tuple[dict[str, str], str]:
    train = _split_columns(gqa, "gqa", train_split, ("question_type", "answer"))
    per_type: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for qtype, ans in zip(train["question_type"], train["answer"]):
        key = normalize_exact(ans)
        per_type[qtype][key] += 1
        overall[key] += 1
    return {t: _best(s) for t, s in per_type.items()}, _best(overall)


def majority_baselines(
    vqa: pa.Table,
    gqa: pa.Table,
    nlvr2: pa.Table,
    train_split: str = "train",
    eval_split: str = "test",
) -> list[dict]:
    """Rows ``{"method": "majority_type" | "majority_overall", "vqa_accuracy",
    "gqa_accuracy", "nlvr2_accuracy"}`` in percent, fitted on ``train_split`` and scored on
    ``eval_split``."""
    vqa_type, vqa_all = _vqa_majority(vqa, train_split)
    gqa_type, gqa_all = _gqa_majority(gqa, train_split)
    labels = _split_columns(nlvr2, "nlvr2", train_split, ("label",))["label"]
    if any(not isinstance(y, bool) for y in labels):
        raise ValueError(f"nlvr2 table: {train_split} labels must be true/false (found nulls)")
    n_true = sum(bool(y) for y in labels)
    nlvr2_majority = n_true >= len(labels) - n_true

    v = _split_columns(vqa, "vqa", eval_split, ("question_type", "answers"))
    g = _split_columns(gqa, "gqa", eval_split, ("question_type", "answer"))
    y = _split_columns(nlvr2, "nlvr2", eval_split, ("label",))["label"]
    nlvr2_acc = binary_accuracy([nlvr2_majority] * len(y), y)

    rows = []
    for method, vqa_pick, gqa_pick in (
        ("majority_type", lambda t: vqa_type.get(t, vqa_all), lambda t: gqa_type.get(t, gqa_all)),
        ("majority_overall", lambda t: vqa_all, lambda t: gqa_all),
    ):
        rows.append(
            {
                "method": method,
                "vqa_accuracy": vqa_accuracy(
                    [vqa_pick(t) for t in v["question_type"]], v["answers"]
                ),
                "gqa_accuracy": exact_match_accuracy(
                    [gqa_pick(t) for t in g["question_type"]], g["answer"]
                ),
                "nlvr2_accuracy": nlvr2_acc,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------
# Constant caption


def _ngram_counts(words: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            counts[tuple(words[i : i + k])] += 1
    return counts


def cider_d_constant(
    candidates: Sequence[str],
    refs: Sequence[Sequence[str]],
    n: int = 4,
    sigma: float = 6.0,
) -> np.ndarray:
    """Corpus CIDEr-D of each candidate used as the caption of *every* image.

    ``candidates``: tokenized captions (space-separated); ``refs[i]``: the tokenized references
    of image i. Returns one score per candidate, equal (up to float rounding) to pycocoevalcap's
    ``Cider().compute_score({i: refs[i]}, {i: [candidate] for every i})[0]``.

    It reproduces pycocoevalcap's ``CiderScorer``: document frequency over the images'
    reference sets, idf = log(#images) - log(max(1, df)); per order, the tf-idf "cosine" with
    the hypothesis clipped to the reference, sum_g min(h_g, r_g) r_g / (|h| |r|) (0 when a
    norm is 0); times the Gaussian penalty exp(-(len_h - len_r)^2 / (2 sigma^2)) where "length"
    is the number of *bigrams* (as in that code); the mean over orders 1..n and over an image's
    references, × 10, then the mean over images.

    Computed exactly without visiting (candidate, reference) pairs. With idf weights w,
    min(w h, w r) w r = w^2 min(h, r) r and min(h, r) = sum_{t>=1} [h >= t][r >= t]; the
    penalty depends on a reference only through its length l. So the score is
    sum_l pen(len_h - l) sum_{g in h, t <= h_g} w_g^2 / |h|_order(g) * B[g, t, l], with
    B[g, t, l] = sum over references of length l with r_g >= t of weight_r * r_g / |r|_order(g)
    built once from the references. The cost is linear in the number of n-grams, so every
    distinct training caption can be scored against thousands of images in seconds.
    """
    if len(candidates) == 0:
        raise ValueError("cider_d_constant: no candidates")
    if len(refs) == 0 or any(len(r) == 0 for r in refs):
        raise ValueError("cider_d_constant: every image needs at least one reference")

    ref_counts = [[_ngram_counts(r.split(), n) for r in image_refs] for image_refs in refs]
    df: Counter = Counter()
    for image_counts in ref_counts:
        df.update({g for counts in image_counts for g in counts})
    log_n_images = math.log(float(len(refs)))
    idf_cache: dict[tuple, float] = {}

    def idf(g: tuple) -> float:
        w = idf_cache.get(g)
        if w is None:
            w = idf_cache[g] = log_n_images - math.log(max(1.0, df.get(g, 0)))
        return w

    def norms_and_length(counts: Counter) -> tuple[list[float], int]:
        sq = [0.0] * n
        for g, tf in counts.items():
            sq[len(g) - 1] += (tf * idf(g)) ** 2
        # pycocoevalcap's "length" counts bigrams (its `if n == 1` is the 0-based order)
        length = sum(tf for g, tf in counts.items() if len(g) == 2)
        return [math.sqrt(x) for x in sq], length

    # Reference side: rows keyed by (n-gram, t), columns by reference length.
    lengths: dict[int, int] = {}
    row_of: dict[tuple, int] = {}
    b_row: list[int] = []
    b_col: list[int] = []
    b_val: list[float] = []
    for image_counts in ref_counts:
        weight = 10.0 / (n * len(image_counts) * len(refs))
        for counts in image_counts:
            norms, length = norms_and_length(counts)
            col = lengths.setdefault(length, len(lengths))
            for g, tf in counts.items():
                norm = norms[len(g) - 1]
                if norm == 0.0:
                    continue  # pycocoevalcap leaves this order's numerator, 0, undivided
                v = weight * tf / norm
                for t in range(1, tf + 1):
                    b_row.append(row_of.setdefault((g, t), len(row_of)))
                    b_col.append(col)
                    b_val.append(v)
    n_len = len(lengths)
    table = np.bincount(
        np.asarray(b_row, dtype=np.int64) * n_len + np.asarray(b_col, dtype=np.int64),
        weights=np.asarray(b_val, dtype=np.float64),
        minlength=len(row_of) * n_len,
    ).reshape(len(row_of), n_len)

    # Candidate side: one entry per (candidate, n-gram, t) that some reference reaches.
    c_idx: list[int] = []
    c_row: list[int] = []
    c_val: list[float] = []
    cand_len = np.zeros(len(candidates))
    for c, text in enumerate(candidates):
        counts = _ngram_counts(text.split(), n)
        norms, cand_len[c] = norms_and_length(counts)
        for g, tf in counts.items():
            norm = norms[len(g) - 1]
            if norm == 0.0:
                continue
            v = idf(g) ** 2 / norm
            for t in range(1, tf + 1):
                row = row_of.get((g, t))
                if row is None:
                    break  # no reference has this n-gram t times, nor more
                c_idx.append(c)
                c_row.append(row)
                c_val.append(v)
    c_idx_a = np.asarray(c_idx, dtype=np.int64)
    c_row_a = np.asarray(c_row, dtype=np.int64)
    c_val_a = np.asarray(c_val, dtype=np.float64)
    ref_len = np.zeros(n_len)
    for length, col in lengths.items():
        ref_len[col] = length
    penalty = np.e ** (-((cand_len[:, None] - ref_len[None, :]) ** 2) / (2 * sigma**2))
    scores = np.zeros(len(candidates))
    for col in range(n_len):
        per_cand = np.bincount(
            c_idx_a, weights=c_val_a * table[c_row_a, col], minlength=len(candidates)
        )
        scores += penalty[:, col] * per_cand
    return scores


def select_candidates(
    distinct: Sequence[str], max_candidates: int, rng: np.random.Generator
) -> list[str]:
    """The first ``max_candidates // 4`` (at least 1) of ``distinct`` (sorted by frequency)
    plus a ``rng`` sample of the rest, ``max_candidates`` in all, in their original order."""
    n_top = min(len(distinct), max(1, max_candidates // 4))
    rest = distinct[n_top:]
    n_sample = min(len(rest), max_candidates - n_top)
    chosen = np.sort(rng.choice(len(rest), size=n_sample, replace=False)) if n_sample > 0 else []
    return list(distinct[:n_top]) + [rest[j] for j in chosen]


def best_constant_caption(
    captions_table: pa.Table,
    train_split: str = "train",
    eval_split: str = "test",
    max_candidates: int = 20000,
    max_images: int = 5000,
    seed: int = 0,
) -> dict:
    """The training caption with the highest CIDEr-D on training images, scored on ``eval_split``.

    Selection:
    * all training captions are PTB-tokenized (one Java call) and deduplicated by their
      tokenized form; the raw text reported is the most frequent spelling of that form;
    * candidates: every distinct training caption when there are at most ``max_candidates``;
      otherwise the ``max_candidates // 4`` most frequent plus a sample of the others drawn
      with numpy ``default_rng(seed)``, ``max_candidates`` in all;
    * each candidate's CIDEr-D is computed exactly against the training images — all of them,
      or a ``default_rng(seed)`` sample of ``max_images`` — with idf from those images'
      references as pycocoevalcap does for an evaluated set (:func:`cider_d_constant`);
      the best one wins (ties: the more frequent caption).

    The defaults cover the embedded synthetic world completely (about 11,500 distinct captions
    of 4,000 images, a few seconds on one core: the selection is the exact optimum) and bound
    the cost at COCO scale (566k captions).

    Returns ``{"method": "constant_caption", "caption_text", "caption_bleu1".."caption_bleu4",
    "caption_meteor", "caption_rouge_l", "caption_cider", "selection_cider_train",
    "n_candidates", "n_selection_images"}``; scores in percent, final ones from
    :func:`caption_metrics` on ``eval_split``.
    """
    if max_candidates < 1 or max_images < 1:
        raise ValueError("best_constant_caption: max_candidates and max_images must be >= 1")
    train = _split_columns(captions_table, "captions", train_split, ("image_id", "captions"))
    test = _split_columns(captions_table, "captions", eval_split, ("image_id", "captions"))
    for split, cols in ((train_split, train), (eval_split, test)):
        for image_id, caps in zip(cols["image_id"], cols["captions"]):
            if not caps:
                raise ValueError(f"captions table: image {image_id!r} ({split}) has no captions")
    ids = test["image_id"]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise ValueError(f"captions table: image id {dup!r} appears twice in split {eval_split!r}")

    tok = ptb_tokenize({i: caps for i, caps in enumerate(train["captions"])})
    tokenized = [[" ".join(t.split()) for t in tok[i]] for i in range(len(train["captions"]))]

    freq: Counter = Counter()
    spellings: dict[str, Counter] = defaultdict(Counter)
    for raws, toks in zip(train["captions"], tokenized):
        for raw, t in zip(raws, toks):
            if t:  # a caption made only of punctuation tokenizes to nothing
                freq[t] += 1
                spellings[t][raw] += 1
    if not freq:
        raise ValueError(f"captions table: no non-empty {train_split} caption")
    distinct = sorted(freq, key=lambda t: (-freq[t], t))

    rng = np.random.default_rng(seed)
    candidates = select_candidates(distinct, max_candidates, rng)

    n_train = len(tokenized)
    if n_train > max_images:
        images = np.sort(rng.choice(n_train, size=max_images, replace=False))
    else:
        images = np.arange(n_train)
    scores = cider_d_constant(candidates, [tokenized[i] for i in images])
    best = int(np.argmax(scores))  # first maximum = the more frequent caption
    text = _best(spellings[candidates[best]])

    metrics = caption_metrics({i: text for i in ids}, dict(zip(ids, test["captions"])))
    row: dict = {"method": "constant_caption", "caption_text": text}
    row.update({f"caption_{k}": 100.0 * v for k, v in metrics.items()})
    row["selection_cider_train"] = 100.0 * float(scores[best])
    row["n_candidates"] = len(candidates)
    row["n_selection_images"] = int(len(images))
    return row


def compute_baselines(
    data_dir: str | os.PathLike,
    train_split: str = "train",
    eval_split: str = "test",
    seed: int = 0,
) -> list[dict]:
    """All baseline rows from ``<data_dir>/{vqa,gqa,nlvr2,captions}.arrow``."""
    data_dir = Path(data_dir)
    tables = {name: read_table(data_dir / f"{name}.arrow") for name in TABLES}
    rows = majority_baselines(
        tables["vqa"], tables["gqa"], tables["nlvr2"],
        train_split=train_split, eval_split=eval_split,
    )
    rows.append(
        best_constant_caption(
            tables["captions"], train_split=train_split, eval_split=eval_split, seed=seed
        )
    )
    return rows
