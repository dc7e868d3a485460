"""The run ledger table: one row per job from the records of vltune.utils.ledger (what ran, on which
commit, packages and device, its wall time and peak memory, its resolved parameters)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from ..utils.io import read_json

COLUMNS = ["job", "command", "git_commit", "device", "gpus", "processes", "host", "slurm_job_id",
           "wall_s", "peak_rss_mb", "peak_gpu_mb", "started", "python"]


def ledger_frame(paths: list[Path]) -> pd.DataFrame:
    """One row per record; ``job`` is the record's path below the records' common folder
    (``finetune_vlbart/bart/full/steps10/seed1``). Package versions become ``pkg:<name>`` columns,
    parameters and resolved settings compact JSON cells."""
    paths = [Path(p) for p in paths]
    root = Path(os.path.commonpath([p.parent for p in paths])) if len(paths) > 1 else paths[0].parent.parent
    rows = []
    for path in paths:
        record = read_json(path)
        if "command" not in record or "wall_s" not in record:
            raise ValueError(f"{path}: not a ledger record (no 'command' / 'wall_s')")
        row = {c: record.get(c) for c in COLUMNS}
        row["job"] = path.relative_to(root).with_suffix("").as_posix()
        row.update({f"pkg:{k}": v for k, v in sorted(record.get("packages", {}).items())})
        row["params"] = json.dumps(record.get("params", {}), sort_keys=True, separators=(",", ":"))
        row["resolved"] = json.dumps(record.get("resolved", {}), sort_keys=True, separators=(",", ":"))
        rows.append(row)
    return pd.DataFrame(rows).sort_values("job", kind="stable").reset_index(drop=True)
