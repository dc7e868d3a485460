"""bench/features.py runs end to end on tiny timm models and writes well-formed JSON (speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "features.py"


def test_rates_and_ratios_for_each_model(load_module, tmp_path):
    bench = load_module(SCRIPT, "features_bench")
    out = tmp_path / "results" / "features.json"
    report = bench.main(["--models", "cnn=test_resnet,vit=test_vit", "--images", "24", "--baseline-images", "4",
                         "--width", "96", "--height", "64", "--batch-size", "8", "--shard-size", "16",
                         "--workers", "0", "--decode", "cpu", "--out", str(out)])
    assert json.loads(out.read_text()) == report
    for key in ("cnn", "vit"):
        row = report["images_per_s"][key]
        for rate in ("decode_only", "model_only", "end_to_end", "per_image_fp32"):
            assert row[rate] > 0
        assert row["e2e_over_min_decode_model"] == row["end_to_end"] / min(row["decode_only"], row["model_only"])
        assert row["e2e_over_per_image_fp32"] == row["end_to_end"] / row["per_image_fp32"]
        assert row["limit"] in ("decode", "model")
