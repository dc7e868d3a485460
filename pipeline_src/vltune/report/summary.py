"""The report's tables and plots: ``summary.csv`` (one row per run and per baseline), a Markdown
table shaped like the papers' (mean ± std over seeds), a per-task score plot, a Pareto plot of
trainable parameters against the average score, and the merging study's score-vs-ratio/λ plot.

Scores are percent, as the papers print them (accuracy 0.6617 → 66.17, CIDEr 1.2203 → 122.03).
metrics.json files hold unrounded scores; the Markdown table is where they are rounded to two
decimals (the official VQA evaluation rounds its overall accuracy the same way).

NLVR2 consistency, where a run reports it, is a column after Avg (not part of it). A VQA score
computed with the non-official always-normalise rule (``vqa_normalize: "always"`` in its
metrics) is marked † in the table, with a note under it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..merge_methods import MERGE_METHODS, PRETRAINED_INITS
from ..utils.io import atomic_path, read_json, write_bytes_atomic

ID_COLUMNS = ["experiment", "method", "seed", "trainable_params", "total_params", "trainable_pct"]
TASK_PREFIXES = ("vqa_", "gqa_", "nlvr2_", "caption_", "retrieval_", "merge_")
# Metrics shown first, in the papers' order; the Avg column follows VL-PET (CIDEr counted as is).
HEADLINE = ["vqa_accuracy", "gqa_accuracy", "nlvr2_accuracy", "caption_cider"]
# Experiments whose table has other columns: the merging paper's (VQA, NLVR2, TR@1, IR@1), then
# the merge diagnostics (not in Avg).
EXPERIMENT_HEADLINE = {"merging": ["vqa_accuracy", "nlvr2_accuracy", "retrieval_tr_r1", "retrieval_ir_r1"]}
DIAGNOSTICS = {"merging": ["merge_expert_cos", "merge_expert_rel_l2", "merge_merge_gap"]}
# Shown after Avg, not counted in it.
EXTRA = ["nlvr2_consistency"]
# Scoring-rule labels carried from metrics.json into the rows (strings, not scores).
LABELS = ["vqa_normalize"]
VQA_VARIANT_NOTE = ("† VQA accuracy with the prediction and all ten answers always normalised "
                    "(vqa_normalize: always), not the official vqaEval.py rule.")
PRETTY = {"vqa_accuracy": "VQA", "gqa_accuracy": "GQA", "nlvr2_accuracy": "NLVR2", "caption_cider": "CIDEr",
          "nlvr2_consistency": "NLVR2 cons.",
          "retrieval_tr_r1": "TR@1", "retrieval_ir_r1": "IR@1", "merge_expert_cos": "experts cos(τ)",
          "merge_expert_rel_l2": "experts ‖ΔW‖/‖W₀‖", "merge_merge_gap": "merge gap"}
# The merging table reads as the paper's path: baselines, then seed → specific → each merge.
MERGING_ORDER = [*PRETRAINED_INITS, *MERGE_METHODS]


def _is_metric(key: str, value) -> bool:
    return key.startswith(TASK_PREFIXES) and isinstance(value, (int, float)) and not isinstance(value, bool)


def load_rows(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        record = read_json(path)
        entries = record["rows"] if "rows" in record else [record]
        for entry in entries:
            row = {c: entry.get(c) for c in ID_COLUMNS}
            row["experiment"] = entry.get("experiment", record.get("experiment"))
            if not row["experiment"] or not row["method"]:
                raise ValueError(f"{path}: metrics record has no 'experiment'/'method' field")
            row.update({k: v for k, v in entry.items() if _is_metric(k, v)})
            row.update({k: entry[k] for k in LABELS if isinstance(entry.get(k), str)})
            rows.append(row)
    return rows


def summary_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    metric_cols = [c for c in HEADLINE if c in df] + sorted(c for c in df if c not in ID_COLUMNS and c not in HEADLINE)
    df = df.reindex(columns=ID_COLUMNS + metric_cols)
    df["seed"] = df["seed"].astype("Int64")
    for c in ("trainable_params", "total_params"):
        df[c] = df[c].astype("Int64")
    return df.sort_values(["experiment", "method", "seed"], kind="stable", na_position="first").reset_index(drop=True)


def _mean_std(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    if len(values) == 1:
        return f"{values.iloc[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def merging_sort_key(method: str) -> tuple:
    """agnostic, seed, specific, average, interpolation by ratio, arithmetic by λ, regmean, ties, dare."""
    family, _, value = method.partition("-")
    rank = MERGING_ORDER.index(family) if family in MERGING_ORDER else len(MERGING_ORDER)
    try:
        x = float(value[1:]) if value else 0.0
    except ValueError:
        x = 0.0
    return rank, x, method


def _method_order(experiment: str, group: pd.DataFrame) -> list[str]:
    if experiment == "merging":
        return sorted(group["method"].unique(), key=merging_sort_key)
    # Like the papers' tables: full fine-tuning first, then by trainable share (ties by name).
    order = group.groupby("method")["trainable_pct"].mean().fillna(-1).reset_index()
    return list(order.sort_values(["trainable_pct", "method"], ascending=[False, True], kind="stable")["method"])


def markdown_tables(df: pd.DataFrame) -> str:
    parts = []
    for experiment, group in df.groupby("experiment", sort=True):
        cols = [c for c in EXPERIMENT_HEADLINE.get(experiment, HEADLINE) if c in group and group[c].notna().any()]
        extra = [c for c in EXTRA if c in group and group[c].notna().any()]
        diag = [c for c in DIAGNOSTICS.get(experiment, []) if c in group and group[c].notna().any()]
        lines = [f"### {experiment}", ""]
        header = (["method", "seeds", "Params %"] + [PRETTY[c] for c in cols] + (["Avg"] if len(cols) > 1 else [])
                  + [PRETTY[c] for c in extra] + [PRETTY[c] for c in diag])
        marked = False
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method in _method_order(experiment, group):
            g = group[group["method"] == method]
            pct = g["trainable_pct"].dropna()
            cells = [str(method), str(g["seed"].notna().sum() or "–"), f"{pct.iloc[0]:.2f}" if len(pct) else "–"]
            variant = "vqa_normalize" in g and (g["vqa_normalize"] == "always").any()
            marked = marked or (variant and "vqa_accuracy" in cols)
            cells += [_mean_std(g[c]) + ("†" if c == "vqa_accuracy" and variant else "") for c in cols]
            if len(cols) > 1:
                avg = g[cols].mean(axis=1, skipna=False)
                cells.append(_mean_std(avg) if avg.notna().all() else "–")
            cells += [_mean_std(g[c]) for c in extra]
            cells += [_mean_std_small(g[c]) for c in diag]
            lines.append("| " + " | ".join(cells) + " |")
        if marked:
            lines += ["", VQA_VARIANT_NOTE]
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _mean_std_small(values: pd.Series) -> str:
    """Diagnostics are ratios and cosines (< 1): three decimals, no spread (the same over seeds)."""
    values = values.dropna()
    return f"{values.mean():.3f}" if len(values) else "–"


def score_plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in HEADLINE if c in df and df[c].notna().any()]
    fig, axes = plt.subplots(1, max(1, len(cols)), figsize=(3.2 * max(1, len(cols)), 3.4), squeeze=False)
    for ax, col in zip(axes[0], cols):
        g = df.dropna(subset=[col]).groupby(["experiment", "method"])[col]
        mean, std = g.mean(), g.std(ddof=1).fillna(0.0)
        labels = [f"{m}\n({e})" if e == "baselines" else m for e, m in mean.index]
        colors = ["#bbbbbb" if e == "baselines" else "#3b75af" for e, _ in mean.index]
        ax.bar(range(len(mean)), mean.values, yerr=std.values, color=colors, capsize=3)
        ax.set_xticks(range(len(mean)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(PRETTY[col])
        ax.set_ylabel("score (%)" if col != "caption_cider" else "CIDEr ×100")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def method_averages(df: pd.DataFrame) -> pd.DataFrame:
    """Per (experiment, method) of trained runs: trainable %, and Avg (mean of the headline
    metrics the experiment reports, as in VL-PET) as mean and std over seeds. Runs missing one of
    their experiment's headline metrics are left out."""
    parts = []
    for _, exp in df[df["trainable_pct"].notna()].groupby("experiment", sort=True):
        # each experiment's own tasks (eP-ALM trains VQA and captioning, not NLVR2)
        cols = [c for c in HEADLINE if c in exp and exp[c].notna().any()]
        parts.append(exp.dropna(subset=cols).assign(avg=lambda d, cols=cols: d[cols].mean(axis=1)))
    runs = pd.concat(parts) if parts else df.iloc[:0].assign(avg=pd.Series(dtype=float))
    g = runs.groupby(["experiment", "method"])
    out = pd.DataFrame({"trainable_pct": g["trainable_pct"].mean(), "avg": g["avg"].mean(),
                        "avg_std": g["avg"].std(ddof=1).fillna(0.0)})
    return out.reset_index()


def pareto_front(points: pd.DataFrame) -> pd.DataFrame:
    """Methods not beaten by any other on both axes (fewer or equal trainable %, higher or equal
    Avg, one of them strictly), sorted by trainable %."""
    keep = []
    for i, p in points.iterrows():
        dominated = ((points["trainable_pct"] <= p["trainable_pct"]) & (points["avg"] >= p["avg"])
                     & ((points["trainable_pct"] < p["trainable_pct"]) | (points["avg"] > p["avg"]))).any()
        keep.append(not dominated)
    return points[keep].sort_values("trainable_pct")


def pareto_plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = method_averages(df)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for i, (experiment, g) in enumerate(points.groupby("experiment", sort=True)):
        color = f"C{i}"
        ax.errorbar(g["trainable_pct"], g["avg"], yerr=g["avg_std"], fmt="o", color=color, capsize=3,
                    label=experiment)
        for _, p in g.iterrows():
            ax.annotate(p["method"], (p["trainable_pct"], p["avg"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        front = pareto_front(g)
        ax.plot(front["trainable_pct"], front["avg"], "--", color=color, linewidth=1)
    ax.set_xscale("log")
    ax.set_xlabel("trainable parameters (%)")
    ax.set_ylabel("Avg of the experiment's tasks")
    if len(points):
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def merging_plot(df: pd.DataFrame, path: Path) -> None:
    """Score of each task vs the interpolation ratio and vs the arithmetic λ; the plain average is
    drawn at ratio 0.5 (the same model), the agnostic baseline as a dashed line per task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = df[df["experiment"] == "merging"]
    cols = [c for c in EXPERIMENT_HEADLINE["merging"] if c in runs and runs[c].notna().any()]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), squeeze=False)
    if runs.empty or not cols:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no merging-study runs in this configuration", ha="center", va="center", fontsize=8)
            ax.set_axis_off()
    for ax, (family, label) in zip(axes[0], (("interpolation", "interpolation ratio α (weight of the v expert)"),
                                               ("arithmetic", "modality arithmetic λ"))):
        if runs.empty or not cols:
            break
        sweep = runs[runs["method"].str.startswith(family + "-")].assign(
            x=lambda d: d["method"].str.split("-").str[1].str[1:].astype(float))
        if family == "interpolation":
            sweep = pd.concat([sweep, runs[runs["method"] == "average"].assign(x=0.5)])
        for i, col in enumerate(cols):
            g = sweep.groupby("x")[col].mean().sort_index()
            if len(g):
                ax.plot(g.index, g.values, "o-", color=f"C{i}", label=PRETTY[col])
            base = runs.loc[runs["method"] == "agnostic", col].mean()
            if pd.notna(base):
                ax.axhline(base, color=f"C{i}", linestyle="--", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("score (%)")
        ax.set_title(f"{family} (dashed: agnostic baseline)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def write_report(metrics_paths: list[Path], out_dir: Path, ledger_paths: list[Path] = ()) -> pd.DataFrame:
    """summary.csv, summary.md, scores.png, pareto.png, merging.png and, given ledger records, ledger.csv."""
    from .ledger import ledger_frame

    df = summary_frame(load_rows(metrics_paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    if ledger_paths:
        write_bytes_atomic(out_dir / "ledger.csv", ledger_frame(list(ledger_paths)).to_csv(index=False).encode())
    write_bytes_atomic(out_dir / "summary.csv", df.to_csv(index=False, float_format="%.4f").encode())
    write_bytes_atomic(out_dir / "summary.md", markdown_tables(df).encode())
    score_plot(df, out_dir / "scores.png")
    pareto_plot(df, out_dir / "pareto.png")
    merging_plot(df, out_dir / "merging.png")
    return df

