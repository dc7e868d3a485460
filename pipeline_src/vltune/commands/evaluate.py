"""Evaluation stage (workflow/rules/evaluate.smk): the majority-answer and constant-caption baselines."""

from __future__ import annotations

import time

from ..utils.io import write_json
from .common import command


@command("baselines", "majority-answer and constant-caption baselines", [
    ("--data", dict(required=True, help="folder of canonical tables")),
    ("--out", dict(required=True, help="baselines metrics.json to write")),
])
def baselines(args) -> None:
    from ..evaluate.baselines import compute_baselines

    t0 = time.perf_counter()
    rows = compute_baselines(args.data)
    write_json(args.out, {"experiment": "baselines", "rows": rows, "wall_s": time.perf_counter() - t0})
