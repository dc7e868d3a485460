"""Canonical Arrow tables: schemas, deterministic atomic writes, validating reads."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from vltune.data.tables import SCHEMAS, TABLE_KINDS, read_table, table_path, write_table

ROWS = {
    "images": {"image_id": ["a", "b"], "split": ["train", "val"], "image": [b"\x89PNG", b"x"],
               "scene": ["[]", "[]"]},
    "captions": {"image_id": ["a"], "split": ["train"], "captions": [[f"c{i}" for i in range(5)]]},
    "vqa": {"question_id": ["q"], "image_id": ["a"], "split": ["train"], "question": ["how many?"],
            "question_type": ["count"], "answer_type": ["number"], "answers": [["2"] * 10]},
    "gqa": {"question_id": ["g"], "image_id": ["a"], "split": ["test"], "question": ["what?"],
            "question_type": ["relate_color"], "answer": ["red"]},
    "nlvr2": {"pair_id": ["p"], "left_image_id": ["a"], "right_image_id": ["b"], "split": ["val"],
              "statement": ["s"], "label": [True]},
}


def _table(kind: str) -> pa.Table:
    return pa.table(ROWS[kind], schema=SCHEMAS[kind])


def _write_raw(table: pa.Table, path) -> None:
    """Write an Arrow IPC file without write_table's checks (to make bad files)."""
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_kinds_and_paths(tmp_path):
    assert TABLE_KINDS == ("images", "captions", "vqa", "gqa", "nlvr2")
    assert table_path(tmp_path, "vqa") == tmp_path / "vqa.arrow"
    with pytest.raises(ValueError, match="unknown table kind 'coco'"):
        table_path(tmp_path, "coco")
    assert SCHEMAS["vqa"].names == ["question_id", "image_id", "split", "question", "question_type",
                                    "answer_type", "answers"]
    assert SCHEMAS["vqa"].field("answers").type == pa.list_(pa.string())
    assert SCHEMAS["nlvr2"].field("label").type == pa.bool_()


@pytest.mark.parametrize("kind", TABLE_KINDS)
def test_roundtrip_and_byte_identical(tmp_path, kind):
    table = _table(kind)
    a = write_table(table, table_path(tmp_path / "a", kind))
    # Same values built differently (two chunks, reordered columns, schema metadata) → same bytes.
    other = pa.concat_tables([table.slice(0, 1), table.slice(1)])
    other = other.select(list(reversed(table.column_names))).replace_schema_metadata({"x": "y"})
    b = write_table(other, tmp_path / "b" / f"{kind}.arrow")
    assert a.read_bytes() == b.read_bytes()
    back = read_table(a, kind)
    assert back.equals(table)
    assert back.schema.metadata is None
    assert [p.name for p in a.parent.iterdir()] == [f"{kind}.arrow"]  # no temporary left behind


def test_kind_inferred_from_columns_and_explicit(tmp_path):
    path = write_table(_table("gqa"), tmp_path / "anything.arrow")
    assert read_table(path, "gqa").num_rows == 1
    with pytest.raises(ValueError, match="cannot tell the table kind"):
        write_table(pa.table({"x": [1]}), tmp_path / "x.arrow")


def test_write_rejects_wrong_schema_and_writes_nothing(tmp_path):
    bad = _table("vqa").set_column(6, "answers", pa.array(["2"]))
    path = tmp_path / "vqa.arrow"
    expected = r"vqa\.arrow.*'answers'.*expected type list<item: string>, found string"
    with pytest.raises(ValueError, match=expected):
        write_table(bad, path)
    assert list(tmp_path.iterdir()) == []


def test_read_wrong_type_names_file_and_column(tmp_path):
    path = tmp_path / "gqa.arrow"
    _write_raw(_table("gqa").set_column(5, "answer", pa.array([3], pa.int64())), path)
    assert read_table(path).column("answer").to_pylist() == [3]  # no kind: no check
    with pytest.raises(ValueError) as e:
        read_table(path, "gqa")
    msg = str(e.value)
    assert str(path) in msg and "'answer'" in msg
    assert "expected type string" in msg and "found int64" in msg


@pytest.mark.parametrize(
    "change, pattern",
    [
        (lambda t: t.drop_columns(["split"]), "missing column 'split'"),
        (lambda t: t.append_column("extra", pa.array([1])), "unexpected column 'extra'"),
        (lambda t: t.set_column(0, "question_id", pa.array([None], pa.string())),
         "'question_id'.*nulls"),
    ],
)
def test_read_schema_errors(tmp_path, change, pattern):
    path = tmp_path / "t.arrow"
    _write_raw(change(_table("gqa")), path)
    with pytest.raises(ValueError, match=pattern) as e:
        read_table(path, "gqa")
    assert str(path) in str(e.value)


def test_read_reorders_columns_to_canonical(tmp_path):
    table = _table("nlvr2")
    path = tmp_path / "n.arrow"
    _write_raw(table.select(["label", *table.column_names[:-1]]), path)
    assert read_table(path, "nlvr2").column_names == SCHEMAS["nlvr2"].names


def test_missing_and_corrupt_files(tmp_path):
    missing = tmp_path / "nope" / "vqa.arrow"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        read_table(missing, "vqa")
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"not arrow at all")
    with pytest.raises(ValueError, match=f"{junk}: not a readable Arrow IPC file"):
        read_table(junk)


def test_the_data_record_is_the_worlds_config_or_the_conversions_counts_and_its_absence_is_named(tmp_path):
    """Evaluations hash the data stage's record: the synthetic world's world.json, a converted
    dataset's convert.json (which has no world.json); a folder with neither stops with both named."""
    import json

    from vltune.data.tables import data_record
    from vltune.errors import UserError

    (tmp_path / "world").mkdir()
    (tmp_path / "world/world.json").write_text(json.dumps({"config": {"seed": 3}}))
    assert data_record(tmp_path / "world") == {"config": {"seed": 3}}
    (tmp_path / "converted").mkdir()
    (tmp_path / "converted/convert.json").write_text(json.dumps({"vqa": 4, "images": 13}))
    assert data_record(tmp_path / "converted") == {"vqa": 4, "images": 13}
    with pytest.raises(UserError, match=r"neither world.json nor convert.json"):
        data_record(tmp_path)


# --- the tables' manifest --------------------------------------------------------------------------

SMALL_WORLD = dict(seed=5, n_images={"train": 3, "val": 2, "test": 2}, nlvr2_pairs={"train": 2, "val": 1, "test": 1})


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from vltune.data.synthetic import WorldConfig, write_world

    out = tmp_path_factory.mktemp("small-world")
    write_world(WorldConfig.from_dict(SMALL_WORLD), out)
    return out


@pytest.fixture
def world_copy(small_world, tmp_path):
    import shutil

    return Path(shutil.copytree(small_world, tmp_path / "data"))


def test_the_data_stage_writes_a_manifest_with_each_tables_size_and_sha256(small_world):
    import hashlib
    import json

    manifest = json.loads((small_world / "tables.json").read_text())
    assert manifest["format_version"] == 1
    assert sorted(manifest["tables"]) == sorted(f"{k}.arrow" for k in TABLE_KINDS)
    for name, entry in manifest["tables"].items():
        data = (small_world / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_converted_dataset_has_the_manifest_too(tmp_path, load_module):
    """The converter writes every table kind (empty ones included), then the manifest."""
    import hashlib
    import json

    from vltune.data.official import convert

    official = load_module(Path(__file__).parent / "test_official.py", "official_fixtures")
    official._write_gqa(tmp_path / "gqa")
    convert({"gqa": tmp_path / "gqa"}, tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "tables.json").read_text())["tables"]
    assert sorted(manifest) == sorted(f"{k}.arrow" for k in TABLE_KINDS)
    for name, entry in manifest.items():
        data = (tmp_path / "out" / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_a_table_that_differs_from_the_manifest_is_refused_naming_both_values(world_copy):
    from vltune.errors import ArtifactError

    path = world_copy / "gqa.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError) as e:
        read_table(path, "gqa")
    msg = str(e.value)
    assert msg.startswith(f"{path}: sha256 ") and "tables.json says" in msg
    assert f"delete {world_copy} and re-run the make_world rule" in msg
    path.write_bytes(bytes(data[:-8]))
    with pytest.raises(ArtifactError, match=rf"{len(data) - 8} bytes, .*tables.json says {len(data)}"):
        read_table(path, "gqa")


def test_above_the_digest_threshold_only_the_size_is_checked_on_open_and_verify_hashes_it(world_copy, monkeypatch):
    """Large tables are hashed by `vltune verify`, not on every open: a same-size change passes the
    cheap check and is caught by the full one."""
    from vltune.data import tables
    from vltune.errors import ArtifactError

    path = world_copy / "vqa.arrow"
    monkeypatch.setattr(tables, "FULL_DIGEST_MAX_BYTES", path.stat().st_size - 1)
    data = bytearray(path.read_bytes())
    offset = bytes(data).index(b"how many")  # inside a question: still a valid Arrow file
    data[offset] ^= 0x20  # "how" -> "How"
    path.write_bytes(bytes(data))
    assert tables.check_table_file(path) is True  # size compared, digest not
    assert read_table(path, "vqa").num_rows > 0
    with pytest.raises(ArtifactError, match="sha256"):
        tables.check_table_file(path, full=True)


def test_a_dataset_folder_with_a_record_must_have_the_manifest_and_list_the_table(world_copy):
    from vltune.errors import ArtifactError

    (world_copy / "tables.json").rename(world_copy / "kept.json")
    with pytest.raises(ArtifactError, match=r"tables\.json: missing \(the data stage writes it beside world\.json\)"):
        read_table(world_copy / "vqa.arrow", "vqa")
    (world_copy / "kept.json").rename(world_copy / "tables.json")
    write_table(_table("gqa"), world_copy / "extra.arrow", "gqa")
    with pytest.raises(ArtifactError, match=r"extra\.arrow: not listed in .*tables\.json"):
        read_table(world_copy / "extra.arrow", "gqa")
    (world_copy / "tables.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"tables\.json: not a table manifest"):
        read_table(world_copy / "vqa.arrow", "vqa")


def test_hand_made_tables_without_a_record_or_manifest_are_read_unchecked(tmp_path):
    from vltune.data.tables import check_table_file

    path = write_table(_table("vqa"), tmp_path / "vqa.arrow")
    assert check_table_file(path) is False
    assert read_table(path, "vqa").num_rows == 1
