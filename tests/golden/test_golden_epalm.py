"""eP-ALM against numbers recorded from the official model (https://github.com/mshukor/eP-ALM).

``epalm_opt.safetensors`` holds, per case, the parameters, inputs, logits and every decoder layer's
output of the official ``models.epalm.ePALM`` running its own OPT copy (``models/opt.py``: the
decoder inserts the perceptual token at ``start_layer_idx`` and overwrites position 0 up to
``end_layer_idx``; the soft prompt goes before the text without position embeddings), written by
``scripts/golden/record_epalm.py``. Here the same parameters go into vltune's ``EPALM`` around an
unchanged transformers ``OPTForCausalLM``; logits and per-layer outputs must agree. Paper: "eP-ALM:
Efficient Perceptual Augmentation of Language Models", https://arxiv.org/abs/2303.11403.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
META = json.loads((HERE / "epalm_opt.json").read_text())
GOLDEN = load_file(HERE / "epalm_opt.safetensors")
ATOL = 2e-5

_NAMES = [(r"model_text\.", "lm."), (r"connector\.(\d+)\.", r"connector.linears.\1."),
          (r"prompt_module\.prefix_embedding\.0\.", "prompt.embedding."),
          (r"prompt_module\.prefix_embedding\.1\.", "prompt.reparam.0."),
          (r"prompt_module\.prefix_embedding\.3\.", "prompt.reparam.2.")]


def _method(case: str) -> dict:
    """The vltune method config of one recorded ePALM config (same keys' meaning, vltune names)."""
    spec = META["cases"][case]
    cfg = spec["config"]
    method = {"method": "epalm-prompt" if cfg.get("prompt_tuning") else "epalm-linear",
              "n_tokens": cfg["injected_hidden_states"], "start_layer": spec["start_layer_idx"],
              "end_layer": spec["end_layer_idx"], "shared_connector": bool(cfg.get("shared_connector"))}
    if cfg.get("prompt_tuning"):
        method.update(prompt_len=cfg["prompt_len"], prompt_mlp=cfg["mlp"])
    return method


def _vltune_epalm(case: str):
    from transformers import OPTConfig, OPTForCausalLM

    from vltune.models.epalm import EPALM
    from vltune.pet import apply_pet

    torch.manual_seed(0)
    lm = OPTForCausalLM(OPTConfig(**META["opt"], attn_implementation="eager"))
    model = apply_pet(EPALM(lm, vision_width=META["vision_dim"], vision_depth=META["vision_depth"]), _method(case))
    state = {}
    for key, value in GOLDEN.items():
        if key.startswith(f"{case}.param."):
            name = key[len(f"{case}.param."):]
            for pattern, repl in _NAMES:
                name, n = re.subn("^" + pattern, repl, name)
                if n:
                    break
            state[name] = value
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert not [k for k in result.missing_keys if not k.startswith("encoder.")]
    return model.eval()


@pytest.mark.parametrize("case", list(META["cases"]))
def test_logits_and_layer_outputs_match_official_epalm(case):
    model = _vltune_epalm(case)
    layer_outputs = []
    hooks = [layer.register_forward_hook(lambda m, a, out: layer_outputs.append(out[0] if isinstance(out, tuple) else out))
             for layer in model.decoder.layers]
    # The official encoder hands every block's token sequence to the connector, which reads [CLS]
    # (index 0); vltune's cached perception is those [CLS] vectors, (B, depth, d_v).
    perception = GOLDEN[f"{case}.image"][:, :, 0]
    with torch.no_grad():
        out = model(GOLDEN[f"{case}.input_ids"], GOLDEN[f"{case}.attention_mask"], perception=perception)
    for h in hooks:
        h.remove()
    n_layers = META["opt"]["num_hidden_layers"]
    assert len(layer_outputs) == n_layers
    mask = GOLDEN[f"{case}.attention_mask"].bool()
    for j in range(n_layers):
        expected = GOLDEN[f"{case}.layer_output.{j}"]
        assert layer_outputs[j].shape == expected.shape, f"layer {j}"
        # Rows of padded text positions are not compared (each implementation fills them its own way).
        rows = torch.cat([torch.ones(mask.shape[0], expected.shape[1] - mask.shape[1], dtype=torch.bool), mask], 1)
        torch.testing.assert_close(layer_outputs[j][rows], expected[rows], atol=ATOL, rtol=1e-5, msg=f"layer {j}")
    logits = GOLDEN[f"{case}.logits"]
    rows = torch.cat([torch.ones(mask.shape[0], logits.shape[1] - mask.shape[1], dtype=torch.bool), mask], 1)
    assert out.logits.shape == logits.shape
    torch.testing.assert_close(out.logits[rows], logits[rows], atol=ATOL, rtol=1e-5)


def test_perceptual_token_changes_the_recorded_logits():
    """The fixture exercises the injection: the same LM without the token gives other text logits."""
    case = "linear_step2"
    model = _vltune_epalm(case)
    with torch.no_grad():
        plain = model.lm(input_ids=GOLDEN[f"{case}.input_ids"], attention_mask=GOLDEN[f"{case}.attention_mask"],
                         use_cache=False).logits
    recorded_text = GOLDEN[f"{case}.logits"][:, model.n_prefix:]
    assert (plain[0] - recorded_text[0]).abs().max() > 1e-2
