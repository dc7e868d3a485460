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


def test_markdown_rows_follow_trainable_share_like_the_papers(tmp_path):
    """full (100 %) first, then methods by decreasing trainable share, ties by name."""
    paths = []
    for i, (method, pct) in enumerate([("bitfit", 1.2), ("adapter", 4.2), ("full", 100.0), ("lora", 4.2)]):
        p = tmp_path / f"{method}.json"
        p.write_text(json.dumps({"experiment": "vlpet", "method": method, "seed": 1, "trainable_params": 1,
                                 "total_params": 2, "trainable_pct": pct, "vqa_accuracy": 50.0 + i}))
        paths.append(p)
    write_report(paths, tmp_path / "report")
    md = (tmp_path / "report/summary.md").read_text()
    rows = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows == ["full", "adapter", "lora", "bitfit"]


def test_merging_table_lists_the_path_in_order_with_diagnostics_and_the_plot(tmp_path):
    paths = []
    rows = [("dare", 50.0, None), ("agnostic", 60.0, None), ("interpolation-r0.75", 55.0, 0.2),
            ("average", 54.0, 0.2), ("interpolation-r0.25", 53.0, 0.2), ("regmean", 58.0, 0.1)]
    for i, (init, vqa, gap) in enumerate(rows):
        rec = {"experiment": "merging", "method": init, "seed": 0, "trainable_params": 100, "total_params": 100,
               "trainable_pct": 100.0, "vqa_accuracy": vqa, "nlvr2_accuracy": 51.0, "retrieval_tr_r1": 10.0,
               "retrieval_ir_r1": 8.0, "retrieval_tr_r5": 30.0}
        if gap is not None:
            rec.update(merge_expert_cos=0.5, merge_expert_rel_l2=0.25, merge_merge_gap=gap)
        paths.append(tmp_path / f"m{i}.json")
        paths[-1].write_text(json.dumps(rec))
    df = write_report(paths, tmp_path / "report")
    assert {"retrieval_tr_r1", "merge_expert_cos", "merge_merge_gap"} <= set(df.columns)
    md = (tmp_path / "report/summary.md").read_text()
    table = md.split("### merging")[1]
    assert "| method | seeds | Params % | VQA | NLVR2 | TR@1 | IR@1 | Avg | experts cos(τ) |" in table
    order = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "method" not in line]
    assert order == ["agnostic", "average", "interpolation-r0.25", "interpolation-r0.75", "regmean", "dare"]
    # Avg of VQA, NLVR2, TR@1, IR@1; diagnostics after it, "–" for the unmerged baseline
    assert "| agnostic | 1 | 100.00 | 60.00 | 51.00 | 10.00 | 8.00 | 32.25 | – | – | – |" in table
    assert "| regmean | 1 | 100.00 | 58.00 | 51.00 | 10.00 | 8.00 | 31.75 | 0.500 | 0.250 | 0.100 |" in table
    assert (tmp_path / "report/merging.png").stat().st_size > 5000


def test_merging_plot_without_merging_runs_says_so(tmp_path, monkeypatch):
    """Both panels of merging.png carry the notice and nothing else (read off the figure as it is
    saved), and the file is a PNG."""
    from matplotlib.figure import Figure

    saved, real_savefig = {}, Figure.savefig

    def spy(fig, fname, *args, **kwargs):
        saved[str(fname)] = [([t.get_text() for t in ax.texts], len(ax.lines), ax.axison) for ax in fig.axes]
        return real_savefig(fig, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    write_report([_run(tmp_path, 1, 70.0, 200.0)], tmp_path / "report")
    merging = [panels for name, panels in saved.items() if "merging" in name.rsplit("/", 1)[-1]]
    assert merging == [[(["no merging-study runs in this configuration"], 0, False)] * 2]
    assert (tmp_path / "report/merging.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
