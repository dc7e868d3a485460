"""The package's import layering: nothing in a lower layer imports a higher one, and no two
modules import each other (directly or around a cycle).

Parsed only (``ast``), nothing imported: every ``import`` / ``from ... import`` counts, at module
level or inside a function, relative ones resolved against the importing module's package; a
``"vltune.x.y:name"`` string constant (how the PET registry names an injector it imports on first
use) counts as an import of ``vltune.x.y`` too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pipeline_src" / "vltune"

# Low -> high. A module belongs to the layer of the longest prefix that names it (a prefix names
# a module and everything under it); a module may import its own layer and every layer below.
LAYERS: list[list[str]] = [
    ["vltune", "vltune.errors", "vltune.registry", "vltune.config_numbers", "vltune.utils", "vltune.gpus",
     "vltune.settings", "vltune.merge_methods"],
    ["vltune.data"],
    ["vltune.merge", "vltune.report"],
    ["vltune.pet"],
    ["vltune.train"],  # the engine: loop, checkpoints, data parallelism, objectives, run identity
    ["vltune.backbones"],
    ["vltune.models", "vltune.features"],
    ["vltune.evaluate"],
    ["vltune.recipes"],
    ["vltune.das"],
    ["vltune.import_checkpoint", "vltune.verify", "vltune.config_checks"],
    ["vltune.commands"],
    ["vltune.launch", "vltune.cli"],
]

_REF = re.compile(r"^(vltune(?:\.\w+)+):\w+$")


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """{dotted module name: file} for every ``.py`` under the package (a package is its __init__)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The vltune modules ``name`` (at ``path``) imports; ``from pkg import sub`` names ``pkg.sub``
    when that is a module, else ``pkg``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            ref = _REF.match(node.value)
            if ref:
                found.add(ref.group(1))
    return {m for m in found if m == "vltune" or m.startswith("vltune.")}


def layer_of(module: str) -> int | None:
    best, best_len = None, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            names_it = module == prefix or (prefix != "vltune" and module.startswith(prefix + "."))
            if names_it and len(prefix) > best_len:
                best, best_len = i, len(prefix)
    return best


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {name: imported_modules(name, path, known) for name, path in files.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(target), layer_of(module)
            if low is not None and high is not None and low > high:
                bad.append(f"{module} (layer {high}) imports {target} (layer {low})")
    return bad


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan), sorted.

    A package's ``__init__`` importing its own submodules is how it re-exports them; such an edge
    closes a cycle only with a submodule importing the package back, which is reported like any
    other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w == v or w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_vltune_module_is_assigned_a_layer(graph):
    assert len(graph) > 50, f"found only {len(graph)} modules under {PACKAGE}"
    unassigned = sorted(m for m in graph if layer_of(m) is None)
    assert unassigned == [], f"modules in no layer of LAYERS: {unassigned}"


def test_every_import_target_is_a_vltune_module(graph):
    # An import of a module that does not exist would escape the layer check below.
    missing = sorted(f"{m} imports {t}" for m, ts in graph.items() for t in ts if t not in graph)
    assert missing == []


def test_no_module_imports_a_higher_layer(graph):
    assert upward_imports(graph) == []


def test_no_circular_imports_between_modules(graph):
    assert cycles(graph) == []


# --- the checker itself, on a small package written here ----------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / "vltune" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "vltune"


def test_checker_sees_a_lazy_relative_import_of_a_higher_layer(tmp_path):
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/tables.py": "def f():\n    from ..evaluate.vqa import g\n    return g\n",
        "evaluate/__init__.py": "",
        "evaluate/vqa.py": "def g():\n    pass\n",
    })
    assert upward_imports(import_graph(pkg)) == [
        "vltune.data.tables (layer 1) imports vltune.evaluate.vqa (layer 7)"]


def test_checker_sees_a_registry_string_reference_and_a_package_submodule_import(tmp_path):
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "pet/__init__.py": "INJECT = 'vltune.models.epalm:EPALM'\n",
        "train/__init__.py": "",
        "train/loop.py": "from vltune.recipes import planner\n",
        "models/__init__.py": "",
        "models/epalm.py": "",
        "recipes/__init__.py": "",
        "recipes/planner.py": "",
    })
    assert upward_imports(import_graph(pkg)) == [
        "vltune.pet (layer 3) imports vltune.models.epalm (layer 6)",
        "vltune.train.loop (layer 4) imports vltune.recipes.planner (layer 8)",
    ]


def test_checker_finds_a_cycle_within_one_layer(tmp_path):
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "utils/__init__.py": "",
        "utils/a.py": "from . import b\n",
        "utils/b.py": "def f():\n    from .c import x\n",
        "utils/c.py": "from vltune.utils.a import y\n",
        "utils/d.py": "from vltune.utils import a\n",
    })
    assert cycles(import_graph(pkg)) == [["vltune.utils.a", "vltune.utils.b", "vltune.utils.c"]]
