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


# --- VL-T5, and what both families share ---------------------------------------------------------

def _tiny_vl(family, tokenizer, t5_tokenizer):
    """A tiny VL model of ``family`` and its tokenizer (T5 with 2 blocks: only block 0 owns the bias)."""
    from vltune.backbones.t5 import build_tiny_t5
    from vltune.models.encdec import VL_FAMILIES

    torch.manual_seed(0)
    if family == "bart":
        lm, tok = build_tiny_bart(tokenizer, d_model=32, layers=1, heads=2, ffn=64, max_positions=32), tokenizer
    else:
        lm, tok = build_tiny_t5(t5_tokenizer, d_model=32, d_ff=64, d_kv=16, layers=2, heads=2), t5_tokenizer
    return VL_FAMILIES.get(family)(lm, feat_dim=8, vis_token_ids=tok.convert_tokens_to_ids(VIS_EXTRA_IDS)).eval(), tok


@pytest.mark.parametrize("n_images", [1, 2])
def test_vlt5_forward_generate_and_first_token_shapes(tokenizer, t5_tokenizer, n_images):
    model, tok = _tiny_vl("t5", tokenizer, t5_tokenizer)
    b = _batch(tok, n_images)
    n_text = b["input_ids"].shape[1]
    enc, mask = model.encode(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"])
    assert enc.last_hidden_state.shape == (2, n_text + 5 * n_images, 32)
    assert mask.shape == (2, n_text + 5 * n_images) and bool(mask[:, n_text:].all())
    out = model(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"], labels=b["labels"])
    assert out.logits.shape == (*b["labels"].shape, len(tok))
    loss = per_example_loss(model, b)
    assert loss.shape == (2,) and torch.isfinite(loss).all()
    gen = model.generate(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"], num_beams=3,
                         max_new_tokens=6)
    assert gen.shape[0] == 2 and gen.shape[1] <= 6 + 1 and bool((gen[:, 0] == tok.pad_token_id).all())
    logits = model.first_token_logits(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"])
    assert logits.shape == (2, len(tok))


def test_vlt5_text_part_is_hf_t5_when_there_are_no_visual_tokens(tokenizer, t5_tokenizer):
    """With no visual tokens VL-T5's encoder is HF's T5 encoder: the shared table unscaled, no
    extra norm, the same relative bias, final norm. (Masking visual tokens instead would test the
    same thing: masked keys get zero weight.)"""
    model, tok = _tiny_vl("t5", tokenizer, t5_tokenizer)
    b = _batch(tok)
    none = (b["vis_feats"][:, :0], b["vis_order"][:, :0])
    enc, _ = model.encode(b["input_ids"], b["attention_mask"], *none)
    ref = model.t5.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    torch.testing.assert_close(enc.last_hidden_state, ref)


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_outputs_do_not_depend_on_how_far_the_text_is_padded(tokenizer, t5_tokenizer, family):
    """Visual tokens have no text position: for T5 the relative bias covers text pairs only (as
    VL-T5's JointEncoder); a bias over the joint sequence would move the visual tokens with the
    padding and change every output."""
    model, tok = _tiny_vl(family, tokenizer, t5_tokenizer)
    b = _batch(tok, n_images=2)
    extra = 4
    ids = torch.cat([b["input_ids"], torch.full((2, extra), tok.pad_token_id)], dim=1)
    mask = torch.cat([b["attention_mask"], torch.zeros(2, extra, dtype=torch.long)], dim=1)
    e1, _ = model.encode(b["input_ids"], b["attention_mask"], b["vis_feats"], b["vis_order"])
    e2, _ = model.encode(ids, mask, b["vis_feats"], b["vis_order"])
    n_text = b["input_ids"].shape[1]
    real = b["attention_mask"].bool()
    torch.testing.assert_close(e1.last_hidden_state[:, :n_text][real], e2.last_hidden_state[:, :n_text][real])
    torch.testing.assert_close(e1.last_hidden_state[:, n_text:], e2.last_hidden_state[:, n_text + extra:])


@pytest.mark.parametrize("family", ["bart", "t5"])
def test_image_features_and_order_reach_the_output_in_both_families(tokenizer, t5_tokenizer, family):
    model, tok = _tiny_vl(family, tokenizer, t5_tokenizer)
    b = _batch(tok, n_images=2)
    args = (b["input_ids"], b["attention_mask"])
    ref = model.first_token_logits(*args, b["vis_feats"], b["vis_order"])
    swapped = torch.cat([b["vis_feats"][:, 5:], b["vis_feats"][:, :5]], dim=1)
    assert not torch.allclose(ref, model.first_token_logits(*args, b["vis_feats"] + 1.0, b["vis_order"]))
    assert not torch.allclose(ref, model.first_token_logits(*args, swapped, b["vis_order"]))


@pytest.mark.parametrize("family, norm", [("bart", "LayerNorm"), ("t5", "T5LayerNorm")])
def test_the_inner_lm_keeps_its_module_names_under_the_family_attribute(tokenizer, t5_tokenizer, family, norm):
    """PET injectors match module names: the HF tree sits unchanged under ``bart.`` / ``t5.``."""
    model, _ = _tiny_vl(family, tokenizer, t5_tokenizer)
    assert model.lm is getattr(model, family) and model.family == family and model.config is model.lm.config
    names = {n for n, _ in model.named_modules()}
    inner = {"bart": "bart.model.encoder.layers.0.fc2", "t5": "t5.encoder.block.1.layer.0.SelfAttention"}[family]
    assert inner in names
    assert type(model.visual_embedding.feat_norm).__name__ == norm  # VL-T5 uses T5's scale-only norm
