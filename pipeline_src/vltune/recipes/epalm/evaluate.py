"""Evaluate eP-ALM checkpoints (one per task) on a split: generate, score, return flat metrics.

Decoding as the reference's accelerate scripts (eP-ALM, arXiv 2303.11403): beam search (``num_beams``, 3
there), no sampling; VQA/GQA prompt ``</s>question?</a>`` and the answer is the text generated after
it; captions start from ``</s>`` alone. ``kv_cache`` (default) decodes with transformers' KV cache
(``EPALM.generate``: the same tokens); ``kv_cache=False`` re-runs the whole prefix for every token,
as the reference does. Prompts are left-padded: the reference code (https://github.com/mshukor/eP-ALM)
pads on the right, which makes a short question's first answer token come from a pad position;
left padding gives every question the same answer it gets alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from ...evaluate.caption import caption_metrics
from ...evaluate.metrics import exact_match_accuracy
from ...evaluate.vqa import vqa_accuracy
from .finetune import EpalmExamples, Perception, load_examples

log = logging.getLogger(__name__)


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask) with every sequence ending at the last column."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, width - len(s):] = 1
    return ids, mask


@torch.inference_mode()
def decode(model, tok, ex: EpalmExamples, perception: Perception, batch_size: int, kv_cache: bool = True,
           **gen_kwargs) -> list[str]:
    """Generated text of every example of ``ex`` (special tokens dropped, stripped)."""
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    preds: list[str] = []
    for start in tqdm(range(0, len(ex), batch_size), desc=f"decode[{ex.task}]", mininterval=5, disable=None):
        rows = range(start, min(start + batch_size, len(ex)))
        ids, mask = left_pad([ex.prompts[i] for i in rows], tok.pad_token_id)
        inputs = {k: v.to(device) for k, v in perception.batch([ex.images[i] for i in rows]).items()}
        out = model.generate(ids.to(device), mask.to(device), **inputs, use_cache=kv_cache, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **gen_kwargs)
        preds.extend(s.strip() for s in tok.batch_decode(out, skip_special_tokens=True))
    return preds


def evaluate_task(model, tok, data_dir: str | Path, task: str, perception: Perception, split: str = "test",
                  batch_size: int = 256, num_beams: int = 3, answer_max_len: int = 8, caption_max_len: int = 30,
                  kv_cache: bool = True, save_predictions: dict | None = None) -> dict[str, float]:
    """Metrics of one task (percent): ``vqa_accuracy``, ``gqa_accuracy`` or ``caption_*``."""
    ex = load_examples(data_dir, task, split, tok)
    max_new = caption_max_len if task == "caption" else answer_max_len
    preds = decode(model, tok, ex, perception, max(1, batch_size // num_beams), kv_cache, num_beams=num_beams,
                   max_new_tokens=max_new, early_stopping=num_beams > 1)
    if task == "vqa":
        metrics = {"vqa_accuracy": vqa_accuracy(preds, ex.refs)}
    elif task == "gqa":
        metrics = {"gqa_accuracy": exact_match_accuracy(preds, list(ex.refs))}
    else:
        scores = caption_metrics(dict(zip(ex.ids, preds)), dict(zip(ex.ids, ex.refs)))
        metrics = {f"caption_{k}": 100.0 * v for k, v in scores.items()}
    if save_predictions is not None:
        save_predictions[task] = [{"id": i, "prediction": p} for i, p in zip(ex.ids, preds)]
    log.info("evaluated eP-ALM %s on %d %s examples: %s", task, len(ex), split, metrics)
    return metrics


def evaluate_epalm(checkpoints: dict[str, str | Path], data_dir: str | Path, features_dir: str | Path | None = None,
                   lm_dir: str | Path | None = None, vit_dir: str | Path | None = None,
                   save_predictions: dict | None = None, **kwargs) -> tuple[dict, dict]:
    """Evaluate each task's checkpoint (``{"vqa": dir, ...}``); perception from ``features_dir``
    when given, else recomputed by the encoder. Returns (metrics, meta of the first checkpoint)."""
    from .finetune import load_epalm

    metrics: dict[str, float] = {}
    metas = {}
    t0 = time.perf_counter()
    for task, ckpt in checkpoints.items():
        model, tok, meta = load_epalm(ckpt, lm_dir, vit_dir, cached=features_dir is not None)
        if meta["task"] != task:
            raise ValueError(f"{ckpt}: checkpoint was trained on {meta['task']!r}, not {task!r}")
        if features_dir is not None:
            perception = Perception(features_dir)
        else:
            perception = Perception(None, data_dir, meta["preprocessing"])
        metrics.update(evaluate_task(model, tok, data_dir, task, perception, save_predictions=save_predictions, **kwargs))
        metas[task] = meta
    metrics["eval_wall_s"] = time.perf_counter() - t0
    return metrics, metas
