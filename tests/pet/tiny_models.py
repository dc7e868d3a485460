"""Tiny random VL-BART / T5 builders shared by the PET tests (no tokenizer, no download).

Imported as ``from tiny_models import ...``: pytest puts this folder on ``sys.path``.
"""

from __future__ import annotations

import torch

VOCAB = 64
FEAT_DIM = 8
N_VIS = 4


def make_vlbart(seed: int = 0, layers: int = 2):
    from transformers import BartConfig, BartForConditionalGeneration

    from vltune.models.encdec import VLBart

    torch.manual_seed(seed)
    cfg = BartConfig(vocab_size=VOCAB, d_model=32, encoder_layers=layers, decoder_layers=layers,
                     encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                     max_position_embeddings=32, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                     decoder_start_token_id=2, forced_eos_token_id=2, scale_embedding=False)
    return VLBart(BartForConditionalGeneration(cfg), FEAT_DIM, list(range(VOCAB - N_VIS, VOCAB))).eval()


def make_t5(seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                   pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    return T5ForConditionalGeneration(cfg).eval()


def make_vlt5(seed: int = 0):
    from vltune.models.encdec import VLT5

    return VLT5(make_t5(seed), FEAT_DIM, list(range(VOCAB - N_VIS, VOCAB))).eval()


def make_batch(seed: int = 1, n_images: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB - N_VIS, (2, 7), generator=g)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, 5:], attention_mask[1, 5:] = 1, 0  # one padded example
    labels = torch.randint(3, VOCAB - N_VIS, (2, 3), generator=g)
    return {
        "input_ids": input_ids, "attention_mask": attention_mask,
        "vis_feats": torch.randn(2, N_VIS * n_images, FEAT_DIM, generator=g),
        "vis_order": torch.arange(n_images).repeat_interleave(N_VIS).expand(2, -1),
        "labels": labels,
    }


def vl_logits(model, batch: dict) -> torch.Tensor:
    with torch.no_grad():
        return model(batch["input_ids"], batch["attention_mask"], batch["vis_feats"], batch["vis_order"],
                     labels=batch["labels"]).logits
