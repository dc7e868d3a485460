"""bench/startup.py runs end to end on one command and writes well-formed JSON (speed is not tested)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "startup.py"


@pytest.fixture(scope="module")
def bench(load_module):
    return load_module(SCRIPT, "startup_bench")


def test_two_checkouts_side_by_side_with_import_breakdown(bench, tmp_path):
    out = tmp_path / "results" / "startup.json"
    # the same package on both sides: the script's plumbing, not a comparison
    returned = bench.main(["--before", str(ROOT), "--after", str(ROOT / "pipeline_src"), "--commands", "merge",
                           "--rounds", "1", "--caption-rounds", "0", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(returned))
    assert written["config"]["before"] == written["config"]["after"] == str(ROOT / "pipeline_src")
    assert set(written["commands"]) == {"merge"} and written["caption"] is None
    row = written["commands"]["merge"]
    for v in ("before", "after"):
        for k in ("help_s", "import_s"):
            assert len(row[v][k]["all"]) == 1 and row[v][k]["min"] == row[v][k]["median"] > 0
    assert row["ratio_import"] == pytest.approx(row["after"]["import_s"]["median"] / row["before"]["import_s"]["median"])
    b = row["breakdown_after"]
    assert b["libraries"]["torch"]["inside"] is None and b["libraries"]["numpy"]["inside"] == "torch"
    assert 0 < b["heavy_s"] <= b["total_s"] and b["other_s"] == pytest.approx(b["total_s"] - b["heavy_s"])


def test_a_folder_without_vltune_is_refused_in_one_line(bench, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["--before", str(tmp_path), "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2
    assert f"--before {tmp_path}: no vltune/cli.py there or under pipeline_src/" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
