"""eP-ALM model (vltune.models.epalm): the hooks on transformers' OPT against a layer-by-layer
reference loop written from eP-ALM, arXiv 2303.11403, where the token sits at each layer, what trains."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings, strategies as st

from vltune.models.epalm import EPALM, Injection, extended_mask, text_logits
from vltune.pet import apply_pet, count_parameters

VOCAB, D, D_V, LAYERS, VIT_DEPTH = 64, 32, 24, 6, 4


def make_lm(seed: int = 0, word_dim: int = D, pre_ln: bool = True):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=VOCAB, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=4, ffn_dim=64,
                    max_position_embeddings=32, word_embed_proj_dim=word_dim, do_layer_norm_before=pre_ln,
                    pad_token_id=1, bos_token_id=2, eos_token_id=2, dropout=0.0)
    return OPTForCausalLM(cfg).eval()


def make_vit(seed: int = 0):
    from vltune.backbones.vit import build_tiny_vit

    torch.manual_seed(seed)
    return build_tiny_vit(32, 16, D_V, VIT_DEPTH, 2, 2.0).eval()


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (2, 7), generator=g)
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = 1, 0  # right padding, as training batches
    return ids, mask, torch.randn(2, 3, 32, 32, generator=g)


def reference_logits(model: EPALM, ids, mask, tokens, prompt, inj: Injection) -> torch.Tensor:
    """The reference's modified ``OPTDecoder.forward`` restated as an explicit loop over the layers."""
    dec = model.lm.model.decoder
    h = dec.embed_tokens(ids)
    if dec.project_in is not None:
        h = dec.project_in(h)
    h = h + dec.embed_positions(mask, 0)  # text keeps positions 0, 1, …; the prompt gets none
    n_prompt = 0
    if prompt is not None:
        p = prompt if dec.project_in is None else dec.project_in(prompt)
        h = torch.cat([p.expand(len(ids), -1, -1), h], dim=1)
        n_prompt = len(prompt)
    step = (inj.end - inj.start) // inj.n_tokens
    for layer_idx, layer in enumerate(dec.layers):
        visual = tokens is not None and layer_idx >= inj.start
        if tokens is not None and inj.start <= layer_idx < inj.end:
            m = min((layer_idx - inj.start) // step, inj.n_tokens - 1)
            rest = h if layer_idx == inj.start else h[:, 1:]
            h = torch.cat([tokens[:, m:m + 1], rest], dim=1)
        # causal over prompt + text, pads masked as keys; the visual row/column all zeros ("full")
        n = n_prompt + ids.shape[1]
        keys = torch.cat([torch.ones(len(ids), n_prompt), mask.float()], dim=1).bool()
        allowed = torch.tril(torch.ones(n, n)).bool()[None] & keys[:, None, :]
        if visual:
            full = torch.ones(len(ids), n + 1, n + 1, dtype=torch.bool)
            full[:, 1:, 1:] = allowed
            allowed = full
        add = torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
        h = layer(h, attention_mask=add)
        h = h[0] if isinstance(h, tuple) else h
    if dec.final_layer_norm is not None:
        h = dec.final_layer_norm(h)
    if dec.project_out is not None:
        h = dec.project_out(h)
    return model.lm.lm_head(h)


def test_empty_slots_are_the_plain_lm():
    lm = make_lm()
    ids, mask, _ = batch()
    plain = lm(input_ids=ids, attention_mask=mask).logits
    model = EPALM(lm, make_vit())
    assert model.n_prefix == 0
    torch.testing.assert_close(model(ids, mask).logits, plain, rtol=0, atol=0)


@pytest.mark.parametrize("word_dim,pre_ln", [(D, True), (16, False)])  # OPT-350m: project_in/out, post-LN
@pytest.mark.parametrize("method", [
    {"method": "epalm-linear", "n_tokens": 2, "start_layer": 2, "end_layer": 5},
    {"method": "epalm-prompt", "n_tokens": 3, "start_layer": 1, "end_layer": 5, "prompt_len": 3},
    {"method": "epalm-prompt", "n_tokens": 1, "start_layer": 0, "end_layer": 6, "prompt_len": 2,
     "prompt_mlp": False, "shared_connector": True},
])
def test_hooks_match_a_layer_by_layer_reference(method, word_dim, pre_ln):
    model = EPALM(make_lm(word_dim=word_dim, pre_ln=pre_ln), make_vit())
    apply_pet(model, method)
    ids, mask, pixels = batch()
    with torch.no_grad():
        tokens = model.perceptual_tokens(pixel_values=pixels)
        prompt = None if model.prompt is None else model.prompt(1)[0]
        expected = reference_logits(model, ids, mask, tokens, prompt, model.injection)
        got = model(ids, mask, pixel_values=pixels).logits
    assert got.shape == (2, model.n_prefix + ids.shape[1], VOCAB)
    # padded query rows are never read (their loss is ignored); compare every real position
    real = torch.cat([torch.ones(2, model.n_prefix, dtype=torch.bool), mask.bool()], dim=1)
    torch.testing.assert_close(got[real], expected[real], rtol=1e-5, atol=1e-5)


def test_token_inserted_at_start_and_replaced_until_end():
    """Forward hooks record each layer's input: one extra position from layer s on, position 0
    holding p_m at s..e-1 with m = min((ℓ - s) // ((e - s) // M), M - 1), and no longer after."""
    model = EPALM(make_lm(), make_vit())
    apply_pet(model, {"method": "epalm-linear", "n_tokens": 2, "start_layer": 1, "end_layer": 4})
    seen = {}
    for i, layer in enumerate(model.lm.model.decoder.layers):
        layer.register_forward_hook(lambda mod, args, kwargs, out, i=i: seen.__setitem__(
            i, (args[0] if args else kwargs["hidden_states"]).detach().clone()), with_kwargs=True)
    ids, mask, pixels = batch()
    with torch.no_grad():
        tokens = model.perceptual_tokens(pixel_values=pixels)
        model(ids, mask, pixel_values=pixels)
    assert [seen[i].shape[1] for i in range(LAYERS)] == [7, 8, 8, 8, 8, 8]
    # step = (4 - 1) // 2 = 1: layer 1 → p_0, layers 2, 3 → p_1; layers 4, 5 read what layer 3 wrote
    for layer, m in ((1, 0), (2, 1), (3, 1)):
        torch.testing.assert_close(seen[layer][:, 0], tokens[:, m], rtol=0, atol=0)
    for layer in (4, 5):
        assert not torch.allclose(seen[layer][:, 0], tokens[:, 1])
    assert [model.injection.token_index(i) for i in range(LAYERS)] == [None, 0, 1, 1, None, None]


@settings(max_examples=60, deadline=None)
@given(start=st.integers(0, 30), length=st.integers(1, 20), n_tokens=st.integers(1, 8))
def test_every_token_is_used_in_order(start, length, n_tokens):
    if length < n_tokens:
        with pytest.raises(ValueError, match="at least as many layers"):
            Injection(start, start + length, n_tokens)
        return
    inj = Injection(start, start + length, n_tokens)
    idx = [inj.token_index(layer) for layer in range(start, start + length)]
    assert idx[0] == 0 and idx[-1] == n_tokens - 1 and sorted(set(idx)) == list(range(n_tokens))
    assert idx == sorted(idx)  # shallow → deep
    assert inj.token_index(start - 1) is None and inj.token_index(start + length) is None


def test_causal_mask_keeps_text_from_the_future():
    """``full`` (the reference): the token attends to every text position, so in layers ≥ e a text
    position's output depends on later text (eP-ALM, arXiv 2303.11403); ``causal`` removes that."""
    text_mask = torch.ones(1, 4, dtype=torch.long)
    full = extended_mask(text_mask, 0, True, "full", torch.float32)[0, 0]
    causal = extended_mask(text_mask, 0, True, "causal", torch.float32)[0, 0]
    assert (full[0] == 0).all() and (full[:, 0] == 0).all()
    assert (causal[0, 1:] < 0).all() and causal[0, 0] == 0 and (causal[:, 0] == 0).all()
    for mode, leaks in (("full", True), ("causal", False)):
        model = EPALM(make_lm(), make_vit())
        apply_pet(model, {"method": "epalm-linear", "n_tokens": 1, "start_layer": 2, "end_layer": 4, "mask": mode})
        ids, mask, pixels = batch()
        ids, mask, pixels = ids[:1], mask[:1], pixels[:1]
        changed = ids.clone()
        changed[0, -1] = (changed[0, -1] + 1) % VOCAB  # change only the last token
        with torch.no_grad():
            a = text_logits(model, model(ids, mask, pixel_values=pixels))[0, :-1]
            b = text_logits(model, model(changed, mask, pixel_values=pixels))[0, :-1]
        assert (not torch.allclose(a, b)) == leaks, mode


def test_only_connection_and_prompt_train_with_counts():
    model = EPALM(make_lm(), make_vit())
    frozen = count_parameters(model)["total_params"]
    apply_pet(model, {"method": "epalm-prompt", "n_tokens": 3, "start_layer": 1, "end_layer": 5, "prompt_len": 4})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("connector.", "prompt.")) for n in trainable)
    # M separate Linear(d_v → D) + table P×D_w + MLP 2·(D_w² + D_w) (eP-ALM, arXiv 2303.11403)
    expected = 3 * (D_V * D + D) + 4 * D + 2 * (D * D + D)
    counts = count_parameters(model)
    assert counts["trainable_params"] == expected and counts["total_params"] == frozen + expected
    shared = EPALM(make_lm(), make_vit())
    apply_pet(shared, {"method": "epalm-linear", "n_tokens": 3, "start_layer": 1, "end_layer": 5,
                       "shared_connector": True})
    assert count_parameters(shared)["trainable_params"] == D_V * D + D


def test_generate_beams_use_the_image_and_match_one_by_one():
    model = EPALM(make_lm(), make_vit())
    apply_pet(model, {"method": "epalm-prompt", "n_tokens": 2, "start_layer": 1, "end_layer": 5, "prompt_len": 2})
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.connector.parameters():
            p.mul_(30)  # a strong visual signal so the two images must decode differently
    ids = torch.tensor([[1, 2, 5, 9], [2, 7, 8, 9]])  # left padded
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    _, _, pixels = batch()
    kw = dict(num_beams=3, max_new_tokens=4, do_sample=False, pad_token_id=1, eos_token_id=0)
    both = model.generate(ids, mask, pixel_values=pixels, **kw)
    for i in range(2):
        alone = model.generate(ids[i:i + 1, mask[i].argmax():], mask[i:i + 1, mask[i].argmax():],
                               pixel_values=pixels[i:i + 1], **kw)
        assert both[i, :alone.shape[1]].tolist() == alone[0].tolist()
    other = model.generate(ids, mask, pixel_values=pixels.flip(0), **kw)
    assert not torch.equal(both, other)
    with pytest.raises(ValueError, match="left-padded"):
        model.generate(torch.tensor([[5, 9, 1]]), torch.tensor([[1, 1, 0]]), pixel_values=pixels[:1], **kw)


def test_bad_inputs_name_what_is_wrong():
    model = EPALM(make_lm(), make_vit())
    with pytest.raises(ValueError, match="no eP-ALM connector"):
        model.perceptual_tokens(torch.zeros(2, VIT_DEPTH, D_V))
    apply_pet(model, {"method": "epalm-linear", "n_tokens": 2, "start_layer": 1, "end_layer": 5})
    with pytest.raises(ValueError, match=r"perception must be \(B, depth >= 2, 24\)"):
        model.perceptual_tokens(torch.zeros(2, VIT_DEPTH, D_V + 1))
    with pytest.raises(ValueError, match="already applied"):
        apply_pet(model, {"method": "epalm-linear"})
    with pytest.raises(ValueError, match="do not fit an LM of 6 layers"):
        apply_pet(EPALM(make_lm(), make_vit()), {"method": "epalm-linear", "n_tokens": 1, "end_layer": 9})
    with pytest.raises(ValueError, match="n_tokens=6 but the encoder has 4 blocks"):
        apply_pet(EPALM(make_lm(), make_vit()), {"method": "epalm-linear", "n_tokens": 6})
    with pytest.raises(ValueError, match="needs an eP-ALM model"):
        apply_pet(make_lm(), {"method": "epalm-linear"})
