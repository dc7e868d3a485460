"""Report stage (workflow/rules/report.smk): summary table and plots, and the rule graph."""

from __future__ import annotations

from pathlib import Path

from .common import command, parse_params


@command("report", "summary.csv, Markdown table and plots from metrics.json files", [
    ("--metrics", dict(action="extend", nargs="+", required=True, help="metrics.json files of runs and baselines")),
    ("--ledgers", dict(action="extend", nargs="*", default=[], help="ledger records of the jobs (ledger.csv)")),
    ("--out-dir", dict(required=True, help="report folder")),
])
def report(args) -> None:
    from ..report.summary import write_report

    write_report([Path(m) for m in args.metrics], Path(args.out_dir), [Path(m) for m in args.ledgers or []])


@command("rulegraph", "the workflow's rule graph for a config, as an SVG", [
    ("--snakefile", dict(required=True, help="the workflow's Snakefile")),
    ("--config", dict(required=True, help="the resolved config as JSON")),
    ("--out", dict(required=True, help="SVG to write")),
])
def rulegraph(args) -> None:
    from ..report.rulegraph import write_rule_graph

    write_rule_graph(args.snakefile, parse_params(args.config, "rulegraph"), args.out)
