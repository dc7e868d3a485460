"""bench/epalm_generation.py runs end to end on a tiny eP-ALM and writes well-formed JSON (speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "epalm_generation.py"
TINY = ["--devices", "cpu", "--shapes", "default", "--beams", "1,2", "--batch", "3", "--text-len", "4",
        "--new-tokens", "3", "--warmup", "1", "--rounds", "2", "--block", "1",
        "--lm-override", json.dumps(dict(vocab_size=64, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                         ffn_dim=32, word_embed_proj_dim=16, max_position_embeddings=32)),
        "--method-config", json.dumps(dict(n_tokens=2, start_layer=0, end_layer=2, prompt_len=2))]


def test_json_has_both_modes_per_beam_with_speedups_against_uncached(load_module, tmp_path):
    module = load_module(SCRIPT, "epalm_generation")
    out = tmp_path / "results" / "epalm_generation.json"  # the folder does not exist yet
    returned = module.main(TINY + ["--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(returned))
    shape = data["devices"]["cpu"]["shapes"]["default"]
    assert shape["injection"] == {"start": 0, "end": 2, "n_tokens": 2, "mask": "full"} and shape["prompt_len"] == 2
    assert set(shape["beams"]) == {"1", "2"} and data["baseline"] == "uncached"
    for beam in shape["beams"].values():
        assert set(beam["modes"]) == {"uncached", "cached"} and beam["same_tokens"] is True
        assert beam["modes"]["uncached"]["speedup_vs_uncached"] == 1.0
        for row in beam["modes"].values():
            assert len(row["ms_per_call_all"]) == 2 and row["ms_per_call"] > 0
