"""Tiny BART (transformers ``BartForConditionalGeneration``), pretrained by the pipeline as a
denoising LM on the world's text with BART's text-infilling noise.

Paper: Lewis et al., "BART: Denoising Sequence-to-Sequence Pre-training" (https://arxiv.org/abs/1910.13461).
Text infilling: spans with Poisson(λ=3) lengths covering ~30% of the tokens are each replaced by a
single ``<mask>``; the decoder reconstructs the original sentence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..train.distributed import is_main_process
from ..train.loop import TrainConfig, train
from ..train.objectives import token_ce_terms
from ..utils.tensors import pad_sequences
from .tokenizer import load_tokenizer, world_texts


def build_tiny_bart(tokenizer, d_model: int, layers: int, heads: int, ffn: int, max_positions: int,
                    dropout: float = 0.1):
    from transformers import BartConfig, BartForConditionalGeneration

    cfg = BartConfig(
        vocab_size=len(tokenizer), d_model=d_model, encoder_layers=layers, decoder_layers=layers,
        encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=tokenizer.eos_token_id, scale_embedding=False,
        dropout=dropout, attention_dropout=dropout, activation_dropout=dropout,
    )
    return BartForConditionalGeneration(cfg)


def infill(ids: list[int], mask_id: int, rng: np.random.Generator, ratio: float = 0.3, lam: float = 3.0) -> list[int]:
    """BART text infilling on one sequence ``<s> w1 .. wn </s>`` (specials are never masked)."""
    body = ids[1:-1]
    budget = int(round(ratio * len(body)))
    out, i = [], 0
    masked = 0
    while i < len(body):
        if masked < budget and rng.random() < ratio:
            span = int(min(rng.poisson(lam), budget - masked, len(body) - i))
            out.append(mask_id)  # a zero-length span inserts a <mask>, as in BART
            i += span
            masked += max(span, 1)
        else:
            out.append(body[i])
            i += 1
    return [ids[0], *out, ids[-1]]


def pretrain_bart(data_dir: str | Path, tokenizer_dir: str | Path, out_dir: str | Path, arch: dict,
                  train_cfg: TrainConfig, batch_size: int, resume_dir: str | Path | None = None) -> dict:
    tok = load_tokenizer(tokenizer_dir)
    texts = sorted(set(world_texts(data_dir, "train")))
    max_len = arch["max_positions"]
    encoded = tok(texts, truncation=True, max_length=max_len)["input_ids"]
    torch.manual_seed(train_cfg.seed)  # initialisation depends on the config's seed only
    model = build_tiny_bart(tok, **arch)
    pad = tok.pad_token_id

    def batch_fn(step: int) -> dict:
        rng = np.random.default_rng([train_cfg.seed, step])
        idx = rng.choice(len(encoded), size=min(batch_size, len(encoded)), replace=False)
        src = [infill(encoded[i], tok.mask_token_id, rng) for i in idx]
        tgt = [encoded[i] for i in idx]
        input_ids = pad_sequences(src, pad)
        return {"input_ids": input_ids, "attention_mask": (input_ids != pad).long(), "labels": pad_sequences(tgt, -100)}

    result = train(model, batch_fn, token_ce_terms, train_cfg, resume_dir=resume_dir, desc="pretrain_bart")
    if not is_main_process():  # rank 0 writes the backbone
        return result
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return result

