"""Tiny T5: span corruption hides spans behind ordered unique sentinels and loses nothing, the T5
tokenizer flavour drops BOS without touching the shared tokenizer, and pretraining learns."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vltune.backbones.t5 import SENTINELS, load_t5_tokenizer, pretrain_t5, span_corrupt
from vltune.backbones.tokenizer import VIS_EXTRA_IDS, load_tokenizer
from vltune.train.loop import TrainConfig

EOS, SENT = 3, list(range(500, 500 + len(SENTINELS)))


def _fill(src: list[int], tgt: list[int]) -> list[int]:
    """Undo span corruption: put each sentinel's target span back in its place in the input."""
    spans, current = {}, None
    for t in tgt[:-1]:
        if t in SENT:
            current = spans.setdefault(t, [])
        else:
            current.append(t)
    out = []
    for t in src:
        out.extend(spans[t] if t in SENT else [t])
    return out


@settings(max_examples=200, deadline=None)
@given(body=st.lists(st.integers(10, 99), min_size=0, max_size=60), seed=st.integers(0, 2**32 - 1))
def test_span_corruption_hides_ordered_spans_and_loses_nothing(body, seed):
    ids = [*body, EOS]
    src, tgt = span_corrupt(ids, SENT, np.random.default_rng(seed))
    assert _fill(src, tgt) == ids
    assert src[-1] == EOS and tgt[-1] == EOS
    used = [t for t in src if t in SENT]
    assert used == SENT[:len(used)] and [t for t in tgt if t in SENT] == used  # s_0, s_1, .. in both
    assert tgt[0] == SENT[0]  # a target starts with a sentinel, never with a BOS
    hidden = len(tgt) - 1 - len(used)
    if len(body) >= 2:  # ~15%, at least one token hidden and one kept
        assert hidden == min(max(round(0.15 * len(body)), 1), len(body) - 1)


def test_t5_tokenizer_drops_bos_adds_sentinels_and_leaves_the_shared_one_alone(tokenizer_dir, tokenizer, t5_tokenizer):
    shared = tokenizer("a red circle")["input_ids"]
    assert t5_tokenizer("a red circle")["input_ids"] == shared[1:]  # same ids, no <s>, ends with </s>
    assert t5_tokenizer.convert_tokens_to_ids(VIS_EXTRA_IDS) == tokenizer.convert_tokens_to_ids(VIS_EXTRA_IDS)
    sentinel_ids = t5_tokenizer.convert_tokens_to_ids(SENTINELS)
    assert sentinel_ids == list(range(len(tokenizer), len(tokenizer) + len(SENTINELS)))
    assert t5_tokenizer.decode([sentinel_ids[0], *shared[1:]], skip_special_tokens=True).strip() == "a red circle"
    # the shared tokenizer on disk (BART's and CLIP's) is unchanged
    reloaded = load_tokenizer(tokenizer_dir)
    assert len(reloaded) == len(tokenizer) and reloaded("a red circle")["input_ids"] == shared
    assert load_t5_tokenizer(tokenizer_dir)("true")["input_ids"] == t5_tokenizer("true")["input_ids"]


def test_tiny_t5_pretraining_lowers_the_loss_and_saves_a_t5_backbone(tiny_world, tokenizer_dir, tmp_path):
    from transformers import T5ForConditionalGeneration

    arch = dict(d_model=32, d_ff=64, d_kv=16, layers=1, heads=2, dropout=0.0)
    cfg = TrainConfig(steps=12, lr=3e-3, warmup_ratio=0.1, log_every=4, seed=0)
    result = pretrain_t5(tiny_world, tokenizer_dir, tmp_path, arch, cfg, batch_size=16)
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0]
    model = T5ForConditionalGeneration.from_pretrained(str(tmp_path))
    tok = load_tokenizer(tmp_path)
    assert model.config.decoder_start_token_id == tok.pad_token_id and model.config.eos_token_id == tok.eos_token_id
    assert model.config.vocab_size == len(tok) and tok("true")["input_ids"][-1] == tok.eos_token_id
    assert tok("true")["input_ids"][0] != tok.bos_token_id
    with torch.no_grad():
        out = model.generate(**tok(["a red circle"], return_tensors="pt"), max_new_tokens=4)
    assert out[0, 0].item() == tok.pad_token_id  # T5 decoding starts from <pad>
