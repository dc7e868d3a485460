"""A run's identity names its inputs by content: a feature store by its manifest, a dataset by the
data stage's record when that record pins the source files, anything else by every file's sha256."""

from __future__ import annotations

import argparse
import hashlib
import json

from vltune.train.identity import differences, path_identity, run_identity


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_inputs_are_named_by_content_and_a_changed_file_shows_in_the_differences(tmp_path):
    store = tmp_path / "features"
    store.mkdir()
    (store / "manifest.json").write_text('{"shards": [{"sha256": "ab"}]}')
    (store / "shard-00000.arrow").write_bytes(b"x" * 10)
    assert path_identity(store) == {"manifest": _sha(store / "manifest.json")}  # the shards' digests are in it

    converted = tmp_path / "data"
    converted.mkdir()
    (converted / "vqa.arrow").write_bytes(b"table")
    (converted / "convert.json").write_text(json.dumps({"vqa": 1, "sources": {"vqav2": "d1", "coco2014": None}}))
    # a source given as a folder has no digest: the tables themselves are hashed
    assert set(path_identity(converted)) == {"convert.json", "vqa.arrow"}
    (converted / "convert.json").write_text(json.dumps({"vqa": 1, "sources": {"vqav2": "d1", "coco2014": "d2"}}))
    assert path_identity(converted) == {"convert.json": _sha(converted / "convert.json")}

    backbone = tmp_path / "backbone"
    backbone.mkdir()
    (backbone / "config.json").write_text("{}")
    (backbone / "model.safetensors").write_bytes(b"w1")
    args = argparse.Namespace(command="x", backbone=str(backbone), data=str(converted), seed=3, out="o",
                              resume_dir="r", params='{"batch_size": 16}')
    before = run_identity(args)
    assert set(before) == {"backbone", "data", "params", "seed"}  # where the job writes is not what it is
    (backbone / "model.safetensors").write_bytes(b"w2")
    after = run_identity(argparse.Namespace(**{**vars(args), "params": '{"batch_size": 8}', "out": "elsewhere"}))
    assert differences(before, after) == ["backbone.model.safetensors", "params.batch_size 16 → 8"]
