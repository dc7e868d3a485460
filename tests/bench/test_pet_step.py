"""bench/pet_step.py runs end to end on a tiny model and writes well-formed JSON (speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "pet_step.py"

# A 1+1-layer, d_model 32 VL-BART on 2 x (6 text + 4 visual) tokens: well under a second per method.
TINY = ["--device", "cpu", "--feat-dim", "16", "--batch", "2", "--text-len", "6", "--vis-len", "4",
        "--target-len", "3", "--warmup", "1", "--rounds", "2", "--block", "2", "--arch-override", json.dumps(dict(
            vocab_size=160, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64))]


@pytest.fixture(scope="module")
def pet_step(load_module):
    return load_module(SCRIPT, "pet_step")


def test_json_has_every_method_with_ratios_against_full(pet_step, tmp_path):
    out = tmp_path / "results" / "pet_step.json"  # the folder does not exist yet
    returned = pet_step.main(TINY + ["--methods", "full,lora", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    assert written["methods"] == ["full", "lora"]
    assert set(written["results"]) == {"full", "lora"}
    assert written["config"]["device"] == "cpu" and written["config"]["mixed_precision"] == "no"
    full, lora = written["results"]["full"], written["results"]["lora"]
    assert full["ratio_to_full"] == 1.0 and full["state_ratio_to_full"] == 1.0
    assert lora["ratio_to_full"] == pytest.approx(lora["ms_median"] / full["ms_median"])
    assert lora["state_ratio_to_full"] == pytest.approx(lora["state_mb"] / full["state_mb"])
    for row in (full, lora):
        assert row["n_steps"] == len(row["times_ms"]) == 4  # rounds x block; warm-up is not timed
        assert row["ms_q1"] <= row["ms_median"] <= row["ms_q3"]
        assert row["state_mb"] == pytest.approx(row["params_mb"] + row["grads_mb"] + row["optim_mb"])
        assert row["peak_mb"] is None and row["peak_ratio_to_full"] is None  # CPU: no allocator peak
    assert full["trainable_pct"] == 100.0 and 0 < lora["trainable_params"]
    assert full["total_params"] < lora["total_params"]  # LoRA adds its A and B matrices
    # AdamW: two moments per weight (+ a scalar ``step`` tensor per parameter tensor).
    assert full["optim_mb"] == pytest.approx(2 * full["grads_mb"], rel=0.01)


def test_full_is_added_as_the_baseline(pet_step, tmp_path):
    written = pet_step.main(TINY + ["--methods", "bitfit", "--rounds", "1", "--block", "1",
                                    "--out", str(tmp_path / "b.json")])
    assert written["methods"] == ["full", "bitfit"]
    assert written["results"]["full"]["ratio_to_full"] == 1.0


def test_unknown_method_fails_before_any_model_is_built(pet_step, tmp_path):
    with pytest.raises(ValueError, match="lora"):
        pet_step.main(TINY + ["--methods", "lorra", "--out", str(tmp_path / "c.json")])
    assert not (tmp_path / "c.json").exists()
