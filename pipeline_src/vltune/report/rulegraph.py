"""The workflow's rule graph as an SVG for the report: the graph ``snakemake --rulegraph`` prints for
the run's config, laid out in layers (Sugiyama, through grandalf) and drawn as plain SVG, so the
report needs no Graphviz install.
"""

from __future__ import annotations

import colorsys
import html
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import UserError
from ..utils.io import write_bytes_atomic

NODE_RE = re.compile(r'^\s*(\d+)\[label = "([^"]+)", color = "([\d.]+) ([\d.]+) ([\d.]+)"', re.M)
EDGE_RE = re.compile(r"^\s*(\d+) -> (\d+)\s*$", re.M)
NODE_H, CHAR_W, PAD = 26, 7.2, 16


def rule_graph_dot(snakefile: str | Path, config: dict, workdir: str | Path = ".", target: str = "all") -> str:
    """``snakemake --rulegraph`` (dot) of ``snakefile`` with ``config`` for ``target``, run in ``workdir``."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as cfg:
        json.dump(config, cfg)
        cfg.flush()
        cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--configfile", cfg.name,
               "--rulegraph", "dot", "--nolock", "--workflow-profile", "none", target]
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    if proc.returncode != 0 or "digraph" not in proc.stdout:
        raise UserError(f"snakemake --rulegraph failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout[proc.stdout.index("digraph"):]


def parse_dot(dot: str) -> tuple[dict[str, tuple[str, str]], list[tuple[str, str]]]:
    """Nodes ``{id: (label, fill colour)}`` and edges ``[(from, to)]`` of snakemake's dot output."""
    nodes = {}
    for nid, label, h, s, v in NODE_RE.findall(dot):
        r, g, b = colorsys.hsv_to_rgb(float(h), float(s) * 0.35, 1.0)  # a light fill of the rule's hue
        nodes[nid] = (label, f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    edges = [(a, b) for a, b in EDGE_RE.findall(dot) if a in nodes and b in nodes]
    if not nodes:
        raise ValueError("no rule nodes found in the rule graph")
    return nodes, edges


class _Box:  # the size grandalf lays out and the centre it assigns
    def __init__(self, w: float, h: float):
        self.w, self.h, self.xy = w, h, (0.0, 0.0)


class _Route:  # grandalf hands an edge its points (through the layers it crosses) via setpath
    def __init__(self):
        self.points: list[tuple[float, float]] = []

    def setpath(self, points):
        self.points = [tuple(p) for p in points]


def layout(nodes: dict, edges: list) -> tuple[dict[str, tuple[float, float, float, float]], dict]:
    """``{id: (centre x, centre y, width, height)}`` and ``{(from, to): [points]}``: dependencies
    above the rules that use them, long edges routed around the layers they cross; unconnected
    parts side by side."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    vertices = {}
    for nid, (label, _) in nodes.items():
        vertices[nid] = Vertex(nid)
        vertices[nid].view = _Box(len(label) * CHAR_W + 2 * PAD, NODE_H)
    graph_edges = {}
    for a, b in edges:
        graph_edges[(a, b)] = Edge(vertices[a], vertices[b])
        graph_edges[(a, b)].view = _Route()
    graph = Graph(list(vertices.values()), list(graph_edges.values()))
    boxes, routes, x_offset = {}, {}, 0.0
    for component in graph.C:
        sug = SugiyamaLayout(component)
        sug.yspace, sug.xspace = 30, 20
        sug.init_all()
        sug.draw()
        vs = list(component.sV)
        left = min(v.view.xy[0] - v.view.w / 2 for v in vs)
        for v in vs:
            boxes[v.data] = (v.view.xy[0] - left + x_offset, v.view.xy[1], v.view.w, v.view.h)
        for e in component.sE:
            key = (e.v[0].data, e.v[1].data)
            routes[key] = [(x - left + x_offset, y) for x, y in e.view.points]
        x_offset = max(x + w / 2 for x, _, w, _ in boxes.values()) + 30
    return boxes, routes


def dot_to_svg(dot: str) -> str:
    nodes, edges = parse_dot(dot)
    boxes, routes = layout(nodes, edges)
    margin = 10
    min_y = min(y - h / 2 for _, y, _, h in boxes.values())
    width = max(x + w / 2 for x, _, w, _ in boxes.values()) + 2 * margin
    height = max(y + h / 2 for _, y, _, h in boxes.values()) - min_y + 2 * margin
    dy = margin - min_y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
             f'viewBox="0 0 {width:.1f} {height:.1f}" font-family="sans-serif" font-size="12">',
             "<title>vltune rule graph</title>",
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
             'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#888"/></marker></defs>']
    for a, b in edges:
        (xa, ya, _, ha), (xb, yb, _, hb) = boxes[a], boxes[b]
        down = yb >= ya  # from the bottom of the dependency to the top of its user
        inner = routes.get((a, b), [])[1:-1]
        points = [(xa, ya + (ha if down else -ha) / 2), *inner, (xb, yb - (hb if down else -hb) / 2)]
        path = " ".join(f"{x + margin:.1f},{y + dy:.1f}" for x, y in points)
        parts.append(f'<polyline class="edge" points="{path}" fill="none" stroke="#888" stroke-width="1.5" '
                     'marker-end="url(#arrow)"/>')
    for nid, (label, fill) in nodes.items():
        x, y, w, h = boxes[nid]
        parts.append(f'<g class="rule"><rect x="{x - w / 2 + margin:.1f}" y="{y - h / 2 + dy:.1f}" width="{w:.1f}" '
                     f'height="{h:.1f}" rx="6" fill="{fill}" stroke="#555"/>'
                     f'<text x="{x + margin:.1f}" y="{y + dy + 4:.1f}" text-anchor="middle">{html.escape(label)}</text></g>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_rule_graph(snakefile: str | Path, config: dict, out: str | Path, workdir: str | Path = ".") -> None:
    write_bytes_atomic(out, dot_to_svg(rule_graph_dot(snakefile, config, workdir)).encode())
