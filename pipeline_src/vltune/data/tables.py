"""Canonical Arrow tables: one schema per table kind, the interface between data and later stages.

Every dataset (the synthetic shapes world, or a converted COCO / VQA v2 / GQA / NLVR2 download) ends
up as the same five kinds of table, each one Arrow IPC *file* (``<data_dir>/<kind>.arrow``) with the
split ("train" / "val" / "test") as a column. Later stages read them only through `read_table`,
which checks the schema, so a malformed file fails early with the file and column named.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa

from vltune.utils.io import atomic_path

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

    Raises FileNotFoundError naming the path if it is missing, ValueError naming the path if it is
    not an Arrow IPC file or (with ``kind``) if a column is missing, extra, mistyped or has nulls.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    try:
        with pa.memory_map(str(path)) as source:
            table = pa.ipc.open_file(source).read_all()
    except (pa.ArrowInvalid, OSError) as e:
        raise ValueError(f"{path}: not a readable Arrow IPC file ({e})") from None
    if kind is None:
        return table
    validate_table(table, kind, source=str(path))
    return table.select(SCHEMAS[kind].names)


# What the data stage writes beside the tables: the synthetic world's config (make_world) or the
# conversion's counts (convert). A metrics record hashes it, so scores name the data they came from.
DATA_RECORDS = ("world.json", "convert.json")


def data_record(data_dir: str | os.PathLike) -> dict:
    """The JSON of the data stage's record in ``data_dir`` (the first of :data:`DATA_RECORDS` there)."""
    from ..errors import UserError
    from ..utils.io import read_json

    for name in DATA_RECORDS:
        path = Path(data_dir) / name
        if path.is_file():
            return read_json(path)
    raise UserError(f"{data_dir}: neither {' nor '.join(DATA_RECORDS)} (the data stage writes one beside the "
                    "tables: run make_world or convert)")
