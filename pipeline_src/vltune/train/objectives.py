"""Training objectives as ``(loss_sum, count)`` pairs, the form the loop needs to normalise a loss
by the global batch under data parallelism (train/distributed.py)."""

from __future__ import annotations

import torch
from torch import nn

from .distributed import all_gather_with_grad, world


def token_ce_terms(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Seq2seq LM (BART denoising, T5 span corruption): token cross-entropy summed over the target
    tokens (``labels != -100``) and their count, i.e. transformers' mean loss as a sum and count."""
    logits = model(**batch).logits
    labels = batch["labels"]
    loss = nn.functional.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=-100, reduction="sum")
    return loss, (labels != -100).sum()


def clip_contrastive_terms(model: nn.Module, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE over the *global* batch: each process scores its own images and texts
    against every process's (gathered with gradients), so the sum over processes equals one
    process's loss on the whole batch. Per pair: (image→text CE + text→image CE) / 2."""
    out = model(**batch)
    img, txt = out.image_embeds.float(), out.text_embeds.float()  # L2-normalised by CLIPModel
    all_img, all_txt = all_gather_with_grad(img), all_gather_with_grad(txt)
    scale = getattr(model, "module", model).logit_scale.exp()
    rank, _ = world()
    target = torch.arange(len(img), device=img.device) + rank * len(img)
    i2t = nn.functional.cross_entropy(scale * img @ all_txt.t(), target, reduction="sum")
    t2i = nn.functional.cross_entropy(scale * txt @ all_img.t(), target, reduction="sum")
    return (i2t + t2i) / 2, torch.tensor(len(img), device=img.device)
