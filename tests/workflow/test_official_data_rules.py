"""The download and convert rules on fixture files in the official release formats, packed as the
shipped manifests name them. Served over HTTP on 127.0.0.1 as a mirror, the DAG fetches and
verifies them (archives stay packed) and converts them into the canonical tables; a file missing
from the mirror fails its own download job with the file and URL named, and loses nothing the
other jobs finished. As a local mirror folder, the files are verified and read where they lie:
nothing is copied, and the tables equal those converted from the unpacked folders."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

from vltune.data.download import download_dataset, load_manifest
from vltune.data.official import convert
from vltune.data.tables import TABLE_KINDS, read_table, table_path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["coco2014", "vqav2", "gqa", "nlvr2", "flickr30k"]


def _zip(archive: Path, root: Path, members: list[Path]) -> None:
    with zipfile.ZipFile(archive, "w") as z:
        for m in members:
            for f in sorted([m] if m.is_file() else m.rglob("*")):
                if f.is_file():
                    z.write(f, f.relative_to(root).as_posix())


def _mirror(tmp: Path, fx) -> Path:
    """Every file of the five manifests, under its manifest name, in ``tmp/mirror``, built from
    ``fx``: the converter tests' writers of official-format fixtures (tests/data/test_official.py).
    The same fixtures unpacked lie in ``tmp/official/<source>``."""
    raw, mirror = tmp / "official", tmp / "mirror"
    mirror.mkdir()
    fx._write_coco(raw / "coco2014")
    fx._write_vqa(raw / "vqav2")
    fx._write_gqa(raw / "gqa")
    fx._write_nlvr2(raw / "nlvr2")
    fx._write_flickr30k(raw / "flickr30k")
    coco, vqa, gqa, nlvr2, flickr = (raw / s for s in SOURCES)
    _zip(mirror / "train2014.zip", coco, [coco / "train2014"])
    _zip(mirror / "val2014.zip", coco, [coco / "val2014"])
    # Karpathy's zip holds the splits of both COCO and Flickr30k; both manifests list it
    with zipfile.ZipFile(mirror / "caption_datasets.zip", "w") as z:
        z.write(coco / "dataset_coco.json", "dataset_coco.json")
        z.write(flickr / "dataset_flickr30k.json", "dataset_flickr30k.json")
    with tarfile.open(mirror / "flickr30k-images.tar.gz", "w:gz") as tf:
        tf.add(flickr / "flickr30k-images", "flickr30k-images")
    for name, files in {"v2_Questions_Train_mscoco.zip": "v2_OpenEnded_mscoco_train2014_questions.json",
                        "v2_Questions_Val_mscoco.zip": "v2_OpenEnded_mscoco_val2014_questions.json",
                        "v2_Annotations_Train_mscoco.zip": "v2_mscoco_train2014_annotations.json",
                        "v2_Annotations_Val_mscoco.zip": "v2_mscoco_val2014_annotations.json"}.items():
        _zip(mirror / name, vqa, [vqa / files])
    _zip(mirror / "questions1.2.zip", gqa, sorted(gqa.glob("*.json")))
    _zip(mirror / "images.zip", gqa, [gqa / "images"])
    for split in ("train", "dev", "test1"):
        (mirror / f"{split}.json").write_bytes((nlvr2 / f"{split}.json").read_bytes())
        _zip(mirror / f"{split}_img.zip", nlvr2, [nlvr2 / split])
    return mirror


def _manifests(tmp: Path, mirror: Path) -> Path:
    """The shipped manifests with every file pinned to the fixture's size and sha256 instead
    (the shipped ones pin some official files, which fixtures cannot match), in ``tmp/manifests``:
    the folder for the download.manifests config key."""
    out = tmp / "manifests"
    out.mkdir()
    for source in SOURCES:
        m = json.loads((ROOT / f"pipeline_src/vltune/data/manifests/{source}.json").read_text())
        for f in m["files"]:
            data = (mirror / f["name"]).read_bytes()
            f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
        (out / f"{source}.json").write_text(json.dumps(m))
    return out


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture()
def served(tmp_path, load_module):
    """(mirror folder, its base URL, manifests pinned to it): a plain HTTP server on 127.0.0.1 for
    the test's duration."""
    mirror = _mirror(tmp_path, load_module(ROOT / "tests/data/test_official.py", "official_fixtures"))
    manifests = _manifests(tmp_path, mirror)
    handler = functools.partial(_QuietHandler, directory=str(mirror))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield mirror, f"http://127.0.0.1:{server.server_address[1]}/", manifests
    server.shutdown()


def _run(workdir: Path, url: str, manifests: Path, *args: str) -> subprocess.CompletedProcess:
    cfg = yaml.safe_load((ROOT / ".test/config/config.yaml").read_text())
    cfg["dataset"] = "vl-fixture"
    cfg["download"] = {"sources": SOURCES, "mirror": url, "manifests": str(manifests), "retries": 0,
                       "timeout": 10.0, "vqa_vocab_size": 3}
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(workdir),
         "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args,
         "resources/data/vl-fixture/convert.json"],
        capture_output=True, text=True, timeout=600,
    )


def test_download_and_convert_rules_build_the_canonical_tables_from_a_mirror(served, tmp_path):
    mirror, url, manifests = served
    work = tmp_path / "work"
    work.mkdir()
    proc = _run(work, url, manifests)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = work / "resources/data/vl-fixture"
    counts = json.loads((data / "convert.json").read_text())
    assert counts["captions"] == 4 + 3 and counts["gqa"] == 3 and counts["nlvr2"] == 4
    assert counts["vqa"] == 4 and counts["vqa_dropped_no_label"] == 1  # the converter tests' fixture
    # images: 4 COCO + 3 Flickr30k + 3 GQA + 3 NLVR2 pairs × 2 (two statements share one pair)
    images = read_table(table_path(data, "images"), "images").to_pylist()
    assert counts["images"] == 4 + 3 + 3 + 6 == len(images) == len({r["image_id"] for r in images})
    assert {r["image_id"].split("/")[0] for r in images} == {"coco", "flickr30k", "gqa", "nlvr2"}
    # Flickr30k and GQA both have an image 2354786: each keeps its own bytes
    by_id = {r["image_id"]: r["image"] for r in images}
    assert by_id["flickr30k/2354786"] == (tmp_path / "official/flickr30k/flickr30k-images/2354786.jpg").read_bytes()
    assert by_id["gqa/2354786"] == (tmp_path / "official/gqa/images/2354786.jpg").read_bytes()
    for source in SOURCES:
        raw = work / f"resources/raw/{source}"
        record = json.loads((raw / "download.json").read_text())
        for name, entry in record["files"].items():
            assert entry["url"] == url + name and len(entry["sha256"]) == 64 and entry["path"] == name
            assert entry["size"] == (mirror / name).stat().st_size == (raw / name).stat().st_size
            assert json.loads((raw / f"{name}.sha256.json").read_text())["sha256"] == entry["sha256"]
        # the archives were kept as downloaded, not unpacked beside; each has its digest record
        assert sorted(p.name for p in raw.iterdir()) == sorted(
            [*record["files"], *(f"{n}.sha256.json" for n in record["files"]), "download.json"])
    assert json.loads((work / "results/ledger/convert/vl-fixture.json").read_text())["command"] == "convert"
    # a second run has nothing to do
    again = _run(work, url, manifests, "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr


def test_a_file_missing_from_the_mirror_fails_its_download_naming_it_and_keeps_the_others(served, tmp_path):
    mirror, url, manifests = served
    (mirror / "images.zip").unlink()  # GQA's images
    work = tmp_path / "work"
    work.mkdir()
    proc = _run(work, url, manifests, "--keep-going")
    assert proc.returncode != 0
    log = (work / "logs/download/gqa.log").read_text()
    assert "images.zip: HTTP 404" in log and url + "images.zip" in log
    assert not (work / "resources/raw/gqa/images.zip").exists()  # nothing that looks complete
    for source in ("coco2014", "vqav2", "nlvr2", "flickr30k"):  # the other downloads finished and stay
        assert (work / f"resources/raw/{source}/download.json").exists()
    assert not (work / "resources/data/vl-fixture/convert.json").exists()


def test_a_local_mirror_is_read_in_place_and_converts_like_the_unpacked_folders(tmp_path, load_module):
    mirror = _mirror(tmp_path, load_module(ROOT / "tests/data/test_official.py", "official_fixtures"))
    raw = tmp_path / "work/resources/raw"
    manifests = _manifests(tmp_path, mirror)
    records = {s: download_dataset(load_manifest(manifests / f"{s}.json"), raw / s, mirror=str(mirror))
               for s in SOURCES}
    # nothing was copied: each raw folder holds its record only, which points at the mirror's files
    assert sorted(p.relative_to(raw).as_posix() for p in raw.rglob("*")) == sorted(
        [*SOURCES, *(f"{s}/download.json" for s in SOURCES)])
    for s, rec in records.items():
        for name, entry in json.loads(rec.read_text())["files"].items():
            assert Path(entry["path"]).samefile(mirror / name) and entry["size"] == (mirror / name).stat().st_size
    from_mirror, from_folders = tmp_path / "t_mirror", tmp_path / "t_folders"
    counts = convert(records, from_mirror, vqa_vocab_size=3)
    assert counts == convert({s: tmp_path / "official" / s for s in SOURCES}, from_folders, vqa_vocab_size=3)
    for kind in TABLE_KINDS[1:]:  # annotation tables: identical files
        assert table_path(from_mirror, kind).read_bytes() == table_path(from_folders, kind).read_bytes(), kind
    # images: the same rows; their order follows the files' listing (manifest order vs sorted folders)
    rows = [{r["image_id"]: r for r in read_table(table_path(d, "images"), "images").to_pylist()}
            for d in (from_mirror, from_folders)]
    assert rows[0] == rows[1] and len(rows[0]) == counts["images"] == 16
    assert (from_mirror / "vqa_vocab.json").read_bytes() == (from_folders / "vqa_vocab.json").read_bytes()
