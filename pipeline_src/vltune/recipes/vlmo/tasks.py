"""Fine-tuning and evaluation of a VLMo init on one merging-study task, and the Gram pass for RegMean.

Heads (Sung et al., arXiv 2304.14933): VQA — pooled joint [CLS] → MLP (d → 2d → LN → GELU → answers), BCE on the
soft scores × the number of answers (as ViLT); NLVR2 — two joint passes (left image as token type
1, right as 2), pooled features concatenated → MLP (2d → 2d → LN → GELU → 2), CE; retrieval — the
dual encoder (unimodal passes, ITC projections), InfoNCE over the batch, recall from dot products.
Every weight trains (full fine-tuning, as the paper).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...backbones.tokenizer import load_tokenizer
from ...evaluate.metrics import binary_accuracy, nlvr2_consistency_if_identified, retrieval_metrics
from ...evaluate.vqa import vqa_accuracy
from ...merge.grams import collect, linear_modules
from ...models.vlmo import VLMo
from ...train.loop import TrainConfig, train
from ...utils.io import save_model_file, write_json
from .data import TASKS, ImageBank, TaskData, load_task, text_batch
from .pretrain import MAX_LOGIT_SCALE, load_vlmo

log = logging.getLogger(__name__)


class TaskModel(nn.Module):
    def __init__(self, backbone: VLMo, task: str, n_answers: int = 0):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown merging-study task {task!r}; expected one of {TASKS}")
        self.backbone, self.task = backbone, task
        d = backbone.cfg.d_model
        if task == "vqa":
            self.head = nn.Sequential(nn.Linear(d, 2 * d), nn.LayerNorm(2 * d), nn.GELU(), nn.Linear(2 * d, n_answers))
        elif task == "nlvr2":
            self.head = nn.Sequential(nn.Linear(2 * d, 2 * d), nn.LayerNorm(2 * d), nn.GELU(), nn.Linear(2 * d, 2))

    @property
    def config(self):
        """The backbone's architecture (``model_type`` "vlmo"): what PET methods key their targets by."""
        return self.backbone.cfg

    def forward(self, b: dict) -> torch.Tensor:
        m = self.backbone
        if self.task == "vqa":
            return self.head(m.pooled(m.joint(b["input_ids"], b["attention_mask"], b["pixels"])))
        if self.task == "nlvr2":
            text = m.text_shallow(b["input_ids"], b["attention_mask"])  # shared by both passes
            left = m.pooled(m.joint_top(text, b["attention_mask"], m.image_shallow(b["pixels"], 1)))
            right = m.pooled(m.joint_top(text, b["attention_mask"], m.image_shallow(b["pixels2"], 2)))
            return self.head(torch.cat([left, right], dim=-1))
        t = m.text_features(b["input_ids"], b["attention_mask"])
        i = m.image_features(b["pixels"])
        return m.logit_scale.clamp(max=MAX_LOGIT_SCALE).exp() * t @ i.T  # (texts, images)


def task_loss(model: TaskModel, b: dict) -> torch.Tensor:
    logits = model(b)
    if model.task == "vqa":
        return F.binary_cross_entropy_with_logits(logits, b["targets"]) * b["targets"].shape[1]
    if model.task == "nlvr2":
        return F.cross_entropy(logits, b["targets"])
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def make_batch(data: TaskData, idx, bank: ImageBank, pad_id: int) -> dict:
    idx = list(idx)
    ids, mask = text_batch([data.texts.ids[i] for i in idx], pad_id)
    b = {"input_ids": ids, "attention_mask": mask, "pixels": bank.gather([data.images[i][0] for i in idx])}
    if data.task == "nlvr2":
        b["pixels2"] = bank.gather([data.images[i][1] for i in idx])
    if data.targets is not None:
        b["targets"] = data.targets[idx]
    return b


def retrieval_rows(data: TaskData, rng: np.random.Generator, batch_size: int) -> list[int]:
    """One caption of each of ``batch_size`` distinct images (no false negatives in the batch)."""
    by_image: dict[int, list[int]] = {}
    for k, owner in enumerate(data.refs):
        by_image.setdefault(owner, []).append(k)
    images = rng.choice(len(by_image), size=min(batch_size, len(by_image)), replace=False)
    return [int(rng.choice(by_image[int(i)])) for i in images]


def sample_batch(data: TaskData, bank: ImageBank, pad_id: int, size: int, rng: np.random.Generator) -> dict:
    """A random batch of ``size`` examples (retrieval: captions of distinct images)."""
    if data.task == "retrieval":
        rows = retrieval_rows(data, rng, size)
    else:
        rows = rng.choice(len(data), size=min(size, len(data)), replace=False)
    return make_batch(data, rows, bank, pad_id)


@torch.no_grad()
def evaluate_task(model: TaskModel, data: TaskData, bank: ImageBank, pad_id: int, batch_size: int = 256) -> dict:
    model.eval()
    m = model.backbone
    if data.task == "retrieval":
        img = torch.cat([m.image_features(bank.gather(data.image_list[s:s + batch_size]))
                         for s in range(0, len(data.image_list), batch_size)])
        txt = torch.cat([m.text_features(*text_batch(data.texts.ids[s:s + batch_size], pad_id))
                         for s in range(0, len(data), batch_size)])
        return {f"retrieval_{k}": v for k, v in retrieval_metrics(img @ txt.T, np.asarray(data.refs)).items()}
    preds = []
    for s in range(0, len(data), batch_size):
        logits = model(make_batch(data, range(s, min(s + batch_size, len(data))), bank, pad_id))
        preds.extend(logits.argmax(-1).tolist())
    if data.task == "vqa":
        return {"vqa_accuracy": vqa_accuracy([data.answers[p] for p in preds], data.refs)}
    preds = [bool(p) for p in preds]
    return {"nlvr2_accuracy": binary_accuracy(preds, list(data.refs)),
            **nlvr2_consistency_if_identified(preds, list(data.refs), list(data.ids))}


def finetune_vlmo(init_dir, data_dir, tokenizer_dir, task: str, train_cfg: TrainConfig, batch_size: int,
                  out_dir=None, eval_split: str = "test", eval_batch_size: int = 256, resume_dir=None) -> dict:
    """Fine-tune the VLMo in ``init_dir`` on ``task``, evaluate on ``eval_split``; returns the metrics."""
    tok = load_tokenizer(tokenizer_dir)
    backbone, meta = load_vlmo(init_dir)
    max_len = backbone.cfg.max_text_len
    train_data = load_task(data_dir, task, "train", tok, max_len)
    eval_data = load_task(data_dir, task, eval_split, tok, max_len, answers=train_data.answers or None)
    bank = ImageBank(data_dir, ("train", eval_split), backbone.cfg.preprocessing)
    torch.manual_seed(train_cfg.seed)  # the new head's init depends on the run seed only
    model = TaskModel(backbone, task, len(train_data.answers))

    def batch_fn(step: int) -> dict:
        return sample_batch(train_data, bank, tok.pad_token_id, batch_size, np.random.default_rng([train_cfg.seed, step, 5]))

    result = train(model, batch_fn, task_loss, train_cfg, resume_dir=resume_dir, desc=f"finetune_vlmo[{task}]")
    t0 = time.perf_counter()
    metrics = evaluate_task(model, eval_data, bank, tok.pad_token_id, eval_batch_size)
    params = sum(p.numel() for p in model.parameters())
    out = {**metrics, "task": task, "eval_split": eval_split, "eval_wall_s": time.perf_counter() - t0,
           "train_wall_s": result["wall_s"], "train_final_loss": result["final_loss"], "params": params,
           "backbone_params": sum(p.numel() for p in backbone.parameters()),
           "init_mode": backbone.cfg.mode}
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        save_model_file(model, Path(out_dir) / "model.safetensors")
        write_json(Path(out_dir) / "task.json", {"task": task, "arch": backbone.cfg.to_dict(), "init": str(init_dir),
                                                 "answers": train_data.answers, "history": result["history"]})
    log.info("%s on %s: %s", task, eval_split, {k: round(v, 2) for k, v in metrics.items()})
    return out


def collect_task_grams(model_dir, data_dir, tokenizer_dir, task: str, split: str = "val",
                       batch_size: int = 128) -> tuple[dict, dict]:
    """Grams of every expert Linear over ``task``'s ``split`` with the (modality-specific) model:
    the joint pass for vqa and nlvr2 (v and l below the vl layers, vl in them), the unimodal passes
    for retrieval (v and l everywhere), so each task's Grams cover exactly the experts it uses."""
    tok = load_tokenizer(tokenizer_dir)
    backbone, _ = load_vlmo(model_dir)
    data = load_task(data_dir, task, split, tok, backbone.cfg.max_text_len)
    bank = ImageBank(data_dir, (split,), backbone.cfg.preprocessing)
    model = TaskModel(backbone, task, max(1, len(data.answers))).eval()

    def run_pass() -> None:
        if task == "retrieval":
            evaluate_task(model, data, bank, tok.pad_token_id, batch_size)
            return
        for s in range(0, len(data), batch_size):
            b = make_batch(data, range(s, min(s + batch_size, len(data))), bank, tok.pad_token_id)
            text = backbone.text_shallow(b["input_ids"], b["attention_mask"])
            backbone.joint_top(text, b["attention_mask"], backbone.image_shallow(b["pixels"], 1))
            if task == "nlvr2":
                backbone.joint_top(text, b["attention_mask"], backbone.image_shallow(b["pixels2"], 2))

    return collect(backbone, run_pass, linear_modules(backbone), mask_fn=lambda: backbone.token_mask)
