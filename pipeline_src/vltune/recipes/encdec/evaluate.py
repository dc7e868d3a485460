"""Evaluate a VL-BART / VL-T5 checkpoint on a split: decode every task, score it, return flat metrics.

Decoding: VQA and GQA greedy; captions beam search; NLVR2 compares the
logits of ``true`` and ``false`` as the first answer token (no generation), after the family's
answer prefix (``model.answer_prefix()``). Scores are percent.

NLVR2 reports accuracy and, when the examples carry NLVR2 identifiers
("{split}-{set_id}-{pair_id}-{sentence_id}"), the official consistency; VQA is scored with the
official rule unless ``vqa_normalize="always"`` is asked for, which the metrics then record.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from ...errors import UserError
from ...evaluate.caption import caption_metrics
from ...evaluate.metrics import binary_accuracy, exact_match_accuracy, nlvr2_consistency_if_identified
from ...evaluate.vqa import NORMALIZE_MODES, vqa_accuracy
from ...features.store import FeatureStore
from .tasks import VisualBank, VisualTokens, load_task, make_batch

log = logging.getLogger(__name__)


@torch.inference_mode()
def decode_task(model, tok, ex, bank, batch_size: int, **gen_kwargs) -> list[str]:
    from tqdm.auto import tqdm

    preds: list[str] = []
    for start in tqdm(range(0, len(ex), batch_size), desc=f"decode[{ex.task}]", mininterval=5, disable=None):
        b = make_batch(ex, range(start, min(start + batch_size, len(ex))), bank, tok.pad_token_id, rng=None)
        out = model.generate(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"], **gen_kwargs)
        preds.extend(s.strip() for s in tok.batch_decode(out, skip_special_tokens=True))
    return preds


@torch.inference_mode()
def nlvr2_predictions(model, tok, ex, bank, batch_size: int) -> list[bool]:
    # The first token of the bare word is the first answer token of both families' targets
    # ("<s> true </s>" for BART, "true </s>" for T5); tests/recipes/encdec/test_nlvr2_scoring.py checks it.
    true_id, false_id = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("true", "false"))
    if true_id == false_id:
        raise ValueError("the tokenizer starts 'true' and 'false' with the same token; NLVR2 cannot be scored")
    preds: list[bool] = []
    for start in range(0, len(ex), batch_size):
        b = make_batch(ex, range(start, min(start + batch_size, len(ex))), bank, tok.pad_token_id, rng=None)
        logits = model.first_token_logits(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"])
        preds.extend((logits[:, true_id] > logits[:, false_id]).tolist())
    return preds


def evaluate_vl_model(model, tok, data_dir: str | Path, features_dir: str | Path, tasks, split: str = "test",
                      batch_size: int = 256, caption_beams: int = 5, caption_max_len: int = 30,
                      answer_max_len: int = 8, save_predictions: dict | None = None,
                      max_examples: int | None = None, visual: VisualTokens | None = None,
                      vqa_normalize: str = "official") -> dict:
    """Metrics for each task in ``tasks`` on ``split``: ``{"vqa_accuracy": .., "caption_cider": .., ...}``.

    ``max_examples``: evaluate on the first this many examples of each task (table order), e.g. for
    smoke-test runs; ``None`` = all. The counts used are returned as ``<task>_examples``.
    ``visual``: the visual-token settings the model was trained with.
    ``vqa_normalize``: "official" or the non-official "always" (recorded as ``vqa_normalize``)."""
    if vqa_normalize not in NORMALIZE_MODES:  # before any decoding
        raise UserError(f"eval params: vqa_normalize={vqa_normalize!r}, expected one of {', '.join(NORMALIZE_MODES)}")
    bank = VisualBank(FeatureStore(features_dir), visual)
    model.eval()
    metrics: dict[str, float] = {}
    t0 = time.perf_counter()
    for task in tasks:
        ex = load_task(data_dir, task, split, tok)
        if max_examples is not None:
            ex = ex.head(max_examples)
        metrics[f"{task}_examples"] = len(ex)
        if task == "nlvr2":
            preds = nlvr2_predictions(model, tok, ex, bank, batch_size)
            metrics["nlvr2_accuracy"] = binary_accuracy(preds, list(ex.refs))
            metrics.update(nlvr2_consistency_if_identified(preds, list(ex.refs), list(ex.ids)))
        elif task in ("vqa", "gqa"):
            preds = decode_task(model, tok, ex, bank, batch_size, num_beams=1, do_sample=False,
                                max_new_tokens=answer_max_len)
            metrics[f"{task}_accuracy"] = (vqa_accuracy(preds, ex.refs, normalize=vqa_normalize) if task == "vqa"
                                           else exact_match_accuracy(preds, list(ex.refs)))
            if task == "vqa" and vqa_normalize != "official":
                metrics["vqa_normalize"] = vqa_normalize
        elif task == "caption":
            preds = decode_task(model, tok, ex, bank, max(1, batch_size // caption_beams), num_beams=caption_beams,
                                do_sample=False, max_new_tokens=caption_max_len, early_stopping=True)
            scores = caption_metrics(dict(zip(ex.ids, preds)), dict(zip(ex.ids, ex.refs)))
            metrics.update({f"caption_{k}": 100.0 * v for k, v in scores.items()})
        else:
            raise ValueError(f"unknown task {task!r}")
        if save_predictions is not None:
            save_predictions[task] = [{"id": i, "prediction": p} for i, p in zip(ex.ids, preds)]
        log.info("evaluated %s on %d %s examples", task, len(ex), split)
    metrics["eval_wall_s"] = time.perf_counter() - t0
    return metrics

