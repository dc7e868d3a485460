"""What the report shows of the scoring rules: NLVR2 consistency as its own column (not in Avg),
and a mark on every VQA score computed with the non-official always-normalise rule."""

from __future__ import annotations

import json

import pandas as pd

from vltune.report.summary import VQA_VARIANT_NOTE, load_rows, markdown_tables, summary_frame


def _report(paths):
    """The summary.csv frame and the summary.md text (write_report writes these two, and plots)."""
    df = summary_frame(load_rows(paths))
    return df, markdown_tables(df)


def _run(tmp_path, name, method, seed, **extra):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({
        "experiment": "vlpet", "method": method, "seed": seed, "trainable_params": 10, "total_params": 40,
        "trainable_pct": 25.0, "vqa_accuracy": 70.0, "gqa_accuracy": 50.0, "nlvr2_accuracy": 60.0,
        "caption_cider": 200.0, **extra}))
    return path


def test_nlvr2_consistency_is_a_column_after_avg_and_not_in_it(tmp_path):
    paths = [_run(tmp_path, "a", "full", 1, nlvr2_consistency=40.0),
             _run(tmp_path, "b", "full", 2, nlvr2_consistency=44.0)]
    df, md = _report(paths)
    assert "| method | seeds | Params % | VQA | GQA | NLVR2 | CIDEr | Avg | NLVR2 cons. |" in md
    # Avg = (70 + 50 + 60 + 200) / 4 = 95 for both seeds; consistency 42 ± 2.83
    assert "| full | 2 | 25.00 | 70.00 ± 0.00 | 50.00 ± 0.00 | 60.00 ± 0.00 | 200.00 ± 0.00 | 95.00 ± 0.00 | 42.00 ± 2.83 |" in md
    assert df["nlvr2_consistency"].tolist() == [40.0, 44.0]


def test_always_normalised_vqa_scores_are_marked_with_a_note(tmp_path):
    paths = [_run(tmp_path, "a", "full", 1, vqa_normalize="always"), _run(tmp_path, "b", "lora", 1)]
    df, md = _report(paths)
    rows = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| 70.00† |" in rows["full"]
    assert "†" not in rows["lora"]
    assert VQA_VARIANT_NOTE in md and "not the official vqaEval.py rule" in VQA_VARIANT_NOTE
    label = df.set_index("method")["vqa_normalize"]
    assert label["full"] == "always" and pd.isna(label["lora"])


def test_official_vqa_scores_get_no_mark(tmp_path):
    _, md = _report([_run(tmp_path, "a", "full", 1)])
    assert "†" not in md and VQA_VARIANT_NOTE not in md
