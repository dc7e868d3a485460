"""Damaged artifacts are refused with one line naming the file, never read as if they were intact.

For each kind of file one stage writes and another reads (canonical tables, feature shards,
resume and PET checkpoints, merged models) the faults are: a flipped byte, truncation, deletion,
tensors (or columns) of the wrong shape, and a ``torch.save`` pickle in place of the file. Each
is read by the project's own reader and, once per kind, through the real CLI entry
(``vltune.cli.main``): exit code 2 and a single stderr line.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from vltune.cli import main
from vltune.errors import UserError

TESTS = Path(__file__).resolve().parents[1]
WORLD = dict(seed=7, n_images={"train": 3, "val": 2, "test": 2}, nlvr2_pairs={"train": 2, "val": 1, "test": 1})


def flip(path: Path, offset: int, mask: int = 0xFF) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def pickle_in_place(path: Path, tensors: dict) -> None:
    torch.save(tensors, path)  # what a training script without safetensors would leave


def cli_error(capsys, argv: list[str]) -> str:
    """Run ``vltune <argv>`` in-process; assert exit 2 and one stderr line; return that line."""
    capsys.readouterr()
    assert main(argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"vltune {argv[0]}: error: ")
    return lines[0]


# --- canonical tables --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from vltune.data.synthetic import WorldConfig, write_world

    out = tmp_path_factory.mktemp("world")
    write_world(WorldConfig.from_dict(WORLD), out)
    return out


@pytest.fixture
def data(world, tmp_path):
    return Path(shutil.copytree(world, tmp_path / "data"))


def _raw_ipc(table: pa.Table, path: Path) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def test_a_flipped_byte_in_vqa_arrow_that_arrow_reads_without_complaint_is_refused(data, capsys):
    """The flip lands inside a question: Arrow alone reads the file and returns a changed question,
    so only the manifest's digest can tell; the CLI stops with one line and writes nothing."""
    from vltune.data.tables import read_table

    path = data / "vqa.arrow"
    before = pa.ipc.open_file(str(path)).read_all().column("question").to_pylist()
    offset = path.read_bytes().index(b"how many")
    flip(path, offset, 0x20)  # "how" -> "How": still valid UTF-8, still a valid Arrow file
    after = pa.ipc.open_file(str(path)).read_all().column("question").to_pylist()
    assert after != before and len(after) == len(before)
    with pytest.raises(UserError, match=rf"^{path}: sha256 [0-9a-f]{{64}}, .*tables\.json says [0-9a-f]{{64}}"):
        read_table(path, "vqa")
    untouched = {p.name: p.read_bytes() for p in data.iterdir()}
    line = cli_error(capsys, ["baselines", "--data", str(data), "--out", str(data / "baselines.json")])
    assert f"{path}: sha256" in line and "re-run the make_world rule" in line
    assert not (data / "baselines.json").exists()
    assert {p.name: p.read_bytes() for p in data.iterdir()} == untouched  # nothing lost or rewritten


def _table_fault(data: Path, fault: str) -> Path:
    from vltune.data.tables import read_table, write_table_manifest

    path = data / "vqa.arrow"
    if fault == "truncated":
        truncate(path)
    elif fault == "deleted":
        path.unlink()
    elif fault == "wrong shape":  # another kind's columns, and a manifest written over it
        _raw_ipc(read_table(data / "gqa.arrow", "gqa"), path)
        write_table_manifest(data)
    elif fault == "pickle":
        pickle_in_place(path, {"question": ["how many?"]})
        write_table_manifest(data)
    return path


@pytest.mark.parametrize("fault, message", [
    ("truncated", r"\d+ bytes, .*tables\.json says \d+ \(truncated or replaced\)"),
    ("deleted", r"file not found"),
    ("wrong shape", r"missing column 'answer_type'"),
    ("pickle", r"not a readable Arrow IPC file"),
])
def test_table_faults_are_one_line_naming_the_table(data, fault, message):
    from vltune.data.tables import read_table

    path = _table_fault(data, fault)
    with pytest.raises((UserError, FileNotFoundError)) as e:
        read_table(path, "vqa")
    assert str(e.value).startswith(f"{path}: ")
    assert "\n" not in str(e.value)
    assert re.search(message, str(e.value)), str(e.value)


def test_a_truncated_hand_made_table_without_a_manifest_is_an_unreadable_file(tmp_path):
    from vltune.data.tables import read_table, table_path, write_table
    from vltune.data.synthetic import WorldConfig, generate_world

    table = generate_world(WorldConfig.from_dict(WORLD))["captions"]
    path = write_table(table, table_path(tmp_path, "captions"))
    truncate(path)
    with pytest.raises(UserError, match=rf"^{path}: not a readable Arrow IPC file"):
        read_table(path, "captions")


def test_verify_reports_each_dataset_table_and_fails_on_the_damaged_one(data, world, capsys):
    truncate(data / "nlvr2.arrow")
    capsys.readouterr()
    assert main(["verify", str(world), str(data)]) == 2
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0] == f"ok {world}"
    assert lines[1].startswith(f"FAILED {data / 'nlvr2.arrow'}: ") and "tables.json says" in lines[1]
    assert len(err.strip().splitlines()) == 1 and f"1 of 2 artifacts failed verification; first: {data / 'nlvr2.arrow'}" in err


def test_verify_rechecks_the_digests_world_json_records_and_names_missing_paths(data, tmp_path):
    """A table rewritten with a manifest to match passes the reader's check; the world's own record
    still has the table's original sha256, and verify compares it."""
    from vltune.data.tables import read_table, write_table, write_table_manifest
    from vltune.verify import verify_paths

    vqa = read_table(data / "vqa.arrow", "vqa")
    write_table(vqa.set_column(3, "question", pa.array(["?"] * vqa.num_rows)), data / "vqa.arrow")
    write_table_manifest(data)
    assert read_table(data / "vqa.arrow", "vqa").num_rows == vqa.num_rows
    (path, problem), (missing, gone) = verify_paths([data, tmp_path / "nope"])
    assert problem.startswith(f"{data / 'vqa.arrow'}: sha256 differs from the one {data / 'world.json'} records")
    assert gone == f"{tmp_path / 'nope'}: not found"


# --- feature shards ----------------------------------------------------------------------------

def _store(root: Path) -> Path:
    from vltune.features.store import FeatureWriter

    g = torch.Generator().manual_seed(0)
    w = FeatureWriter(root, encoder="test-clip", preprocessing={"resize": 8}, shard_size=3)
    w.add([f"img{i}" for i in range(7)], {"grid": torch.randn(7, 4, 5, generator=g), "pooled": torch.randn(7, 6, generator=g)})
    w.close()
    return root


def _rehash(root: Path, shard: Path) -> None:
    """Record the shard's current digest in the manifest (a manifest rewritten over a bad shard)."""
    from vltune.utils.io import sha256_file

    manifest = json.loads((root / "manifest.json").read_text())
    for s in manifest["shards"]:
        if s["file"] == shard.name:
            s["sha256"] = sha256_file(shard)
    (root / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("fault, message", [
    ("flipped", r"checksum mismatch \(manifest [0-9a-f]{64}, file [0-9a-f]{64}\)"),
    ("truncated", r"checksum mismatch"),
    ("truncated, manifest rehashed", r"not a readable safetensors file \(.*incomplete metadata"),
    ("deleted", r"shard listed in the manifest is missing"),
    ("wrong shape", r"tensor 'grid' has shape \(3, 4, 6\), the manifest says \(3, 4, 5\)"),
    ("pickle", r"a torch\.save file \(zip archive\), not safetensors"),
])
def test_feature_shard_faults_are_one_line_naming_the_shard(tmp_path, fault, message):
    from safetensors.torch import save_file

    from vltune.features.store import FeatureStore, FeatureStoreError

    root = _store(tmp_path / "store")
    shard = root / "shard-00001.safetensors"
    if fault == "flipped":
        flip(shard, shard.stat().st_size - 3, 0x01)  # inside a tensor's bytes: only the digest tells
    elif fault.startswith("truncated"):
        truncate(shard)
    elif fault == "deleted":
        shard.unlink()
    elif fault == "wrong shape":
        save_file({"grid": torch.zeros(3, 4, 6, dtype=torch.float16), "pooled": torch.zeros(3, 6, dtype=torch.float16)},
                  str(shard))
    elif fault == "pickle":
        pickle_in_place(shard, {"grid": torch.zeros(3, 4, 5)})
    if fault in ("truncated, manifest rehashed", "wrong shape", "pickle"):
        _rehash(root, shard)
    store = FeatureStore(root)
    store.get(["img0"], "grid")  # shard 0 is intact
    with pytest.raises(FeatureStoreError) as e:
        store.get(["img4"], "grid")
    msg = str(e.value)
    assert msg.startswith(f"{shard}: ") and "\n" not in msg
    assert re.search(message, msg), msg


def test_arrow_feature_shards_of_the_wrong_width_or_truncated_are_named(tmp_path):
    from vltune.features.store import FeatureStore, FeatureStoreError, write_shard

    root = tmp_path / "store"
    root.mkdir()
    rec = write_shard(root / "shard-00000.arrow", ["a", "b"], {"grid": torch.randn(2, 4, 6)})
    manifest = {"format_version": 1, "encoder": "x", "preprocessing": {}, "count": 2, "dtype": "float16",
                "keys": {"grid": [4, 5]}, "shards": [{k: rec[k] for k in ("file", "sha256", "count", "image_ids")}]}
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FeatureStoreError, match=r"shard-00000\.arrow: not a readable feature shard \(column 'grid' is "
                                                r"fixed_size_list<item: halffloat>\[24\], the manifest's shape \[4, 5\] "
                                                r"needs fixed_size_list<20>\)"):
        FeatureStore(root).get(["a"], "grid")
    truncate(root / "shard-00000.arrow")
    with pytest.raises(FeatureStoreError, match=r"shard-00000\.arrow: not a readable feature shard"):
        FeatureStore(root, verify=False).get(["a"], "grid")


def test_a_damaged_feature_store_through_the_cli(tmp_path, capsys):
    root = _store(tmp_path / "store")
    shard = root / "shard-00002.safetensors"
    flip(shard, 20)
    line = cli_error(capsys, ["verify", str(root)])
    assert f"first: {shard}: checksum mismatch" in line
    manifest = json.loads((root / "manifest.json").read_text())
    del manifest["shards"][1]["sha256"]
    (root / "manifest.json").write_text(json.dumps(manifest))
    line = cli_error(capsys, ["verify", str(root)])
    assert f"first: {root / 'manifest.json'}: shard entry 1 has no 'sha256'" in line
    (root / "manifest.json").write_text("{")
    line = cli_error(capsys, ["verify", str(root)])
    assert f"first: {root / 'manifest.json'}: not valid JSON" in line


# --- resume checkpoints and PET checkpoints ----------------------------------------------------

def _resume_checkpoint(resume: Path, out_features: int = 4) -> Path:
    from vltune.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(3, out_features)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return save_checkpoint(resume, 1, model, opt, sched, {"run": "x"})


def _load_resume(resume: Path, out_features: int = 4):
    from vltune.train.checkpoint import load_latest

    model = torch.nn.Linear(3, out_features)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    return load_latest(resume, model, opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))


# What the recorded digests (digests.json, written with every checkpoint and command output) say,
# and what the reader says of a file without a record.
CORRUPTED = r"sha256 [0-9a-f]{12}…, \S*digests\.json says [0-9a-f]{12}… \(corrupted or replaced\)"
RESIZED = r"\d+ bytes, \S*digests\.json says \d+ \(truncated or replaced\)"


@pytest.mark.parametrize("fault, message", [
    ("flipped header", CORRUPTED),
    ("flipped tensor byte", CORRUPTED),  # the header still parses: only the digest can tell
    ("truncated", RESIZED),
    ("deleted", r"file not found"),
    ("wrong shape", r"tensor 'bias' has shape \[4\], the model expects \[5\]"),
    ("pickle", RESIZED),
    ("flipped header, no record", r"not a readable safetensors file \(Error while deserializing header: invalid UTF-8"),
    ("truncated, no record", r"not a readable safetensors file \(Error while deserializing header: invalid header length"),
    ("pickle, no record", r"a torch\.save file \(zip archive\), not safetensors"),
])
def test_resume_checkpoint_faults_name_the_file_and_keep_the_checkpoint(tmp_path, fault, message):
    ckpt = _resume_checkpoint(tmp_path / "resume")
    weights = ckpt / "model.safetensors"
    assert _load_resume(tmp_path / "resume")[0] == 1  # intact: resumes at step 1
    if fault.endswith(", no record"):
        (ckpt / "digests.json").unlink()
    if fault.startswith("flipped header"):
        flip(weights, 10)
    elif fault == "flipped tensor byte":
        flip(weights, weights.stat().st_size - 1)
    elif fault.startswith("truncated"):
        truncate(weights)
    elif fault == "deleted":
        weights.unlink()
    elif fault.startswith("pickle"):
        pickle_in_place(weights, torch.nn.Linear(3, 4).state_dict())
    with pytest.raises(UserError) as e:
        _load_resume(tmp_path / "resume", out_features=5 if fault == "wrong shape" else 4)
    msg = str(e.value)
    assert f"{weights}" in msg and "\n" not in msg and f"delete {tmp_path / 'resume'} to start over" in msg
    assert re.search(message, msg), msg
    assert (ckpt / "optimizer.safetensors").is_file()  # the refused checkpoint is left for inspection


def test_a_truncated_checkpoint_through_the_cli(tmp_path, capsys):
    ckpt = _resume_checkpoint(tmp_path / "resume")
    truncate(ckpt / "optimizer.safetensors")
    line = cli_error(capsys, ["verify", str(ckpt)])
    assert re.search(f"first: {re.escape(str(ckpt / 'optimizer.safetensors'))}: {RESIZED}", line), line


@pytest.fixture(scope="module")
def pet_dirs(tmp_path_factory, load_module):
    """Two PET checkpoints of the same tiny VL-BART: adapters of width 8 and of width 4."""
    from vltune.pet import apply_pet, save_pet

    tiny = load_module(TESTS / "pet" / "tiny_models.py", "tiny_models_for_faults")
    root = tmp_path_factory.mktemp("pet")
    for dim in (8, 4):
        save_pet(apply_pet(tiny.make_vlbart(), {"method": "vlpet-middlex", "adapter_dim": dim, "adapter_heads": 2}),
                 root / f"dim{dim}")
    return tiny, root


@pytest.mark.parametrize("fault", ["wrong shape", "pickle"])
def test_pet_checkpoint_with_wrong_shapes_or_a_pickle_is_named(pet_dirs, tmp_path, fault, capsys):
    from safetensors import safe_open

    from vltune.pet import PET_WEIGHTS, load_pet

    tiny, root = pet_dirs
    ckpt = Path(shutil.copytree(root / "dim8", tmp_path / "pet"))
    weights = ckpt / PET_WEIGHTS
    if fault == "wrong shape":
        shutil.copy(root / "dim4" / PET_WEIGHTS, weights)  # written for the width-4 config
        with safe_open(str(root / "dim8" / PET_WEIGHTS), "pt") as a, safe_open(str(weights), "pt") as b:
            name = next(k for k in sorted(a.keys()) if a.get_slice(k).get_shape() != b.get_slice(k).get_shape())
            want, got = a.get_slice(name).get_shape(), b.get_slice(name).get_shape()
        pattern = rf"^{weights}: tensor '{name}' has shape \[{', '.join(map(str, got))}\], the model expects \[{', '.join(map(str, want))}\]"
    else:
        pickle_in_place(weights, {"x": torch.zeros(2)})
        pattern = rf"^{weights}: a torch\.save file \(zip archive\)"
        line = cli_error(capsys, ["verify", str(ckpt)])
        assert f"first: {weights}: a torch.save file" in line
    with pytest.raises(UserError, match=pattern):
        load_pet(tiny.make_vlbart(), ckpt)


def test_a_full_vl_checkpoint_for_another_feature_width_is_named_before_any_tensor_is_copied(pet_dirs, tmp_path):
    """The check load_vl_model runs before safetensors' load_model: it reads only the header, and a
    file without the tied duplicates (what save_model writes) passes for its own model."""
    from safetensors.torch import save_model
    from transformers import BartForConditionalGeneration

    from vltune.models.encdec import VLBart
    from vltune.utils.tensor_files import check_file_shapes

    tiny, _ = pet_dirs
    model = tiny.make_vlbart()
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))
    check_file_shapes(path, model)
    narrow = VLBart(BartForConditionalGeneration(model.lm.config), tiny.FEAT_DIM - 2,
                    list(range(tiny.VOCAB - tiny.N_VIS, tiny.VOCAB)))
    with pytest.raises(UserError, match=rf"^{path}: tensor 'visual_embedding\.feat_proj\.weight' has shape "
                                        rf"\[32, {tiny.FEAT_DIM}\], the model expects \[32, {tiny.FEAT_DIM - 2}\]"):
        check_file_shapes(path, narrow)


# --- merged models -----------------------------------------------------------------------------

ARCH = dict(vocab_size=50, d_model=16, layers=3, vl_layers=1, heads=2, mlp_ratio=2, max_text_len=12, image_size=16,
            patch_size=8)


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    """VLMo folders merged by ``vltune merge-experts`` from tiny modality-specific models: one of
    the configured architecture and one with a wider MLP (mlp_ratio 4)."""
    from vltune.models.vlmo import VLMo, VLMoConfig
    from vltune.recipes.vlmo.pretrain import save_vlmo

    root = tmp_path_factory.mktemp("merged")
    for name, mlp_ratio in (("merged", 2), ("wide", 4)):
        torch.manual_seed(0)
        save_vlmo(VLMo(VLMoConfig(**{**ARCH, "mlp_ratio": mlp_ratio}, mode="specific")), root / f"{name}-specific")
        assert main(["merge-experts", "--method", "average", "--specific", str(root / f"{name}-specific"),
                     "--out", str(root / name)]) == 0
    return root


@pytest.mark.parametrize("fault, message", [
    ("flipped header", CORRUPTED),
    ("flipped tensor byte", CORRUPTED),
    ("truncated", RESIZED),
    ("deleted", r"file not found"),
    # the wider model's merge, with its own record, under this config
    ("wrong shape", r"tensor 'blocks\.0\.mlp\.fc1\.bias' has shape \[64\], the model expects \[32\]"),
    ("pickle", RESIZED),
    ("flipped header, no record", r"not a readable safetensors file \(Error while deserializing header"),
    ("truncated, no record", r"not a readable safetensors file \(Error while deserializing header: incomplete metadata"),
    ("pickle, no record", r"a torch\.save file \(zip archive\), not safetensors"),
])
def test_merged_model_faults_are_one_line_naming_the_file(merged, tmp_path, fault, message):
    from vltune.recipes.vlmo.pretrain import WEIGHTS, load_vlmo

    model_dir = Path(shutil.copytree(merged / "merged", tmp_path / "merged"))
    weights = model_dir / WEIGHTS
    assert (model_dir / "digests.json").is_file()  # written by the merge-experts command
    load_vlmo(model_dir)  # intact
    if fault.endswith(", no record"):
        (model_dir / "digests.json").unlink()
    if fault.startswith("flipped header"):
        flip(weights, 9)
    elif fault == "flipped tensor byte":
        flip(weights, weights.stat().st_size - 1)
    elif fault.startswith("truncated"):
        truncate(weights)
    elif fault == "deleted":
        weights.unlink()
    elif fault == "wrong shape":
        for name in (WEIGHTS, "digests.json"):
            shutil.copy(merged / "wide" / name, model_dir / name)
    elif fault.startswith("pickle"):
        pickle_in_place(weights, {"x": torch.zeros(2)})
    with pytest.raises((UserError, FileNotFoundError)) as e:
        load_vlmo(model_dir)
    msg = str(e.value)
    assert msg.startswith(f"{weights}: ") and "\n" not in msg
    assert re.search(message, msg), msg


def test_a_damaged_merged_model_through_the_cli(merged, tmp_path, capsys):
    from vltune.recipes.vlmo.pretrain import WEIGHTS

    model_dir = Path(shutil.copytree(merged / "merged", tmp_path / "merged"))
    truncate(model_dir / WEIGHTS)
    line = cli_error(capsys, ["merge", "--method", "average", "--inputs", str(model_dir / WEIGHTS),
                              str(merged / "merged" / WEIGHTS), "--out", str(tmp_path / "out.safetensors")])
    assert re.search(f"{re.escape(str(model_dir / WEIGHTS))}: {RESIZED}", line), line
    assert not (tmp_path / "out.safetensors").exists()
    capsys.readouterr()
    assert main(["verify", str(merged / "merged"), str(model_dir)]) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"ok {merged / 'merged'}" and out[1].startswith(f"FAILED {model_dir / WEIGHTS}: ")


def test_an_output_file_has_its_record_beside_it_and_a_flipped_tensor_byte_stops_the_merge(tmp_path, capsys):
    """A merge or Gram file is one file: its record is ``<file>.digests.json``; a command that
    writes the file again drops the old record first (it describes the previous output)."""
    from safetensors.torch import save_file

    from vltune.utils.tensor_files import forget_output_digests
    from vltune.verify import record_output_digests

    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for i, path in enumerate((a, b)):
        save_file({"w": torch.full((64,), float(i))}, str(path))
        record_output_digests(path)
    assert (tmp_path / "a.safetensors.digests.json").is_file()
    assert main(["merge", "--method", "average", "--inputs", str(a), str(b), "--out", str(tmp_path / "m.safetensors")]) == 0
    assert (tmp_path / "m.safetensors.digests.json").is_file()  # the command recorded its output
    flip(a, a.stat().st_size - 1)  # a tensor byte: the header still parses
    line = cli_error(capsys, ["merge", "--method", "average", "--inputs", str(a), str(b),
                              "--out", str(tmp_path / "m2.safetensors")])
    assert re.search(f"{re.escape(str(a))}: {CORRUPTED}", line), line
    assert not (tmp_path / "m2.safetensors").exists()
    forget_output_digests(a)
    assert not (tmp_path / "a.safetensors.digests.json").exists()
