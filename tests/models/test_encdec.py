"""VL-BART: shapes of forward / generate / NLVR2 scoring, and that both inputs reach the output."""

from __future__ import annotations

import pytest
import torch

from vltune.backbones.bart import build_tiny_bart
from vltune.backbones.tokenizer import VIS_EXTRA_IDS
from vltune.models.encdec import VLBart, per_example_loss


@pytest.fixture()
def vlbart(tokenizer):
    torch.manual_seed(0)
    bart = build_tiny_bart(tokenizer, d_model=32, layers=1, heads=2, ffn=64, max_positions=32)
    return VLBart(bart, feat_dim=8, vis_token_ids=tokenizer.convert_tokens_to_ids(VIS_EXTRA_IDS)).eval()


def _batch(tokenizer, n_images=1, tokens_per_image=5):
    enc = tokenizer(["vqa: what color is the circle?", "vqa: how many shapes?"], padding=True, return_tensors="pt")
    labels = tokenizer(["red", "2"], padding=True, return_tensors="pt")["input_ids"]
    labels[labels == tokenizer.pad_token_id] = -100
    n_vis = n_images * tokens_per_image
    return {
        "input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
        "vis_feats": torch.randn(2, n_vis, 8, generator=torch.Generator().manual_seed(1)),
        "vis_order": torch.arange(n_images).repeat_interleave(tokens_per_image).expand(2, -1),
        "labels": labels,
    }


@pytest.mark.parametrize("n_images", [1, 2])
def test_forward_shapes_and_joint_mask(vlbart, tokenizer, n_images):
    b = _batch(tokenizer, n_images)
    enc, mask = vlbart.encode(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"])
    n_text = b["input_ids"].shape[1]
    assert enc.last_hidden_state.shape == (2, n_text + 5 * n_images, 32)
    assert mask.shape == (2, n_text + 5 * n_images) and bool(mask[:, n_text:].all())
    out = vlbart(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"], labels=b["labels"])
    assert out.logits.shape == (*b["labels"].shape, len(tokenizer))
    loss = per_example_loss(vlbart, b)
    assert loss.shape == (2,) and torch.isfinite(loss).all()


def test_generate_and_first_token_logits_shapes(vlbart, tokenizer):
    b = _batch(tokenizer)
    out = vlbart.generate(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"],
                          num_beams=3, max_new_tokens=6)
    assert out.shape[0] == 2 and out.shape[1] <= 6 + 1
    logits = vlbart.first_token_logits(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"])
    assert logits.shape == (2, len(tokenizer))


def test_image_features_and_image_order_change_the_output(vlbart, tokenizer):
    b = _batch(tokenizer, n_images=2)
    args = (b["input_ids"], b["attention_mask"])
    ref = vlbart.first_token_logits(*args, b["vis_feats"], b["vis_order"])
    other_feats = vlbart.first_token_logits(*args, b["vis_feats"] + 1.0, b["vis_order"])
    swapped = torch.cat([b["vis_feats"][:, 5:], b["vis_feats"][:, :5]], dim=1)
    other_order = vlbart.first_token_logits(*args, swapped, b["vis_order"])
    assert not torch.allclose(ref, other_feats)
    assert not torch.allclose(ref, other_order)  # left/right matters for NLVR2


def test_text_positions_do_not_depend_on_visual_tokens(vlbart, tokenizer):
    """Visual tokens take no position embedding: padding the text never shifts them, and the
    text embedding of a sentence is the same with one or two images appended."""
    b1, b2 = _batch(tokenizer, 1), _batch(tokenizer, 2)
    b2["vis_feats"][:, :5] = b1["vis_feats"]
    # With the encoder layers removed, the output is the embedding itself.
    layers = vlbart.bart.get_encoder().layers
    vlbart.bart.get_encoder().layers = torch.nn.ModuleList()
    try:
        e1, _ = vlbart.encode(b1["input_ids"], b1["attention_mask"], b1["vis_feats"], b1["vis_order"])
        e2, _ = vlbart.encode(b2["input_ids"], b2["attention_mask"], b2["vis_feats"], b2["vis_order"])
    finally:
        vlbart.bart.get_encoder().layers = layers
    n_text = b1["input_ids"].shape[1]
    torch.testing.assert_close(e1.last_hidden_state[:, :n_text], e2.last_hidden_state[:, :n_text])
    torch.testing.assert_close(e1.last_hidden_state[:, n_text:], e2.last_hidden_state[:, n_text:n_text + 5])
