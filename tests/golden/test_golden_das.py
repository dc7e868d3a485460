"""DAS against numbers recorded from the official ViLT code (https://github.com/DoubtedSteam/DAS).

``das_vilt.safetensors`` / ``das_vilt.json`` (written by ``scripts/golden/record_das.py``) hold:

* the skipped block's stand-in, ``Adapter_Layer`` of ViLT/vilt/modules/vision_transformer_PA.py
  (``x + s · up(ReLU(down(LN(x))))``), at s = 1 and s = 0.5;
* a ViLT encoder ``Block`` of the same file with its two parallel adapters
  (``x + Attn(LN(x)) + A_0(x)``, ``x + MLP(LN(x)) + A_1(x)``), padded keys masked;
* four reward steps of ``ViLTransformerSS.forward`` (ViLT/vilt/modules/vilt_module_search.py): the
  gate before and after each step, the skip sets scored and their losses, and the blocks
  ``training_epoch_end`` finally skips.

vltune's ``SkippedBlock`` and ``SkipPolicy`` get the same parameters / gate and must give the same
numbers. Paper: "Not All Attention Is Needed: Parameter and Computation Efficient Transfer Learning
for Multi-modal Large Language Models", https://arxiv.org/abs/2403.15226.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

HERE = Path(__file__).parent
META = json.loads((HERE / "das_vilt.json").read_text())
GOLDEN = load_file(HERE / "das_vilt.safetensors")
SEARCH = META["search"]
_NAMES = {"adapter_layer_norm_before": "das_adapter.norm", "down_proj": "das_adapter.down", "up_proj": "das_adapter.up"}


@pytest.mark.parametrize("case", [0, 1])
def test_skipped_block_stand_in_matches_official_adapter_layer(case):
    from vltune.pet.das.layer import SkippedBlock

    prefix = f"skip_adapter_{case}.param."
    state = {}
    for key, value in GOLDEN.items():
        if key.startswith(prefix):
            module, leaf = key[len(prefix):].rsplit(".", 1)
            state[f"{_NAMES[module]}.{leaf}"] = value
    block = SkippedBlock(META["d_model"], META["bottleneck"], scaling=META["skip_adapter_scalars"][case]).eval()
    block.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = block(GOLDEN[f"skip_adapter_{case}.input"], None)  # the block's mask argument is ignored
    torch.testing.assert_close(out, GOLDEN[f"skip_adapter_{case}.output"], atol=1e-6, rtol=0)


def test_parallel_adapters_in_a_block_match_official_vilt_block():
    """vltune's VLMo block with DAS injected; its layer scales are set to 1 (ViLT has none). The
    adapters read the block's residual stream (the input of norm1 / norm2), as ViLT's."""
    from vltune.models.vlmo import VLMo, VLMoConfig
    from vltune.pet import apply_pet

    torch.manual_seed(0)
    cfg = VLMoConfig(vocab_size=50, d_model=META["d_model"], layers=1, vl_layers=1, heads=2, mlp_ratio=2,
                     image_size=16, patch_size=16)
    model = apply_pet(VLMo(cfg).eval(), {"method": "das", "adapter_dim": META["bottleneck"], "modules_to_save": []})
    block = model.blocks[0]
    rename = {"adapter0.adapter_layer_norm_before": "attn.das_adapter.norm", "adapter0.down_proj": "attn.das_adapter.down",
              "adapter0.up_proj": "attn.das_adapter.up", "adapter1.adapter_layer_norm_before": "mlp.das_adapter.norm",
              "adapter1.down_proj": "mlp.das_adapter.down", "adapter1.up_proj": "mlp.das_adapter.up"}
    state = {"gamma1": torch.ones(META["d_model"]), "gamma2": torch.ones(META["d_model"])}
    for key, value in GOLDEN.items():
        if key.startswith("block.param."):
            module, leaf = key[len("block.param."):].rsplit(".", 1)
            state[f"{rename.get(module, module)}.{leaf}"] = value
    block.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = block(GOLDEN["block.input"], GOLDEN["block.mask"], "vl")
    torch.testing.assert_close(out, GOLDEN["block.output"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("step", range(len(SEARCH["steps"])))
def test_policy_update_matches_official_reward_step(step):
    """Official rule (vilt_module_search.py, forward): R_j = exp(-L_j), b = mean R, and for every
    block i of set j, das_gate[i] += lr (R_j - b) σ(g_i)(1 - σ(g_i)) with σ taken before the step."""
    from vltune.das.search import SkipPolicy

    rec = SEARCH["steps"][step]
    assert len(rec["sets"]) == SEARCH["das_step"] and len({tuple(s) for s in rec["sets"]}) == SEARCH["das_step"]
    policy = SkipPolicy(SEARCH["n_blocks"], lr=SEARCH["policy_lr"])
    policy.logits = torch.tensor(rec["gate_before"], dtype=torch.float64)
    policy.update([tuple(s) for s in rec["sets"]], [math.exp(-loss) for loss in rec["losses"]])
    expected = torch.tensor(rec["gate_after"], dtype=torch.float64)
    torch.testing.assert_close(policy.logits, expected, atol=1e-6, rtol=0)
    assert (expected - torch.tensor(rec["gate_before"], dtype=torch.float64)).abs().max() > 1e-3  # a real move


def test_final_skip_set_matches_official_selection():
    from vltune.das.search import SkipPolicy

    policy = SkipPolicy(SEARCH["n_blocks"])
    policy.logits = torch.tensor(SEARCH["steps"][-1]["gate_after"], dtype=torch.float64)
    assert policy.top_k(SEARCH["skip_num"]) == SEARCH["final_skip"]
    # a gate that never moved (all ties): the official sort skips the deepest blocks
    policy.logits = torch.zeros(SEARCH["n_blocks"], dtype=torch.float64)
    assert policy.top_k(SEARCH["skip_num"]) == SEARCH["tied_gate_final_skip"] == [10, 11]
    assert policy.top_k(0) == []
