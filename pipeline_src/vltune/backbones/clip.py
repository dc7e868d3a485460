"""Tiny CLIP (transformers ``CLIPModel``: a ViT image tower + a text tower), pretrained by the
pipeline with CLIP's own symmetric contrastive loss on the world's image–caption pairs.

Paper: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
(https://arxiv.org/abs/2103.00020). The architecture is transformers' unchanged; only the sizes
are small, so published CLIP checkpoints go through the same feature-extraction code.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch

from ..data.images import CLIP_MEAN, CLIP_STD, decode_images
from ..data.tables import read_table, table_path
from ..train.distributed import is_main_process
from ..train.loop import TrainConfig, train
from ..train.objectives import clip_contrastive_terms
from .tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def build_tiny_clip(tokenizer, image_size: int, patch_size: int, hidden: int, layers: int, heads: int,
                    intermediate: int, projection: int, max_text_len: int):
    from transformers import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, max_position_embeddings=max_text_len,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, projection_dim=projection,
    )
    vision = CLIPVisionConfig(
        image_size=image_size, patch_size=patch_size, hidden_size=hidden, intermediate_size=intermediate,
        num_hidden_layers=layers, num_attention_heads=heads, projection_dim=projection,
    )
    cfg = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=projection)
    return CLIPModel(cfg)


def pretrain_clip(data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, arch: dict,
                  train_cfg: TrainConfig, batch_size: int, resume_dir: str | Path | None = None) -> dict:
    """Contrastive pretraining on the train split; ``save_pretrained`` model, tokenizer and image processor."""
    from transformers import CLIPImageProcessor

    tok = load_tokenizer(tokenizer_dir)
    images = read_table(table_path(data_dir, "images"), "images")
    images = images.filter(pc.equal(images["split"], "train"))
    caps = read_table(table_path(data_dir, "captions"), "captions")
    caps = dict(zip(caps["image_id"].to_pylist(), caps["captions"].to_pylist()))
    ids = images["image_id"].to_pylist()
    pixels = decode_images(images["image"].to_pylist(), arch["image_size"])
    captions = [caps[i] for i in ids]
    max_len = arch["max_text_len"]
    torch.manual_seed(train_cfg.seed)  # initialisation depends on the config's seed only
    model = build_tiny_clip(tok, **arch)

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([train_cfg.seed, step])
        idx = rng.choice(len(ids), size=min(batch_size, len(ids)), replace=False)
        texts = [captions[i][rng.integers(len(captions[i]))] for i in idx]
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        return {"pixel_values": pixels[idx], "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    result = train(model, batch_fn, clip_contrastive_terms, train_cfg, resume_dir=resume_dir, desc="pretrain_clip")
    if not is_main_process():  # rank 0 writes the backbone
        return result
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    CLIPImageProcessor(
        size={"shortest_edge": arch["image_size"]}, crop_size={"height": arch["image_size"], "width": arch["image_size"]},
        image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD),
    ).save_pretrained(out_dir)
    result["retrieval_r1_train_batch"] = _in_batch_r1(model, batch_fn(0))
    return result


@torch.no_grad()
def _in_batch_r1(model, batch: dict) -> float:
    """Image→text R@1 inside one training batch: a cheap sanity number for the log."""
    device = next(model.parameters()).device  # the model is where training left it (the GPU, if any)
    out = model(**{k: v.to(device) for k, v in batch.items()})
    logits = out.logits_per_image
    return float((logits.argmax(1) == torch.arange(len(logits), device=device)).float().mean())
