"""PET methods on tiny random VL-BART and T5: identity at zero modification, VL-PET's formulas,
which parameters train, and clear errors for bad names and keys."""

from __future__ import annotations

import copy
import re

import pytest
import torch
from torch.nn import functional as F

from vltune.pet import apply_pet, method_names
from vltune.pet.das.layer import DasAdapter
from vltune.pet.layers import Bottleneck
from vltune.pet.vlpet.layer import LargeGate, MiddleXGate, MiddleYGate, SmallGate, VLPetSubLayer

from tiny_models import make_batch, make_t5, make_vlbart, make_vlt5, vl_logits

VLPET = ["vlpet-large", "vlpet-middlex", "vlpet-middley", "vlpet-small"]

@torch.no_grad()
def _make_identity(model: torch.nn.Module) -> None:
    """ΔH = 0 and G ≡ 1 exactly (σ(30) rounds to 1.0 in float32); LoRA's B is already 0 (PEFT's init)."""
    for m in model.modules():
        if isinstance(m, (Bottleneck, DasAdapter)):
            m.zero_init_up_()
        elif isinstance(m, LargeGate):
            m.up.weight.zero_()
            m.up.bias.fill_(30.0)
        elif isinstance(m, (MiddleXGate, SmallGate)):
            m.proj.weight.zero_()
            m.proj.bias.fill_(30.0)
        elif isinstance(m, MiddleYGate):
            m.z.zero_()


IDENTITY_CONFIGS = [{"method": m} for m in method_names() if m != "prompt"] + [{"method": "prompt", "length": 0}]


@pytest.mark.parametrize("spec", IDENTITY_CONFIGS, ids=lambda s: s["method"])
def test_zero_modification_keeps_vlbart_outputs_and_generation(spec):
    model, batch = make_vlbart(), make_batch(n_images=2)
    base = copy.deepcopy(model)
    apply_pet(model, spec)
    _make_identity(model)
    assert torch.equal(vl_logits(model, batch), vl_logits(base, batch))
    args = (batch["input_ids"], batch["attention_mask"], batch["vis_feats"], batch["vis_order"])
    # generation re-uses cached cross-attention values: the value adapter must be in them
    assert torch.equal(model.generate(*args, num_beams=2, max_new_tokens=4), base.generate(*args, num_beams=2, max_new_tokens=4))


@pytest.mark.parametrize("method", VLPET + ["adapter", "lora"])
def test_zero_modification_keeps_t5_outputs(method):
    model = make_t5()
    base = copy.deepcopy(model)
    apply_pet(model, {"method": method, "scaling": 1.0} if method.startswith("vlpet") else method)
    _make_identity(model)
    ids = torch.randint(2, 60, (2, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out, ref = (m(input_ids=ids, decoder_input_ids=ids[:, :4]).logits for m in (model, base))
    assert torch.equal(out, ref)


def test_prompt_tuning_on_vlt5_enters_the_encoder_and_trains_alone():
    """VL-T5 has the same prompt slot as VL-BART: an empty prompt is the identity, a real one changes
    the outputs (the prompt joins the text's relative position bias), and only it (and the visual
    embedding, trained by every PET method) gets gradients."""
    batch = make_batch(n_images=2)
    base = make_vlt5()
    ref = vl_logits(base, batch)
    assert torch.equal(vl_logits(apply_pet(make_vlt5(), {"method": "prompt", "length": 0}), batch), ref)
    model = apply_pet(make_vlt5(), {"method": "prompt", "length": 3})
    assert not torch.allclose(vl_logits(model, batch), ref)
    model.train()
    model(batch["input_ids"], batch["attention_mask"], batch["vis_feats"], batch["vis_order"],
          labels=batch["labels"]).loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert any(n.startswith("encoder_prompt.") for n in got), got
    assert all(n.startswith(("encoder_prompt.", "visual_embedding.")) for n in got), got


def test_modification_changes_outputs():
    """The default-initialised methods are not silently inert (G ≈ 0.5 halves BART's sub-layers)."""
    batch = make_batch()
    ref = vl_logits(make_vlbart(), batch)
    for method in VLPET + ["adapter", "prompt"]:
        assert not torch.allclose(vl_logits(apply_pet(make_vlbart(), method), batch), ref), method


def _gate(gate: torch.nn.Module, x: torch.Tensor, h_mod: torch.Tensor) -> torch.Tensor:
    """VL-PET, arXiv 2308.09804, written out independently of the layer classes."""
    if isinstance(gate, LargeGate):
        return torch.sigmoid(F.linear(F.gelu(F.linear(x, gate.down.weight, gate.down.bias), approximate="tanh"),
                                      gate.up.weight, gate.up.bias))
    if isinstance(gate, MiddleXGate):
        return torch.sigmoid((x + h_mod) @ gate.proj.weight.T + gate.proj.bias)
    if isinstance(gate, MiddleYGate):
        return 1 + gate.z
    return torch.sigmoid(torch.cat([x, h_mod], -1) @ gate.proj.weight.T + gate.proj.bias).mean(1, keepdim=True)


def _modified(sub: VLPetSubLayer, x: torch.Tensor, h: torch.Tensor, s: float = 1.0) -> torch.Tensor:
    heads = torch.cat([F.linear(h, d.weight, d.bias) for d in sub.adapter.down], -1)
    h_mod = h + F.linear(F.gelu(heads, approximate="tanh"), sub.adapter.up.weight, sub.adapter.up.bias)
    return s * h_mod * _gate(sub.gate, x, h_mod)


@pytest.mark.parametrize("method", VLPET)
@torch.no_grad()
def test_vlpet_bart_encoder_layer_is_post_ln_of_gated_sublayers(method):
    """BART: out = LN(X + (H + ΔH) ⊙ G(X, H + ΔH)) for self-attention, then for the FFN (eval: no dropout)."""
    model = apply_pet(make_vlbart(), method)
    layer = model.bart.model.encoder.layers[0]
    x = torch.randn(2, 5, 32)
    h = layer.self_attn.forward(x, attention_mask=None)[0]  # .forward bypasses the hooks
    x2 = layer.self_attn_layer_norm(x + _modified(layer.self_attn.vlpet, x, h))
    h2 = layer.fc2.forward(layer.activation_fn(layer.fc1.forward(x2)))
    expected = layer.final_layer_norm(x2 + _modified(layer.fc2.vlpet, x2, h2))
    torch.testing.assert_close(layer(x, None), expected)


@pytest.mark.parametrize("method", VLPET)
@torch.no_grad()
def test_vlpet_t5_block_is_pre_ln_with_gate_from_residual_stream(method):
    """T5: h ← h + s·(y + Δy) ⊙ G(h, y + Δy), y = Module(LN(h)); G reads the un-normalised h; s = 0.3."""
    model = apply_pet(make_t5(), {"method": method, "zero_init_adapter_up": False, "zero_init_gate": False})
    attn_layer, ff_layer = model.encoder.block[1].layer
    h = torch.randn(2, 5, 32)
    y = attn_layer.SelfAttention.forward(attn_layer.layer_norm(h))[0]
    h2 = h + _modified(attn_layer.SelfAttention.vlpet, h, y, s=0.3)
    y2 = ff_layer.DenseReluDense.forward(ff_layer.layer_norm(h2))
    expected = h2 + _modified(ff_layer.DenseReluDense.vlpet, h2, y2, s=0.3)
    torch.testing.assert_close(ff_layer(attn_layer(h)[0]), expected)


def test_vlpet_decoder_value_adapter_is_parallel_to_the_value_projection():
    """V = W_v E + b_v + up(gelu_new(down(E))) in decoder cross-attention only; keys unchanged."""
    model = apply_pet(make_vlbart(), "vlpet-large")
    attn = model.bart.model.decoder.layers[0].encoder_attn
    e = torch.randn(2, 5, 32)
    with torch.no_grad():
        vpa = attn.v_proj.vpa
        expected = attn.v_proj.forward(e) + vpa.up(F.gelu(vpa.down[0](e), approximate="tanh"))
        torch.testing.assert_close(attn.v_proj(e), expected)
        torch.testing.assert_close(attn.k_proj(e), attn.k_proj.forward(e))
    assert not hasattr(model.bart.model.decoder.layers[0].self_attn.v_proj, "vpa")


def test_t5_zero_inits_and_scaling_follow_the_t5_scripts():
    """T5 defaults: ΔH = 0, gates start at σ(0) = 0.5 (large) or 1 (middleY), s = 0.3, VPA up = 0."""
    model = apply_pet(make_t5(), "vlpet-large")
    sub = model.encoder.block[0].layer[0].SelfAttention.vlpet
    assert sub.scaling == 0.3 and sub.adapter.down[0].out_features == 192 // 4
    assert not sub.adapter.up.weight.any() and not sub.gate.up.weight.any()
    assert not model.decoder.block[0].layer[1].EncDecAttention.v.vpa.up.weight.any()
    assert not apply_pet(make_t5(), "vlpet-middley").encoder.block[0].layer[1].DenseReluDense.vlpet.gate.z.any()


def _expected_trainable(method: str, name: str) -> bool:
    """Which parameters should train, by name: an independent check of the type-based selection."""
    visual = name.startswith("visual_embedding.")
    norm = "layer_norm" in name or "layernorm" in name
    rules = {
        "full": True,
        "bitfit": visual or name.endswith(".bias"),
        "layernorm": visual or norm,
        "adapter": visual or norm or ".adapter." in name,
        "lora": visual or "lora_" in name or name.endswith(".bias"),
        "prompt": visual or name.startswith("encoder_prompt."),
        "das": visual or ".das_adapter." in name,
    }
    vlpet = visual or ".vlpet." in name or ".vpa." in name or (name.startswith("bart.model.encoder.") and norm)
    return rules.get(method, vlpet)


@pytest.mark.parametrize("method", method_names())
def test_only_intended_parameters_get_gradients(method):
    model = apply_pet(make_vlbart(), method).train()
    batch = make_batch(n_images=2)
    model(batch["input_ids"], batch["attention_mask"], batch["vis_feats"], batch["vis_order"], labels=batch["labels"]).loss.backward()
    names = [n for n, _ in model.named_parameters()]
    expected = {n for n in names if _expected_trainable(method, n)}
    assert {n for n, p in model.named_parameters() if p.grad is not None} == expected
    assert {n for n, p in model.named_parameters() if p.requires_grad} == expected


def test_full_trains_everything_like_before():
    model = apply_pet(make_vlbart(), "full")
    assert all(p.requires_grad for p in model.parameters())
    assert not any(isinstance(m, (Bottleneck, VLPetSubLayer)) for m in model.modules())


def test_vlpet_injects_one_module_per_encoder_sublayer_and_decoder_layer():
    model = apply_pet(make_vlbart(layers=3), "vlpet-small")
    subs = [n for n, m in model.named_modules() if isinstance(m, VLPetSubLayer)]
    vpas = [n for n, m in model.named_modules() if n.endswith(".vpa")]
    assert len(subs) == 6 and all(re.search(r"encoder\.layers\.\d\.(self_attn|fc2)\.vlpet$", n) for n in subs)
    assert len(vpas) == 3 and all(re.search(r"decoder\.layers\.\d\.encoder_attn\.v_proj\.vpa$", n) for n in vpas)


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, message", [
    ("vlpet-huge", r"unknown PET method 'vlpet-huge'.*vlpet-large"),
    ({"adapter_dim": 8}, r"needs a 'method' key"),
    ({"method": "vlpet-large", "adaptor_dim": 8}, r"unknown key 'adaptor_dim'.*'adapter_dim'"),
    ({"method": "lora", "rank": 8}, r"unknown key 'rank'"),
    ({"method": "vlpet-small", "adapter_dim": 10}, r"adapter_dim 10 is not a multiple of adapter_heads 4"),
    ({"method": "vlpet-small", "adapter_dim": 0}, r"adapter_dim must be an int > 0"),
    ({"method": "adapter", "zero_init_up": "yes"}, r"zero_init_up must be true or false"),
    ({"method": "vlpet-large", "scaling": "0.3"}, r"scaling must be a number"),
    ({"method": "lora", "bias": "some"}, r"bias must be one of"),
    ({"method": "prompt", "length": -1}, r"length must be an int ≥ 0"),
])
def test_bad_method_name_or_config_raises_clear_value_error(spec, message):
    with pytest.raises(ValueError, match=message):
        apply_pet(make_vlbart(), spec)


def test_method_needing_patterns_rejects_unknown_backbone_family():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=32, n_positions=16))
    with pytest.raises(ValueError, match=r"no module patterns for backbone 'gpt2'.*bart, t5"):
        apply_pet(model, "vlpet-large")


def test_prompt_needs_a_vl_model_slot_and_pet_applies_once():
    with pytest.raises(ValueError, match="encoder_prompt slot"):
        apply_pet(make_t5(), "prompt")
    model = apply_pet(make_vlbart(), "bitfit")
    with pytest.raises(ValueError, match="'bitfit' is already applied"):
        apply_pet(model, "vlpet-large")


def test_apply_method_seam_uses_the_registry():
    from vltune.recipes.encdec.finetune import METHODS, apply_method

    assert set(METHODS) == set(method_names()) and "full" in METHODS
    model = apply_method(make_vlbart(), "vlpet-small", {"adapter_dim": 8})
    assert model.pet_config.adapter_dim == 8
    with pytest.raises(ValueError, match="names method 'lora'"):
        apply_method(make_vlbart(), "bitfit", {"method": "lora"})
