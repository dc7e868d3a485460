"""DAS's report: a table shaped like the paper's (k, trainable params, FLOPs, latency, task
scores), accuracy against latency, and the search's logits over its reward steps.

FLOPs and latency are also given relative to k = 0 of the same experiment and seed (the
parallel-adapter model nothing is skipped from), which is how DAS reports its savings.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..utils.io import atomic_path, read_json, write_bytes_atomic
from .summary import HEADLINE, PRETTY

# The paper's table: VQA, NLVR2 and retrieval (the VLMo's), besides VL-BART's GQA and CIDEr.
SCORES = [*HEADLINE, "retrieval_tr_r1", "retrieval_ir_r1"]

COLUMNS = ["experiment", "task", "k", "skip", "seed", "trainable_params", "trainable_pct", "total_params",
           "flops_per_sample", "latency_ms", "latency_ms_per_sample", "latency_batch_size"]


def das_frame(paths: list[Path]) -> pd.DataFrame:
    rows = []
    for path in paths:
        record = read_json(path)
        missing = [c for c in COLUMNS if c not in record]
        if missing:
            raise ValueError(f"{path}: not a das-evaluate metrics file (missing {', '.join(missing)})")
        row = {c: record[c] for c in COLUMNS}
        row["skip"] = " ".join(map(str, record["skip"])) or "–"
        row.update({c: record[c] for c in SCORES if c in record})
        rows.append(row)
    df = pd.DataFrame(rows).sort_values(["experiment", "seed", "k"], kind="stable").reset_index(drop=True)
    base = df[df["k"] == 0].set_index(["experiment", "seed"])
    for col, out in (("flops_per_sample", "flops_reduction_pct"), ("latency_ms", "latency_reduction_pct")):
        keys = list(zip(df["experiment"], df["seed"]))
        ref = pd.Series([base[col].get(key, float("nan")) for key in keys], dtype=float)
        df[out] = 100.0 * (1 - df[col] / ref)  # NaN where that run has no k = 0
    return df


def das_markdown(df: pd.DataFrame) -> str:
    parts = []
    for experiment, group in df.groupby("experiment", sort=True):
        scores = [c for c in SCORES if c in group and group[c].notna().any()]
        header = ["k", "skipped", "seeds", "trainable (K)", "Params %", "MFLOPs/sample", "FLOPs −%", "latency ms/batch", "latency −%"]
        header += [PRETTY[c] for c in scores]
        lines = [f"### {experiment}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for k, g in group.groupby("k", sort=True):
            def mean(c, fmt="{:.2f}"):
                v = g[c].dropna()
                return fmt.format(v.mean()) if len(v) else "–"

            cells = [str(k), " / ".join(sorted(set(g["skip"]))), str(len(g)), f"{g['trainable_params'].mean() / 1e3:.1f}",
                     mean("trainable_pct"),
                     f"{g['flops_per_sample'].mean() / 1e6:.2f}",
                     mean("flops_reduction_pct", "{:.1f}"), mean("latency_ms"), mean("latency_reduction_pct", "{:.1f}")]
            cells += [mean(c) for c in scores]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip("."), dpi=120)
    plt.close(fig)


def latency_plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for i, (experiment, g) in enumerate(df.groupby("experiment", sort=True)):
        score = next(c for c in SCORES if c in g and g[c].notna().any())
        pts = g.groupby("k")[["latency_ms_per_sample", score]].mean()
        ax.plot(pts["latency_ms_per_sample"], pts[score], "o-", color=f"C{i}", label=f"{experiment} ({PRETTY[score]})")
        for k, p in pts.iterrows():
            ax.annotate(f"k={k}", (p["latency_ms_per_sample"], p[score]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("inference latency (ms per sample)")
    ax.set_ylabel("score (%)")
    ax.legend(fontsize=7)
    _save(fig, path)


def search_plot(skips: list[Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [read_json(p) for p in skips]
    fig, axes = plt.subplots(1, max(1, len(records)), figsize=(4.2 * max(1, len(records)), 3.4), squeeze=False)
    for ax, rec in zip(axes[0], records):
        steps = [t["step"] for t in rec["trace"]]
        for i in range(rec["n_blocks"]):
            ax.plot(steps, [t["logits"][i] for t in rec["trace"]], label=f"block {i}" + (" (skipped)" if i in rec["skip"] else ""))
        ax.set_title(f"{rec['task']}, k={rec['k']}", fontsize=9)
        ax.set_xlabel("training step")
        ax.set_ylabel("logit g (redundancy)")
        ax.legend(fontsize=7)
    if not records:
        axes[0][0].text(0.5, 0.5, "no search (k = 0 only)", ha="center")
    _save(fig, path)


def write_das_report(metrics: list[Path], skips: list[Path], out_dir: Path) -> pd.DataFrame:
    df = das_frame(metrics)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out_dir / "das.csv", df.to_csv(index=False, float_format="%.4f").encode())
    write_bytes_atomic(out_dir / "das.md", das_markdown(df).encode())
    latency_plot(df, out_dir / "das_latency.png")
    search_plot(skips, out_dir / "das_search.png")
    return df
