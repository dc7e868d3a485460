"""Multitask fine-tuning of VL-BART (vqa, gqa, nlvr2, caption) with round-robin single-task batches.

The PET seam: ``method`` names how the backbone is adapted before training (``full`` or any method
of the ``vltune.pet`` registry); :func:`apply_method` is the one place that applies it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from ..backbones.tokenizer import VIS_EXTRA_IDS, load_tokenizer
from ..features.store import FeatureStore
from ..models.encdec import VLBart, per_example_loss
from ..pet import apply_pet, count_parameters, is_pet_dir, load_pet, method_names, save_pet
from ..utils.io import write_json
from .loop import TrainConfig, train
from .vl_tasks import VisualBank, load_task, make_batch, task_schedule

log = logging.getLogger(__name__)

METHODS = tuple(method_names())
PET_SUBDIR = "adapter"  # PET checkpoints keep only the trainable tensors, in <checkpoint>/adapter/

__all__ = ["METHODS", "apply_method", "count_parameters", "build_vlbart", "save_vlbart", "load_vlbart", "finetune_vlbart"]


def apply_method(model: VLBart, method: str, method_config: dict | None = None) -> VLBart:
    """Set which parameters train and inject the PET layers. ``full``: all of them train.

    ``method_config``: hyper-parameter overrides of the method's config (e.g. ``{"adapter_dim": 48}``);
    an unknown method or key raises ``ValueError``.
    """
    method_config = dict(method_config or {})
    if method_config.setdefault("method", method) != method:
        raise ValueError(f"method_config names method {method_config['method']!r} but the method is {method!r}")
    return apply_pet(model, method_config)


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
    """Checkpoint = BART config + tokenizer + weights + ``vlbart.json``.

    ``full`` (or no method): all weights in ``model.safetensors``. A PET method: only its trainable
    tensors + config in ``adapter/`` (LoRA in PEFT's format); ``meta["backbone"]`` must then name
    the backbone folder they apply to.
    """
    from safetensors.torch import save_model

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.bart.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    pet = getattr(model, "pet_config", None)
    if pet is None or pet.method == "full":
        save_model(model, str(out_dir / "model.safetensors"))  # handles BART's tied embeddings
    else:
        if not meta.get("backbone"):
            raise ValueError(f"saving a {pet.method!r} checkpoint needs meta['backbone'] (its weights are not saved)")
        save_pet(model, out_dir / PET_SUBDIR)
    write_json(out_dir / "vlbart.json", {"feat_dim": model.visual_embedding.feat_proj.in_features, **meta})


def load_vlbart(ckpt_dir: str | Path, backbone_dir: str | Path | None = None) -> tuple[VLBart, object, dict]:
    """Load a checkpoint written by :func:`save_vlbart`. A PET checkpoint is applied to the backbone
    named by ``backbone_dir`` (default: the one recorded in ``vlbart.json``)."""
    from safetensors.torch import load_model
    from transformers import BartConfig, BartForConditionalGeneration

    from ..utils.io import read_json

    ckpt_dir = Path(ckpt_dir)
    meta = read_json(ckpt_dir / "vlbart.json")
    tok = load_tokenizer(ckpt_dir)
    if is_pet_dir(ckpt_dir / PET_SUBDIR):
        backbone = backbone_dir or meta.get("backbone")
        if not backbone or not Path(backbone).is_dir():
            raise FileNotFoundError(f"{ckpt_dir}: PET checkpoint needs its backbone folder, {backbone!r} not found")
        model, _ = build_vlbart(backbone, meta["feat_dim"], meta.get("dropout"))
        load_pet(model, ckpt_dir / PET_SUBDIR)
        return model.eval(), tok, meta
    bart = BartForConditionalGeneration(BartConfig.from_pretrained(str(ckpt_dir)))
    model = VLBart(bart, meta["feat_dim"], tok.convert_tokens_to_ids(VIS_EXTRA_IDS))
    load_model(model, str(ckpt_dir / "model.safetensors"))
    return model.eval(), tok, meta


def finetune_vlbart(data_dir, features_dir, backbone_dir, out_dir, method: str, train_cfg: TrainConfig,
                    batch_size: int, task_weights: dict[str, int], resume_dir=None,
                    dropout: float | None = None, method_config: dict | None = None) -> dict:
    store = FeatureStore(features_dir)
    bank = VisualBank(store)
    torch.manual_seed(train_cfg.seed)  # the new modules' init depends on the run seed only
    model, tok = build_vlbart(backbone_dir, bank.dim, dropout)
    apply_method(model, method, method_config)
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
                                      "backbone": str(backbone_dir), **params})
    write_json(Path(out_dir) / "train_log.json", {**result, **params})
    return {**result, **params}
