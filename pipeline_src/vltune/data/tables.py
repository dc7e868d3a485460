"""Canonical Arrow tables: one schema per table kind, the interface between data and later stages.

Every dataset (the synthetic shapes world, or a converted COCO / VQA v2 / GQA / NLVR2 download) ends
up as the same five kinds of table, each one Arrow IPC *file* (``<data_dir>/<kind>.arrow``) with the
split ("train" / "val" / "test") as a column. Later stages read them only through `read_table`,
which checks the schema, so a malformed file fails early with the file and column named.

The data stage also writes ``<data_dir>/tables.json``, the tables' manifest: each file's size in
bytes and sha256. `read_table` compares a table against it on every open (the size always, the
digest when the table is small enough to hash cheaply), so a truncated, corrupted or replaced
table stops the stage that reads it instead of feeding it wrong rows.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from vltune.errors import ArtifactError
from vltune.utils.io import atomic_path, read_json, sha256_file, write_json

_S = pa.string()

SCHEMAS: dict[str, pa.Schema] = {
    "images": pa.schema(
        [("image_id", _S), ("split", _S), ("image", pa.binary()), ("scene", _S)]
    ),
    "captions": pa.schema([("image_id", _S), ("split", _S), ("captions", pa.list_(_S))]),
    "vqa": pa.schema(
        [
            ("question_id", _S),
            ("image_id", _S),
            ("split", _S),
            ("question", _S),
            ("question_type", _S),
            ("answer_type", _S),
            ("answers", pa.list_(_S)),
        ]
    ),
    "gqa": pa.schema(
        [
            ("question_id", _S),
            ("image_id", _S),
            ("split", _S),
            ("question", _S),
            ("question_type", _S),
            ("answer", _S),
        ]
    ),
    "nlvr2": pa.schema(
        [
            ("pair_id", _S),
            ("left_image_id", _S),
            ("right_image_id", _S),
            ("split", _S),
            ("statement", _S),
            ("label", pa.bool_()),
        ]
    ),
}
TABLE_KINDS: tuple[str, ...] = tuple(SCHEMAS)
SPLITS: tuple[str, ...] = ("train", "val", "test")


def _check_kind(kind: str) -> None:
    if kind not in SCHEMAS:
        raise ValueError(f"unknown table kind {kind!r}; expected one of {', '.join(TABLE_KINDS)}")


def table_path(data_dir: str | os.PathLike, kind: str) -> Path:
    """The canonical location of table ``kind`` in a dataset folder: ``<data_dir>/<kind>.arrow``."""
    _check_kind(kind)
    return Path(data_dir) / f"{kind}.arrow"


def validate_table(table: pa.Table, kind: str, source: str = "<table>") -> None:
    """Raise ValueError (naming ``source`` and the column) unless ``table`` has the ``kind`` schema.

    Checks every expected column is present with exactly the expected type, that there is no extra
    column, and that no value is null (canonical tables are always complete).
    """
    _check_kind(kind)
    expected = SCHEMAS[kind]
    found = {f.name: f.type for f in table.schema}
    for field in expected:
        if field.name not in found:
            raise ValueError(
                f"{source}: missing column {field.name!r} (expected type {field.type}) "
                f"in a {kind!r} table"
            )
        if found[field.name] != field.type:
            raise ValueError(
                f"{source}: column {field.name!r} of a {kind!r} table: expected type "
                f"{field.type}, found {found[field.name]}"
            )
        if table.column(field.name).null_count:
            raise ValueError(f"{source}: column {field.name!r} of a {kind!r} table has nulls")
    extra = [name for name in found if name not in expected.names]
    if extra:
        raise ValueError(
            f"{source}: unexpected column {extra[0]!r} in a {kind!r} table "
            f"(expected columns: {', '.join(expected.names)})"
        )


def _infer_kind(table: pa.Table, path: Path) -> str:
    """The kind named by the file (``vqa.arrow``), else the kind whose column names match."""
    if path.name.endswith(".arrow") and path.name[: -len(".arrow")] in SCHEMAS:
        return path.name[: -len(".arrow")]
    names = set(table.schema.names)
    for kind, schema in SCHEMAS.items():
        if set(schema.names) == names:
            return kind
    raise ValueError(
        f"{path}: cannot tell the table kind from the file name or the columns "
        f"{sorted(names)}; pass kind= (one of {', '.join(TABLE_KINDS)})"
    )


def write_table(table: pa.Table, path: str | os.PathLike, kind: str | None = None) -> Path:
    """Validate ``table`` and write it atomically as an Arrow IPC file; return the path.

    The kind defaults to the file name (``<kind>.arrow``) or, failing that, the column names. The
    bytes depend only on the table's values: the columns are put in canonical order with the
    canonical schema (no metadata) and one record batch, and Arrow IPC stores no timestamps.
    """
    path = Path(path)
    kind = kind or _infer_kind(table, path)
    validate_table(table, kind, source=str(path))
    schema = SCHEMAS[kind]
    table = table.select(schema.names).cast(schema).combine_chunks()
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table, max_chunksize=max(table.num_rows, 1))
    return path


def read_table(path: str | os.PathLike, kind: str | None = None) -> pa.Table:
    """Read an Arrow IPC file (memory-mapped); with ``kind``, validate it and order its columns.

    The file is first checked against its folder's manifest (:func:`check_table_file`). Raises
    FileNotFoundError naming the path if it is missing, ArtifactError (a ValueError) naming the path
    if it disagrees with the manifest, is not a readable Arrow IPC file, or (with ``kind``) if a
    column is missing, extra, mistyped or has nulls.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    check_table_file(path)
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
        table.validate(full=True)  # offsets and UTF-8 of every column: a damaged buffer fails here
    except (pa.ArrowInvalid, OSError) as e:
        detail = " ".join(str(e).split())  # Arrow's messages can span lines; the error is one
        raise ArtifactError(f"{path}: not a readable Arrow IPC file ({detail}); {_rebuild_hint(path.parent)}") from None
    if kind is None:
        return table
    try:
        validate_table(table, kind, source=str(path))
    except ValueError as e:
        raise ArtifactError(str(e)) from None
    return table.select(SCHEMAS[kind].names)


# --- the tables' manifest ----------------------------------------------------------------------

TABLE_MANIFEST = "tables.json"
MANIFEST_VERSION = 1
# Tables up to this size are hashed on every open; larger ones get the size check only (their
# digest is checked by `vltune verify`). sha256 runs at some hundreds of MB/s on one core, so
# 64 MiB costs a fraction of a second next to the stage that reads the table, while hashing a
# converted dataset's images.arrow (tens of GB) on every open would cost minutes.
FULL_DIGEST_MAX_BYTES = 64 * 1024 * 1024


def write_table_manifest(data_dir: str | os.PathLike, kinds: tuple[str, ...] = TABLE_KINDS) -> Path:
    """Write ``<data_dir>/tables.json``: size in bytes and sha256 of each ``<kind>.arrow``.

    The data stage calls it once every table is written, before its record (world.json /
    convert.json), so a folder with a record always has a manifest.
    """
    entries = {}
    for kind in kinds:
        path = table_path(data_dir, kind)
        entries[path.name] = {"bytes": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = Path(data_dir) / TABLE_MANIFEST
    write_json(manifest, {"format_version": MANIFEST_VERSION, "tables": entries})
    return manifest


def _rebuild_hint(data_dir: Path) -> str:
    """How to rebuild a dataset folder: the data rule that wrote it."""
    if (data_dir / "world.json").is_file():
        rule = "the make_world rule"
    elif (data_dir / "convert.json").is_file():
        rule = "the convert rule"
    else:
        rule = "the data rule (make_world or convert)"
    return f"delete {data_dir} and re-run {rule}"


def table_manifest(data_dir: str | os.PathLike) -> dict | None:
    """The manifest's entries ({file name: {"bytes", "sha256"}}), or None for a folder the data stage
    did not write (no manifest, no data record); ArtifactError if a record has no manifest or the
    manifest is unreadable."""
    data_dir = Path(data_dir)
    path = data_dir / TABLE_MANIFEST
    if not path.is_file():
        record = next((r for r in DATA_RECORDS if (data_dir / r).is_file()), None)
        if record is None:
            return None  # tables made by hand (tests, notebooks): nothing to compare against
        raise ArtifactError(f"{path}: missing (the data stage writes it beside {record}); "
                            f"{_rebuild_hint(data_dir)}")
    try:
        manifest = read_json(path)
        entries = manifest["tables"]
        if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("bytes"), int) and isinstance(e.get("sha256"), str)
                for e in entries.values()):
            raise ValueError("expected {file: {bytes, sha256}} entries")
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"{path}: not a table manifest ({e}); {_rebuild_hint(data_dir)}") from None
    return entries


def check_table_file(path: str | os.PathLike, full: bool | None = None) -> bool:
    """Compare the table file ``path`` with its folder's manifest; return whether it was compared.

    The size is always compared; the sha256 too when ``full`` is true, or (``full=None``) when the
    file is at most :data:`FULL_DIGEST_MAX_BYTES`. A folder with neither a manifest nor a data
    record is not checked (False); one with a record but no manifest, a table the manifest does not
    list, or any mismatch raises ArtifactError naming the table, the manifest's value, the file's
    value and how to rebuild.
    """
    path = Path(path)
    entries = table_manifest(path.parent)
    if entries is None:
        return False
    manifest = path.parent / TABLE_MANIFEST
    entry = entries.get(path.name)
    if entry is None:
        raise ArtifactError(f"{path}: not listed in {manifest} (it lists {', '.join(sorted(entries)) or 'nothing'})")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise ArtifactError(f"{path}: {size} bytes, {manifest} says {entry['bytes']} (truncated or replaced); "
                            f"{_rebuild_hint(path.parent)}")
    if full or (full is None and size <= FULL_DIGEST_MAX_BYTES):
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            raise ArtifactError(f"{path}: sha256 {digest}, {manifest} says {entry['sha256']} (corrupted or "
                                f"replaced); {_rebuild_hint(path.parent)}")
    return True


# What the data stage writes beside the tables: the synthetic world's config (make_world) or the
# conversion's counts (convert). A metrics record hashes it, so scores name the data they came from.
DATA_RECORDS = ("world.json", "convert.json")


def data_record(data_dir: str | os.PathLike) -> dict:
    """The JSON of the data stage's record in ``data_dir`` (the first of :data:`DATA_RECORDS` there)."""
    from ..errors import UserError

    for name in DATA_RECORDS:
        path = Path(data_dir) / name
        if path.is_file():
            return read_json(path)
    raise UserError(f"{data_dir}: neither {' nor '.join(DATA_RECORDS)} (the data stage writes one beside the "
                    "tables: run make_world or convert)")
