"""What a training job is: its command's settings and the contents of its inputs, as a JSON-able
dict. A resume checkpoint records it, and a re-run resumes only a checkpoint of the same run
(:func:`vltune.train.loop.train`); anything else (other params, a retrained backbone, re-extracted
features, other data) stops with the differences named.

Inputs are identified by content, never by time stamps: a feature store by its manifest (which
holds every shard's sha256), a dataset folder by the data stage's record (the synthetic world's
config, or the conversion's counts and the sha256 of every source's download record; without
those, the tables' own sha256), any other file or folder by the sha256 of its files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

# argparse attributes that say where or how a job runs, not what it computes
OPERATIONAL = frozenset({"command", "func", "out", "resume_dir", "ledger", "threads", "gpus", "processes",
                         "predictions", "experiment"})


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _all_sources_recorded(convert_record: dict) -> bool:
    sources = convert_record.get("sources")
    return isinstance(sources, dict) and bool(sources) and all(sources.values())


def path_identity(path: Path) -> Any:
    """A content identity of the file or folder ``path`` (see the module docstring)."""
    from ..data.tables import DATA_RECORDS

    if path.is_file():
        return _sha256(path)
    if (path / "manifest.json").is_file():
        return {"manifest": _sha256(path / "manifest.json")}
    record = next((path / r for r in DATA_RECORDS if (path / r).is_file()), None)
    if record is not None and (record.name == "world.json" or _all_sources_recorded(json.loads(record.read_text()))):
        return {record.name: _sha256(record)}
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return {p.relative_to(path).as_posix(): _sha256(p) for p in files}


def run_identity(args) -> dict:
    """The identity of the parsed command ``args``: every setting (``--params`` parsed) and, for
    each argument naming an existing file or folder, its content identity."""
    out: dict[str, Any] = {}
    for key, value in sorted(vars(args).items()):
        if key in OPERATIONAL or value is None:
            continue
        if key == "params" and isinstance(value, str):
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value
            continue
        values = value if isinstance(value, list) else [value]
        if all(isinstance(v, str) and os.path.exists(v) for v in values):
            out[key] = [path_identity(Path(v)) for v in values] if isinstance(value, list) else path_identity(Path(value))
        else:
            out[key] = value
    return out


def differences(recorded: dict, current: dict, prefix: str = "") -> list[str]:
    """Human-readable keys whose values differ between two identities (nested dicts walked)."""
    diffs = []
    for key in sorted(set(recorded) | set(current)):
        a, b, name = recorded.get(key), current.get(key), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.extend(differences(a, b, f"{name}."))
        elif a != b:
            diffs.append(name if isinstance(a, (dict, list)) or isinstance(b, (dict, list)) or
                         (isinstance(a, str) and len(a) == 64) else f"{name} {a!r} → {b!r}")
    return diffs


class RunIdentity:
    """The current job's identity, computed once and only when needed (a checkpoint to compare or
    to write), since hashing a backbone costs seconds."""

    def __init__(self, compute: Callable[[], dict]):
        self._compute, self._value = compute, None

    @property
    def value(self) -> dict:
        if self._value is None:
            self._value = json.loads(json.dumps(self._compute(), default=str))
        return self._value
