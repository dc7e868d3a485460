"""Backbone builders: BART text infilling keeps the sentence frame, the tokenizer is BART-style
with a CLIP-safe </s> id, and the tiny CLIP's text tower pools at </s>."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vltune.backbones.bart import infill
from vltune.backbones.clip import build_tiny_clip
from vltune.backbones.tokenizer import VIS_EXTRA_IDS

MASK = 4


@settings(max_examples=200, deadline=None)
@given(body=st.lists(st.integers(10, 99), min_size=0, max_size=40), seed=st.integers(0, 2**32 - 1))
def test_infill_keeps_specials_order_and_the_thirty_percent_cap(body, seed):
    ids = [1, *body, 3]
    out = infill(ids, MASK, np.random.default_rng(seed))
    assert out[0] == 1 and out[-1] == 3
    kept = [t for t in out[1:-1] if t != MASK]
    # kept tokens are an order-preserving subsequence of the original
    it = iter(body)
    assert all(any(t == b for b in it) for t in kept)
    assert len(body) - len(kept) <= round(0.3 * len(body))  # never more than the 30% budget is removed


def test_infill_hides_thirty_percent_in_poisson_spans_of_a_long_sentence():
    """BART's text infilling (Lewis et al., "BART: Denoising Sequence-to-Sequence Pre-training",
    https://arxiv.org/abs/1910.13461): 30% of the tokens replaced by spans of Poisson(λ=3) length,
    one <mask> a span. On a 60-token sentence over 200 seeds: every output hides tokens, on average
    close to the 18-token budget, in about 18/3 spans."""
    body = list(range(10, 70))
    removed, masks = [], []
    for seed in range(200):
        out = infill([1, *body, 3], MASK, np.random.default_rng(seed))
        removed.append(len(body) - sum(t != MASK for t in out[1:-1]))
        masks.append(out.count(MASK))
    assert min(removed) > 0 and max(removed) <= 18
    assert 16 <= np.mean(removed) <= 18
    assert 4 <= np.mean(masks) <= 9


def test_tokenizer_is_bart_style_and_clip_safe(tokenizer):
    ids = tokenizer("a red circle")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    # transformers' CLIP treats eos_token_id == 2 as a legacy config and pools at argmax(id)
    assert tokenizer.eos_token_id != 2
    assert all(t in tokenizer.get_vocab() for t in VIS_EXTRA_IDS)
    # NLVR2 is scored by comparing the first tokens of "true" and "false": they must differ
    true_ids, false_ids = (tokenizer(w, add_special_tokens=False)["input_ids"] for w in ("true", "false"))
    assert true_ids[0] != false_ids[0]


def test_tiny_clip_text_tower_pools_at_the_first_eos(tokenizer):
    torch.manual_seed(0)
    clip = build_tiny_clip(tokenizer, image_size=32, patch_size=16, hidden=32, layers=1, heads=2,
                           intermediate=64, projection=16, max_text_len=40).eval()
    enc = tokenizer(["a red circle", "a red circle above a blue square"], padding=True, return_tensors="pt")
    out = clip.text_model(**enc)
    eos_pos = (enc["input_ids"] == tokenizer.eos_token_id).int().argmax(1)
    expected = out.last_hidden_state[torch.arange(2), eos_pos]
    torch.testing.assert_close(out.pooler_output, expected)
