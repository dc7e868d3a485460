"""DAS report: savings against k = 0 of the same run, the paper-shaped table, and the plots."""

from __future__ import annotations

import json

import pytest

from vltune.report.das import das_frame, write_das_report


def _metrics(tmp_path, k, seed, flops, latency, vqa):
    record = {"experiment": "das-bart-vqa", "task": "vqa", "k": k, "skip": list(range(k)), "seed": seed,
              "trainable_params": 1000 + k, "trainable_pct": 1.5, "total_params": 9000 - k,
              "flops_per_sample": flops, "latency_ms": latency, "latency_ms_per_sample": latency / 64,
              "latency_batch_size": 64, "vqa_accuracy": vqa}
    path = tmp_path / f"k{k}-s{seed}.json"
    path.write_text(json.dumps(record))
    return path


def test_savings_are_relative_to_k0_of_the_same_seed_and_the_table_has_one_row_per_k(tmp_path):
    paths = [_metrics(tmp_path, 0, 1, 4e6, 10.0, 60.0), _metrics(tmp_path, 1, 1, 3e6, 8.0, 58.0),
             _metrics(tmp_path, 0, 2, 4e6, 20.0, 62.0), _metrics(tmp_path, 1, 2, 3e6, 15.0, 56.0)]
    skip = tmp_path / "skip.json"
    skip.write_text(json.dumps({"task": "vqa", "k": 1, "skip": [0], "n_blocks": 2,
                                "trace": [{"step": 5, "logits": [0.1, -0.1]}, {"step": 10, "logits": [0.2, -0.2]}]}))
    df = write_das_report(paths, [skip], tmp_path / "out")
    assert df.set_index(["seed", "k"])["flops_reduction_pct"].to_dict() == pytest.approx(
        {(1, 0): 0.0, (1, 1): 25.0, (2, 0): 0.0, (2, 1): 25.0})
    assert df.set_index(["seed", "k"])["latency_reduction_pct"].to_dict() == pytest.approx(
        {(1, 0): 0.0, (1, 1): 20.0, (2, 0): 0.0, (2, 1): 25.0})
    md = (tmp_path / "out/das.md").read_text()
    assert "| 0 | – | 2 | 1.0 | 1.50 | 4.00 | 0.0 | 15.00 | 0.0 | 61.00 |" in md
    assert "| 1 | 0 | 2 | 1.0 | 1.50 | 3.00 | 25.0 | 11.50 | 22.5 | 57.00 |" in md
    for name in ("das.csv", "das_latency.png", "das_search.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_a_metrics_file_of_another_stage_is_rejected_naming_it(tmp_path):
    path = tmp_path / "vlpet.json"
    path.write_text(json.dumps({"experiment": "vlpet-bart", "method": "full", "vqa_accuracy": 1.0}))
    with pytest.raises(ValueError, match="vlpet.json: not a das-evaluate metrics file"):
        das_frame([path])
