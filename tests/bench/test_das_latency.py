"""bench/das_latency.py runs end to end on a tiny model and writes well-formed JSON (speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "das_latency.py"
TINY = ["--devices", "cpu", "--batch", "2", "--text-len", "4", "--vis-len", "3", "--feat-dim", "8", "--warmup", "1",
        "--rounds", "2", "--block", "1", "--arch-override", json.dumps(dict(
            vocab_size=240, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64))]


@pytest.fixture(scope="module")
def das_latency(load_module):
    return load_module(SCRIPT, "das_latency")


def test_json_has_every_skip_count_with_savings_against_k0(das_latency, tmp_path):
    out = tmp_path / "results" / "das.json"
    returned = das_latency.main(TINY + ["--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    result = written["results"]["cpu"]
    rows = [result["rows"][str(j)] for j in range(3)]
    assert result["n_blocks"] == 2 and [r["skipped_share"] for r in rows] == [0.0, 0.5, 1.0]
    assert rows[0]["ratio_to_k0"] == 1.0 and rows[0]["latency_over_flops_saving"] is None
    # every block costs the same: FLOPs fall in equal steps
    drops = [rows[0]["flops_per_sample"] - r["flops_per_sample"] for r in rows]
    assert drops[1] > 0 and drops[2] == pytest.approx(2 * drops[1])
    for r in rows[1:]:
        saved = 1 - r["ms_median"] / rows[0]["ms_median"]
        assert r["latency_saved_pct"] == pytest.approx(100 * saved)
        assert len(r["times_ms"]) == 2


def test_bad_device_is_a_clear_usage_error(das_latency, capsys):
    with pytest.raises(SystemExit):
        das_latency.main(["--devices", "tpu"])
    assert "--devices: 'tpu' is not an available device" in capsys.readouterr().err


def test_vlmo_family_times_every_skip_count_of_its_shared_blocks(das_latency, tmp_path):
    out = tmp_path / "das_vlmo.json"
    tiny_vlmo = ["--family", "vlmo", "--devices", "cpu", "--batch", "2", "--text-len", "4", "--warmup", "1",
                 "--rounds", "2", "--block", "1", "--arch-override",
                 json.dumps(dict(vocab_size=240, d_model=16, layers=3, vl_layers=1, heads=2, mlp_ratio=2))]
    result = das_latency.main(tiny_vlmo + ["--out", str(out)])["results"]["cpu"]
    rows = [result["rows"][j] for j in range(4)]
    assert result["n_blocks"] == 3 and [r["skipped"] for r in rows] == [0, 1, 2, 3]
    # The last j blocks go: first the vision-language block (joint attention over text + image, so
    # a little dearer), then the two blocks below it, which cost the same (separate streams).
    drops = [rows[0]["flops_per_sample"] - r["flops_per_sample"] for r in rows]
    vl, lower = drops[1], drops[2] - drops[1]
    assert vl > lower > 0 and drops[3] - drops[2] == pytest.approx(lower)
    assert json.loads(out.read_text())["config"]["family"] == "vlmo"


def test_vlmo_family_has_only_the_default_shape(das_latency, capsys):
    with pytest.raises(SystemExit):
        das_latency.main(["--family", "vlmo", "--arch", "bart-base"])
    assert "--arch: the vlmo family has only 'tiny-default'" in capsys.readouterr().err
