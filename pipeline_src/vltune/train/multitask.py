"""Multitask fine-tuning of VL-BART (vqa, gqa, nlvr2, caption) with round-robin single-task batches.

The PET seam: ``method`` names how the backbone is adapted before training. This issue ships
``full`` (every parameter trains); the PET registry plugs in at :func:`apply_method`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..backbones.tokenizer import VIS_EXTRA_IDS, load_tokenizer
from ..features.store import FeatureStore
from ..models.encdec import VLBart, per_example_loss
from ..utils.io import write_json
from .loop import TrainConfig, train
from .vl_tasks import VisualBank, load_task, make_batch, task_schedule

log = logging.getLogger(__name__)

METHODS = ("full",)


def apply_method(model: VLBart, method: str) -> VLBart:
    """Set which parameters train. ``full``: all of them."""
    if method != "full":
        raise ValueError(f"unknown method {method!r}; available: {', '.join(METHODS)}")
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def count_parameters(model: torch.nn.Module) -> dict:
    # Tied weights (BART's shared embedding / lm_head) are counted once: parameters() dedups them.
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total}


def build_vlbart(backbone_dir: str | Path, feat_dim: int, dropout: float | None = None):
    """VL-BART on a pretrained BART; ``dropout`` (if given) replaces the backbone's hidden,
    attention and activation dropout for fine-tuning."""
    from transformers import BartForConditionalGeneration

    tok = load_tokenizer(backbone_dir)
    overrides = {} if dropout is None else dict(dropout=dropout, attention_dropout=dropout, activation_dropout=dropout)
    bart = BartForConditionalGeneration.from_pretrained(str(backbone_dir), **overrides)
    vis_ids = tok.convert_tokens_to_ids(VIS_EXTRA_IDS)
    return VLBart(bart, feat_dim, vis_ids), tok


def save_vlbart(model: VLBart, tokenizer, out_dir: str | Path, meta: dict) -> None:
    """Checkpoint = BART config + tokenizer + all weights (safetensors) + ``vlbart.json``."""
    from safetensors.torch import save_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.bart.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    save_model(model, str(out_dir / "model.safetensors"))  # handles BART's tied embeddings
    write_json(out_dir / "vlbart.json", {"feat_dim": model.visual_embedding.feat_proj.in_features, **meta})


def load_vlbart(ckpt_dir: str | Path) -> tuple[VLBart, object, dict]:
    from safetensors.torch import load_model
    from transformers import BartConfig, BartForConditionalGeneration

    from ..utils.io import read_json

    ckpt_dir = Path(ckpt_dir)
    meta = read_json(ckpt_dir / "vlbart.json")
    tok = load_tokenizer(ckpt_dir)
    bart = BartForConditionalGeneration(BartConfig.from_pretrained(str(ckpt_dir)))
    model = VLBart(bart, meta["feat_dim"], tok.convert_tokens_to_ids(VIS_EXTRA_IDS))
    load_model(model, str(ckpt_dir / "model.safetensors"))
    return model.eval(), tok, meta


def finetune_vlbart(data_dir, features_dir, backbone_dir, out_dir, method: str, train_cfg: TrainConfig,
                    batch_size: int, task_weights: dict[str, int], resume_dir=None,
                    dropout: float | None = None) -> dict:
    store = FeatureStore(features_dir)
    bank = VisualBank(store)
    torch.manual_seed(train_cfg.seed)  # the new modules' init depends on the run seed only
    model, tok = build_vlbart(backbone_dir, bank.dim, dropout)
    apply_method(model, method)
    data = {t: load_task(data_dir, t, "train", tok) for t in task_weights}
    for t, ex in data.items():
        log.info("task %s: %d training examples", t, len(ex))

    def batch_fn(step: int) -> dict:
        task = task_schedule(task_weights, train_cfg.seed, step)
        rng = np.random.default_rng([train_cfg.seed, step])
        ex = data[task]
        idx = rng.choice(len(ex), size=min(batch_size, len(ex)), replace=False)
        return make_batch(ex, idx, bank, tok.pad_token_id, rng)

    def loss_fn(m, b):
        return (per_example_loss(m, b) * b["weights"]).mean()

    result = train(model, batch_fn, loss_fn, train_cfg, resume_dir=resume_dir, desc=f"finetune_vlbart[{method}]")
    params = count_parameters(model)
    save_vlbart(model, tok, out_dir, {"method": method, "seed": train_cfg.seed, "features": str(features_dir), "dropout": dropout,
                                      **params})
    write_json(Path(out_dir) / "train_log.json", {**result, **params})
    return {**result, **params}
