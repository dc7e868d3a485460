"""summary.csv: fixed leading columns, one column per <task>_<metric>, baselines as rows; the
Markdown table aggregates seeds as mean ± std; bad metrics files are named."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from vltune.report.summary import ID_COLUMNS, method_averages, pareto_front, write_report


def _run(tmp_path, seed, vqa, cider):
    path = tmp_path / f"run{seed}.json"
    path.write_text(json.dumps({
        "experiment": "vlpet", "method": "full", "seed": seed, "trainable_params": 10, "total_params": 40,
        "trainable_pct": 25.0, "vqa_accuracy": vqa, "gqa_accuracy": 50.0, "nlvr2_accuracy": 60.0,
        "caption_cider": cider, "caption_bleu4": 30.0, "config_hash": "abc", "device": "cpu",
    }))
    return path


def test_summary_columns_rows_and_markdown(tmp_path):
    base = tmp_path / "baselines.json"
    base.write_text(json.dumps({"experiment": "baselines", "rows": [
        {"method": "majority_type", "vqa_accuracy": 30.0, "gqa_accuracy": 20.0, "nlvr2_accuracy": 50.0},
        {"method": "constant_caption", "caption_cider": 40.0, "caption_bleu4": 5.0, "caption_text": "a shape"},
    ]}))
    paths = [_run(tmp_path, 1, 70.0, 200.0), _run(tmp_path, 2, 74.0, 220.0), base]
    write_report(paths, tmp_path / "report")
    df = pd.read_csv(tmp_path / "report/summary.csv")
    assert list(df.columns[:6]) == ID_COLUMNS
    assert list(df.columns[6:10]) == ["vqa_accuracy", "gqa_accuracy", "nlvr2_accuracy", "caption_cider"]
    assert "config_hash" not in df and "caption_text" not in df  # only metrics after the id columns
    assert sorted(df["experiment"]) == ["baselines", "baselines", "vlpet", "vlpet"]
    assert df.loc[df.method == "majority_type", "caption_cider"].isna().all()
    md = (tmp_path / "report/summary.md").read_text()
    # mean ± sample std over the two seeds, and Avg = mean of VQA, GQA, NLVR2, CIDEr per seed
    # seed 1: (70+50+60+200)/4 = 95, seed 2: (74+50+60+220)/4 = 101 → 98 ± 4.24
    assert "| full | 2 | 25.00 | 72.00 ± 2.83 | 50.00 ± 0.00 | 60.00 ± 0.00 | 210.00 ± 14.14 | 98.00 ± 4.24 |" in md
    assert (tmp_path / "report/scores.png").stat().st_size > 1000


def test_metrics_file_without_method_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"experiment": "vlpet", "vqa_accuracy": 1.0}))
    with pytest.raises(ValueError, match="bad.json"):
        write_report([bad], tmp_path / "out")


def test_pareto_front_keeps_only_undominated_methods():
    points = pd.DataFrame({"experiment": "vlpet", "method": ["full", "lora", "bitfit", "worse"],
                           "trainable_pct": [100.0, 5.0, 1.0, 6.0], "avg": [80.0, 78.0, 60.0, 70.0]})
    front = pareto_front(points)
    assert list(front["method"]) == ["bitfit", "lora", "full"]  # "worse": more params than lora, lower Avg


def test_method_averages_and_pareto_plot(tmp_path):
    paths = [_run(tmp_path, 1, 70.0, 200.0), _run(tmp_path, 2, 74.0, 220.0)]
    df = write_report(paths, tmp_path / "report")
    avg = method_averages(df)
    assert avg.loc[0, "avg"] == pytest.approx(98.0) and avg.loc[0, "avg_std"] == pytest.approx(4.2426, abs=1e-3)
    assert avg.loc[0, "trainable_pct"] == 25.0
    assert (tmp_path / "report/pareto.png").stat().st_size > 1000


def test_each_experiment_averages_its_own_tasks(tmp_path):
    """eP-ALM reports VQA and CIDEr only: its Avg is their mean, not dropped for a missing NLVR2."""
    ep = tmp_path / "epalm.json"
    ep.write_text(json.dumps({"experiment": "epalm", "method": "epalm-linear", "seed": 1, "trainable_params": 1,
                              "total_params": 100, "trainable_pct": 1.0, "vqa_accuracy": 60.0, "caption_cider": 80.0}))
    df = write_report([_run(tmp_path, 1, 70.0, 200.0), ep], tmp_path / "report")
    avg = method_averages(df).set_index("experiment")
    assert avg.loc["epalm", "avg"] == pytest.approx(70.0) and avg.loc["vlpet", "avg"] == pytest.approx(95.0)
    md = (tmp_path / "report/summary.md").read_text()
    assert "### epalm" in md and "| epalm-linear | 1 | 1.00 | 60.00 | 80.00 | 70.00 |" in md
