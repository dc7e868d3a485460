"""Integrity of the files one stage writes and another reads, and ``vltune verify``.

Reading tensor files and the digests that guard them is :mod:`vltune.utils.tensor_files`; this
module holds what needs the higher layers (tables, feature stores).

Verifying (``vltune verify PATH...``): each path is one artifact, recognised by what it holds:

- a dataset folder (``tables.json`` or a data record): every table against the manifest, with
  its full sha256 whatever its size, then read and schema-checked; the synthetic world's
  ``world.json`` digests too;
- one ``.arrow`` table: the same for that table;
- a feature store (``manifest.json``): every shard's sha256, readability and shapes, by the
  store's own reader;
- one ``.safetensors`` file, or any other folder (a backbone, a checkpoint, a merged model):
  every ``.safetensors`` in it opens, its header parses and every tensor's bytes are read.

Digests: every command that writes tensor files records their sizes and sha256 when it has
finished (:func:`record_output_digests`, through ``vltune.utils.tensor_files.record_digests``).
Tables and feature shards carry their own digests (``tables.json``, the store's ``manifest.json``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .errors import ArtifactError, UserError
from .utils.tensor_files import record_digests, safetensors_specs

# --- digests of a command's output ----------------------------------------------------------------


def record_output_digests(out: str | os.PathLike) -> None:
    """After a command: digests of the tensor files of its ``--out``. A feature store or a dataset
    folder is left alone: its manifest already holds every file's sha256."""
    from .data.tables import TABLE_MANIFEST
    from .features.store import MANIFEST

    out = Path(out)
    if out.is_dir() and ((out / MANIFEST).is_file() or (out / TABLE_MANIFEST).is_file()):
        return
    record_digests(out)


# --- vltune verify -------------------------------------------------------------------------------

def _verify_tables(data_dir: Path) -> None:
    from .data.tables import (DATA_RECORDS, TABLE_KINDS, TABLE_MANIFEST, check_table_file,
                              read_table, table_manifest, table_path)
    from .utils.io import read_json, sha256_file

    entries = table_manifest(data_dir)
    if entries is None:
        raise ArtifactError(f"{data_dir}: neither {TABLE_MANIFEST} nor a data record ({', '.join(DATA_RECORDS)}): "
                            "not a dataset folder the data stage wrote")
    for kind in TABLE_KINDS:
        path = table_path(data_dir, kind)
        if path.name not in entries:
            raise ArtifactError(f"{data_dir / TABLE_MANIFEST}: does not list {path.name}")
        if not path.is_file():
            raise ArtifactError(f"{path}: file not found (listed in {data_dir / TABLE_MANIFEST})")
        check_table_file(path, full=True)
        read_table(path, kind)
    world = data_dir / "world.json"
    if world.is_file():
        try:
            recorded = read_json(world).get("sha256", {})
        except (ValueError, AttributeError) as e:
            raise ArtifactError(f"{world}: not a world record ({e})") from None
        for kind, digest in sorted(recorded.items()):
            path = table_path(data_dir, kind)
            if sha256_file(path) != digest:
                raise ArtifactError(f"{path}: sha256 differs from the one {world} records ({digest})")


def _verify_table_file(path: Path) -> None:
    from .data.tables import SCHEMAS, check_table_file, read_table

    check_table_file(path, full=True)
    kind = path.name[: -len(".arrow")]
    read_table(path, kind if kind in SCHEMAS else None)


def _verify_tensor_folder(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*.safetensors") if p.is_file())
    if not files:
        raise ArtifactError(f"{folder}: no .safetensors file, tables.json or feature-store manifest.json: "
                            "nothing to verify")
    for f in files:
        safetensors_specs(f, read=True)


def verify_artifact(path: str | os.PathLike) -> None:
    """Check one artifact (see the module docstring); raise UserError / FileNotFoundError naming the
    file that fails."""
    from .data.tables import DATA_RECORDS, TABLE_MANIFEST
    from .features.store import MANIFEST, FeatureStore

    path = Path(path)
    if path.is_dir():
        if (path / MANIFEST).is_file():
            FeatureStore(path).check()
        elif (path / TABLE_MANIFEST).is_file() or any((path / r).is_file() for r in DATA_RECORDS):
            _verify_tables(path)
        else:
            _verify_tensor_folder(path)
    elif path.is_file():
        if path.suffix == ".arrow":
            _verify_table_file(path)
        elif path.suffix == ".safetensors":
            safetensors_specs(path, read=True)
        else:
            raise ArtifactError(f"{path}: not an artifact vltune verifies (a .arrow table, a .safetensors file, "
                                "or a dataset, feature-store, checkpoint or model folder)")
    else:
        raise FileNotFoundError(f"{path}: not found")


def verify_paths(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str | None]]:
    """(path, None if it is intact else the one-line problem) for every path, in order."""
    out = []
    for p in paths:
        try:
            verify_artifact(p)
            out.append((str(p), None))
        except (UserError, FileNotFoundError) as e:
            out.append((str(p), str(e)))
    return out
