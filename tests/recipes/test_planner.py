"""The parameter planner on the meta device: VL-PET's published counts and the baselines' shares."""

from __future__ import annotations

import json

import pytest

from vltune.recipes.planner import build_meta_model, plan_parameters


@pytest.mark.parametrize("method, trainable, pct", [
    ("vlpet-large", 6_052_416, 4.16),
    ("vlpet-middlex", 4_281_804, 2.98),
    ("vlpet-middley", 4_281_792, 2.98),
    ("vlpet-small", 4_291_020, 2.98),
])
def test_planner_reproduces_vlpet_bart_base_counts(method, trainable, pct):
    """VL-PET, arXiv 2308.09804: visual embedding 1,582,848 + encoder LNs 19,968 + multi-head adapters
    1,779,840 + gates + decoder VPA 889,920, over BART-base with the resized vocab + new modules."""
    plan = plan_parameters("bart-base", method)
    assert plan["trainable"] == trainable
    assert round(plan["trainable_pct"], 2) == pct
    assert plan["total"] == 139_420_416 + 153_600 + 1_582_848 + (trainable - 1_582_848 - 19_968)


@pytest.mark.parametrize("method, pct", [("bitfit", 1.21), ("prompt", 2.00), ("lora", 5.93), ("adapter", 4.18)])
def test_planner_reproduces_baseline_shares_of_vlpet_table(method, pct):
    """The baselines' default configs give the params % of VL-PET's BART-base results (arXiv 2308.09804)."""
    assert round(plan_parameters("bart-base", method)["trainable_pct"], 2) == pct


def test_planner_full_t5_base_counts_the_vlt5_model():
    """t5-base (222,903,552 with its 32,128-row table) resized to VL-T5's 32,200 tokens, plus the
    visual embedding with T5LayerNorm (no biases): 1,581,312."""
    plan = plan_parameters("t5-base", "full")
    assert plan["total"] == plan["trainable"] == 222_903_552 + 72 * 768 + 1_581_312


def test_planner_t5_vlpet_large_uses_t5_hyper_parameters():
    """T5 defaults r = gate rank = 192 on 24 encoder sub-layers, VPA 96 on 12 decoder layers,
    25 encoder T5LayerNorms (scale only)."""
    per_site = 2 * (768 * 192 + 192 + 192 * 768 + 768)  # adapter + large gate
    expected = 1_581_312 + 25 * 768 + 24 * per_site + 12 * (768 * 96 + 96 + 96 * 768 + 768)
    assert plan_parameters("t5-base", "vlpet-large")["trainable"] == expected


def test_meta_model_allocates_no_memory():
    model = build_meta_model("bart-base")
    assert all(p.is_meta for p in model.parameters())


def test_params_command_prints_json(capsys):
    from vltune.cli import main

    assert main(["params", "--arch", "bart-base", "--method", "vlpet-small", "--params", '{"adapter_dim": 96}']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trainable"] == 4_291_020 and set(out) == {"trainable", "total", "trainable_pct"}


@pytest.mark.parametrize("argv, message", [
    (["--arch", "bart-large", "--method", "full"], "unknown arch 'bart-large'"),
    (["--arch", "bart-base", "--method", "vlpet-huge"], "vlpet-large"),
    (["--arch", "bart-base", "--method", "vlpet-small", "--params", '{"adaptor_dim": 8}'], "'adaptor_dim'"),
])
def test_params_command_reports_bad_input_in_one_line(capsys, argv, message):
    from vltune.cli import main

    assert main(["params", *argv]) == 2
    assert message in capsys.readouterr().err


def test_planner_epalm_pt_l_trains_six_hundredths_of_a_percent(capsys):
    """eP-ALM, arXiv 2303.11403: OPT-6.7B + ViT-L, one shared Linear(1024 → 4096) + a 10 × 4096 prompt table
    without MLP = 4,239,360 ≈ 0.06 % (the paper: "0.06 % (~4M)"); through the CLI as a user types it."""
    from vltune.cli import main

    assert main(["params", "--arch", "opt-6.7b+vit-l16", "--method", "epalm-prompt",
                 "--params", '{"shared_connector": true, "prompt_mlp": false}']) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["trainable"] == 1024 * 4096 + 4096 + 10 * 4096
    assert round(plan["trainable_pct"], 2) == 0.06


def test_planner_epalm_default_configs_match_the_paper():
    """eP-ALM (arXiv 2303.11403): OPT-2.7B + ViT-B, 6 connectors + MLP prompt ≈ 24.95M ≈ 0.9 %; OPT-350m's connectors
    map to its hidden 1024 (not the 512-wide word embedding)."""
    plan = plan_parameters("opt-2.7b+vit-b16", "epalm-prompt")
    assert plan["trainable"] == 6 * (768 * 2560 + 2560) + 10 * 2560 + 2 * (2560 * 2560 + 2560)
    assert round(plan["trainable_pct"], 1) == 0.9
    assert plan_parameters("opt-350m+vit-b16", "epalm-linear")["trainable"] == 6 * (768 * 1024 + 1024)
    with pytest.raises(ValueError, match="unknown eP-ALM arch 'opt-1b\\+vit-b16'"):
        plan_parameters("opt-1b+vit-b16", "epalm-linear")
