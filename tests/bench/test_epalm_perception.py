"""bench/epalm_perception.py runs end to end on a tiny eP-ALM and writes well-formed JSON (speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "epalm_perception.py"
TINY = ["--device", "cpu", "--batch", "2", "--text-len", "5", "--warmup", "1", "--rounds", "2", "--block", "1",
        "--lm-override", json.dumps(dict(vocab_size=64, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                         ffn_dim=32, word_embed_proj_dim=16, max_position_embeddings=32)),
        "--vit-override", json.dumps(dict(img_size=32, embed_dim=16, depth=2, num_heads=2)),
        "--method-config", json.dumps(dict(n_tokens=2, start_layer=0, end_layer=2, prompt_len=2))]


def test_json_has_both_modes_with_ratios_against_recomputed(load_module, tmp_path):
    module = load_module(SCRIPT, "epalm_perception")
    out = tmp_path / "results" / "epalm.json"
    returned = module.main(TINY + ["--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(returned))
    assert set(data["modes"]) == {"recomputed", "cached"} and data["baseline"] == "recomputed"
    assert data["modes"]["recomputed"]["ratio_vs_recomputed"] == 1.0
    for row in data["modes"].values():
        assert len(row["ms_per_step_rounds"]) == 2 and row["ms_per_step"] > 0
