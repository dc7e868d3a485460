"""The report's rule graph: snakemake's --rulegraph for the run's config, laid out and drawn as SVG
(one box per rule, one arrow per dependency, dependencies above their users)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from vltune.report.rulegraph import dot_to_svg, parse_dot, rule_graph_dot

ROOT = Path(__file__).resolve().parents[2]
SVG = "{http://www.w3.org/2000/svg}"
DOT = """digraph snakemake_dag {
    graph[bgcolor=white, margin=0];
\t0[label = "all", color = "0.00 0.6 0.85", style="rounded"];
\t1[label = "report", color = "0.55 0.6 0.85", style="rounded"];
\t2[label = "make_world", color = "0.30 0.6 0.85", style="rounded"];
\t3[label = "baselines", color = "0.06 0.6 0.85", style="rounded"];
\t1 -> 0
\t3 -> 1
\t2 -> 3
\t2 -> 1
}"""


def boxes(svg: str) -> dict[str, float]:
    """Rule label → the y of its box."""
    root = ET.fromstring(svg)
    return {g.find(f"{SVG}text").text: float(g.find(f"{SVG}rect").get("y")) for g in root.iter(f"{SVG}g")}


def test_svg_has_a_box_per_rule_an_arrow_per_edge_and_dependencies_on_top():
    svg = dot_to_svg(DOT)
    root = ET.fromstring(svg)
    ys = boxes(svg)
    assert set(ys) == {"all", "report", "make_world", "baselines"}
    assert len(list(root.iter(f"{SVG}polyline"))) == 4
    assert ys["make_world"] < ys["baselines"] < ys["report"] < ys["all"]
    nodes, edges = parse_dot(DOT)
    assert nodes["2"][0] == "make_world" and re.fullmatch(r"#[0-9a-f]{6}", nodes["2"][1]) and ("2", "1") in edges


def test_rule_graph_of_the_tiny_config_names_its_rules(tmp_path):
    config = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    config["vlpet"]["families"] = ["bart"]
    dot = rule_graph_dot(ROOT / "Snakefile", config, workdir=tmp_path)
    labels = {label for label, _ in parse_dot(dot)[0].values()}
    assert {"make_world", "pretrain_clip", "finetune_vlbart", "report", "rulegraph", "all"} <= labels
    assert "pretrain_t5" not in labels  # drawn for the config given
    assert not (tmp_path / "results").exists()
