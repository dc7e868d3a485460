"""VL-PET against numbers recorded from the official modules (https://github.com/HenryHZY/VL-PET).

``vlpet_bart.safetensors`` (written by ``scripts/golden/record_vlpet.py``) holds the parameters,
inputs and outputs of
* the official ``BartEncoderLayer`` (src/my_transformers/modeling_bart.py, flags of
  scripts/image-text/VL-PET-*.sh), one per gate granularity, and one with the scaling s;
* the official T5 encoder ``T5Block`` (src/my_transformers/modeling_t5.py, flags of
  scripts/image-text/T5-VL-PET-*.sh), one per gate granularity;
* ``BartAttentionWithValueAdapter`` as the decoder cross-attention and T5's
  ``T5LayerCrossAttention``, each with its value parallel adapter.
Here the same parameters are loaded into a transformers BART / T5 with vltune's VL-PET injected,
and the outputs must agree to float32 rounding. Paper: "VL-PET: Vision-and-Language
Parameter-Efficient Tuning via Granularity Control", https://arxiv.org/abs/2308.09804.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
META = json.loads((HERE / "vlpet_bart.json").read_text())
GOLDEN = load_file(HERE / "vlpet_bart.safetensors")
ATOL = 1e-5

# Official encoder-layer parameter name → the name of the same tensor in vltune's injected layer.
_ENCODER_NAMES = [
    (r"attn_adapter_multihead_down\.(\d+)\.", r"self_attn.vlpet.adapter.down.\1."),
    (r"attn_adapter_multihead_up\.", "self_attn.vlpet.adapter.up."),
    (r"ff_adapter_multihead_down\.(\d+)\.", r"fc2.vlpet.adapter.down.\1."),
    (r"ff_adapter_multihead_up\.", "fc2.vlpet.adapter.up."),
    (r"encoder_attn_adapter_gating_large_x_(down|up)\.", r"self_attn.vlpet.gate.\1."),
    (r"encoder_ff_adapter_gating_large_x_(down|up)\.", r"fc2.vlpet.gate.\1."),
    (r"encoder_attn_adapter_gating_(?:small_xy_cat|middle_xy_add)\.", "self_attn.vlpet.gate.proj."),
    (r"encoder_ff_adapter_gating_(?:small_xy_cat|middle_xy_add)\.", "fc2.vlpet.gate.proj."),
    (r"encoder_attn_adapter_gating_middle_ia3_add$", "self_attn.vlpet.gate.z"),
    (r"encoder_ff_adapter_gating_middle_ia3_add$", "fc2.vlpet.gate.z"),
]
_T5_NAMES = [
    (r"layer\.0\.attn_adapter_multihead_down\.(\d+)\.", r"layer.0.SelfAttention.vlpet.adapter.down.\1."),
    (r"layer\.0\.attn_adapter_multihead_up\.", "layer.0.SelfAttention.vlpet.adapter.up."),
    (r"layer\.1\.ff_adapter_multihead_down\.(\d+)\.", r"layer.1.DenseReluDense.vlpet.adapter.down.\1."),
    (r"layer\.1\.ff_adapter_multihead_up\.", "layer.1.DenseReluDense.vlpet.adapter.up."),
    (r"layer\.0\.encoder_attn_adapter_gating_large_x_(down|up)\.", r"layer.0.SelfAttention.vlpet.gate.\1."),
    (r"layer\.1\.encoder_ff_adapter_gating_large_x_(down|up)\.", r"layer.1.DenseReluDense.vlpet.gate.\1."),
    (r"layer\.0\.encoder_attn_adapter_gating_(?:small_xy_cat|middle_xy_add)\.", "layer.0.SelfAttention.vlpet.gate.proj."),
    (r"layer\.1\.encoder_ff_adapter_gating_(?:small_xy_cat|middle_xy_add)\.", "layer.1.DenseReluDense.vlpet.gate.proj."),
    (r"layer\.0\.encoder_attn_adapter_gating_middle_ia3_add$", "layer.0.SelfAttention.vlpet.gate.z"),
    (r"layer\.1\.encoder_ff_adapter_gating_middle_ia3_add$", "layer.1.DenseReluDense.vlpet.gate.z"),
]
_VPA_NAMES = [(r"attn_value_parallel_adapter\.adapters\.\w+\.down_sampler\.", "v_proj.vpa.down.0."),
              (r"attn_value_parallel_adapter\.adapters\.\w+\.up_sampler\.", "v_proj.vpa.up.")]


def _renamed(prefix: str, rules) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in GOLDEN.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        for pattern, repl in rules:
            name, n = re.subn("^" + pattern, repl, name)
            if n:
                break
        out[name] = value
    return out


def _vlpet_bart(gate: str, scaling: float = 1.0):
    from transformers import BartConfig, BartModel

    from vltune.pet import apply_pet

    cfg = BartConfig(vocab_size=32, d_model=META["d_model"], encoder_attention_heads=META["heads"],
                     decoder_attention_heads=META["heads"], encoder_ffn_dim=META["ffn"],
                     decoder_ffn_dim=META["ffn"], encoder_layers=1, decoder_layers=1, max_position_embeddings=16,
                     activation_function=META["activation_function"], dropout=0.0, attention_dropout=0.0,
                     activation_dropout=0.0, attn_implementation="eager")
    torch.manual_seed(0)
    model = BartModel(cfg).eval()
    apply_pet(model, {"method": f"vlpet-{gate}", "adapter_dim": META["adapter_dim"],
                      "adapter_heads": META["adapter_heads"], "gate_dim": META["gate_dim"],
                      "vpa_dim": META["vpa_dim"], "scaling": scaling})
    return model


def _vlpet_t5(gate: str):
    from transformers import T5Config, T5Model

    from vltune.pet import apply_pet

    t5 = META["t5"]
    cfg = T5Config(vocab_size=32, d_model=META["d_model"], d_kv=t5["d_kv"], d_ff=t5["d_ff"], num_heads=t5["num_heads"],
                   num_layers=1, num_decoder_layers=1, dropout_rate=0.0, feed_forward_proj=t5["feed_forward_proj"],
                   attn_implementation="eager")
    torch.manual_seed(0)
    model = T5Model(cfg).eval()
    apply_pet(model, {"method": f"vlpet-{gate}", "adapter_dim": META["adapter_dim"],
                      "adapter_heads": META["adapter_heads"], "gate_dim": META["gate_dim"],
                      "vpa_dim": META["vpa_dim"], "scaling": META["scaling"]})
    return model


def _load_exactly(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every recorded tensor has a home and every parameter of ``module`` is overwritten."""
    result = module.load_state_dict(state, strict=True)
    assert not result.missing_keys and not result.unexpected_keys


@pytest.mark.parametrize("case,gate,scaling", [
    ("large", "large", 1.0), ("middlex", "middlex", 1.0), ("middley", "middley", 1.0), ("small", "small", 1.0),
    ("large_scaled", "large", META["scaling"]),
])
def test_encoder_layer_matches_official_vlpet_gate(case, gate, scaling):
    model = _vlpet_bart(gate, scaling)
    layer = model.encoder.layers[0]
    _load_exactly(layer, _renamed(f"{case}.param.", _ENCODER_NAMES))
    with torch.no_grad():
        out = layer(GOLDEN[f"{case}.input"], attention_mask=None)
    out = out[0] if isinstance(out, tuple) else out
    expected = GOLDEN[f"{case}.output"]
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("gate", ["large", "middlex", "middley", "small"])
def test_t5_encoder_block_matches_official_vlpet_gate(gate):
    """Pre-LN T5: the gate reads the residual stream entering the sub-layer, and s = 0.3 scales it."""
    block = _vlpet_t5(gate).encoder.block[0]
    _load_exactly(block, _renamed(f"t5_{gate}.param.", _T5_NAMES))
    with torch.no_grad():
        out = block(GOLDEN[f"t5_{gate}.input"])
    out = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(out, GOLDEN[f"t5_{gate}.output"], atol=ATOL, rtol=0)


def test_decoder_cross_attention_value_parallel_adapter_matches_official():
    model = _vlpet_bart("large")
    attn = model.decoder.layers[0].encoder_attn
    _load_exactly(attn, _renamed("vpa.param.", _VPA_NAMES))
    with torch.no_grad():
        out = attn(GOLDEN["vpa.query"], key_value_states=GOLDEN["vpa.encoder"])[0]
    torch.testing.assert_close(out, GOLDEN["vpa.output"], atol=ATOL, rtol=0)


def test_t5_cross_attention_value_parallel_adapter_matches_official():
    """T5: the adapter reads the encoder output E and adds to ``EncDecAttention.v(E)``."""
    layer = _vlpet_t5("large").decoder.block[0].layer[1]
    names = [(r"EncDecAttention\.attn_value_parallel_adapter\.adapters\.\w+\.down_sampler\.", "EncDecAttention.v.vpa.down.0."),
             (r"EncDecAttention\.attn_value_parallel_adapter\.adapters\.\w+\.up_sampler\.", "EncDecAttention.v.vpa.up.")]
    _load_exactly(layer, _renamed("t5_vpa.param.", names))
    with torch.no_grad():
        out = layer(GOLDEN["t5_vpa.query"], key_value_states=GOLDEN["t5_vpa.encoder"])[0]
    torch.testing.assert_close(out, GOLDEN["t5_vpa.output"], atol=ATOL, rtol=0)


def test_recorded_output_depends_on_the_vlpet_adapters():
    """Zeroing the adapters' up-projections moves the output: the fixture exercises the adapters."""
    outs = {case: GOLDEN[f"{case}.output"] for case in ("large", "middlex", "middley", "small")}
    for case, out in outs.items():
        assert torch.isfinite(out).all(), case
    # A layer without its adapters/gates (official weights minus the VL-PET tensors) must differ.
    model = _vlpet_bart("large")
    layer = model.encoder.layers[0]
    state = _renamed("large.param.", _ENCODER_NAMES)
    _load_exactly(layer, state)
    with torch.no_grad():
        for name in ("self_attn.vlpet.adapter.up.weight", "fc2.vlpet.adapter.up.weight"):
            layer.get_submodule(name.rsplit(".", 1)[0]).weight.zero_()
        plain = layer(GOLDEN["large.input"], attention_mask=None)
    plain = plain[0] if isinstance(plain, tuple) else plain
    assert (plain - GOLDEN["large.output"]).abs().max() > 1e-2
