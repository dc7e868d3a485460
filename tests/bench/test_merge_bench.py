"""bench/merge.py runs end to end on tiny state dicts and writes well-formed JSON (speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "merge.py"


@pytest.fixture(scope="module")
def bench(load_module):
    return load_module(SCRIPT, "merge_bench")


def test_lazy_and_naive_side_by_side_with_identical_outputs(bench, tmp_path):
    out = tmp_path / "results" / "merge.json"
    returned = bench.main(["--size", "tiny", "--rounds", "1", "--copy-mb", "8", "--methods", "regmean",
                           "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    assert set(written["results"]) == {"regmean"}
    assert written["memcpy_gb_per_s"] > 0 and written["model_mb"] > 0
    for row in written["results"].values():
        assert row["identical_outputs"] is True
        for v in ("lazy", "naive"):
            assert row[v]["wall_s"] > 0 and row[v]["peak_rss_mb"] > 0 and row[v]["gb_per_s"] > 0
        assert row["speedup_lazy_vs_naive"] == pytest.approx(row["naive"]["wall_s"] / row["lazy"]["wall_s"])
