"""Source files listed and read in place from folders, zip and tar archives, and download records."""

from __future__ import annotations

import io
import json
import re
import tarfile
import zipfile

import pytest

from vltune.data.source_files import ConvertError, SourceFiles

MEMBERS = {"images/b/2.jpg": b"two", "images/a/1.png": b"one", "questions.json": b'{"q": 1}'}


def _zip(path, members, symlinks=()):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name in symlinks:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # what `zip --symlinks` stores
            zf.writestr(info, "../../etc/passwd")


def _tar(path, members, mode="w:gz"):
    with tarfile.open(path, mode) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _record(tmp_path, files):
    rec = tmp_path / "raw" / "download.json"
    rec.parent.mkdir(exist_ok=True)
    rec.write_text(json.dumps({"files": {p.name: {"path": str(p), "size": p.stat().st_size, "archive": a}
                                         for p, a in files}}))
    return rec


def _contents(files: SourceFiles) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in files.files()}


@pytest.mark.parametrize("pack", ["folder", "zip", "tar.gz", "tar"])
def test_every_layout_lists_the_same_names_and_bytes(tmp_path, pack):
    if pack == "folder":
        for name, data in MEMBERS.items():
            (tmp_path / "f" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "f" / name).write_bytes(data)
        files = SourceFiles.open(tmp_path / "f")
    else:
        archive = tmp_path / f"a.{pack}"
        _zip(archive, MEMBERS) if pack == "zip" else _tar(archive, MEMBERS, "w:gz" if pack == "tar.gz" else "w")
        files = SourceFiles.open(_record(tmp_path, [(archive, True)]))
    with files:
        assert _contents(files) == MEMBERS
        assert files.find("2.jpg").read_bytes() == b"two"
        assert {k: f.name for k, f in files.images((".jpg", ".png")).items()} == {
            "1": "images/a/1.png", "2": "images/b/2.jpg"}


def test_record_mixes_plain_files_and_archives(tmp_path):
    _zip(tmp_path / "imgs.zip", {"x/3.jpg": b"three"})
    (tmp_path / "train.json").write_bytes(b"[]")
    with SourceFiles.open(_record(tmp_path, [(tmp_path / "train.json", False), (tmp_path / "imgs.zip", True)])) as files:
        assert [f.name for f in files.files()] == ["train.json", "x/3.jpg"]  # record order, then members
        assert files.find("train.json").where == str(tmp_path / "train.json")
        assert files.find("3.jpg").where == f"{tmp_path / 'imgs.zip'}:x/3.jpg"


@pytest.mark.parametrize("pack", ["zip", "tar.gz"])
@pytest.mark.parametrize("evil", ["../escape.txt", "sub/../../escape.txt", "/tmp/escape-vltune.txt"])
def test_member_outside_the_archive_root_refuses_the_archive(tmp_path, pack, evil):
    archive = tmp_path / f"evil.{pack}"
    members = {"ok/a.txt": b"fine", evil: b"pwned"}
    _zip(archive, members) if pack == "zip" else _tar(archive, members)
    with SourceFiles.open(_record(tmp_path, [(archive, True)])) as files:
        with pytest.raises(ConvertError, match=rf"evil\.{pack.replace('.', '[.]')}: member .* lies outside the archive root"):
            files.files()


def _tar_with_link(path, kind, last=False):
    """A tar whose ``images/1.jpg`` is a symlink or a hardlink (to an escaping path or to a regular
    member ``a.txt``), written before or after the regular members."""
    with tarfile.open(path, "w") as tf:
        link = tarfile.TarInfo("images/1.jpg")
        link.type, link.linkname = {"symlink": (tarfile.SYMTYPE, "../../etc/passwd"),
                                    "hardlink": (tarfile.LNKTYPE, "a.txt")}[kind]
        regular = tarfile.TarInfo("a.txt")
        regular.size = 5
        if not last:
            tf.addfile(link)
        tf.addfile(regular, io.BytesIO(b"hello"))
        if last:
            tf.addfile(link)


@pytest.mark.parametrize("last", [False, True], ids=["link-first", "link-last"])
@pytest.mark.parametrize("kind", ["symlink", "hardlink"])
def test_tar_link_members_refuse_the_archive_naming_the_member(tmp_path, kind, last):
    _tar_with_link(tmp_path / "a.tar", kind, last)
    with SourceFiles.open(_record(tmp_path, [(tmp_path / "a.tar", True)])) as files:
        with pytest.raises(ConvertError, match=rf"^{re.escape(str(tmp_path / 'a.tar'))}: member 'images/1\.jpg' is a link; "
                                               "refusing the archive$"):
            files.files()


def test_zip_symlink_members_refuse_the_archive_naming_the_member(tmp_path):
    _zip(tmp_path / "b.zip", {"ok.txt": b"x"}, symlinks=["images/2.jpg"])
    with SourceFiles.open(_record(tmp_path, [(tmp_path / "b.zip", True)])) as files:
        with pytest.raises(ConvertError, match=rf"^{re.escape(str(tmp_path / 'b.zip'))}: member 'images/2\.jpg' is a link; "
                                               "refusing the archive$"):
            files.files()


def test_convert_of_an_archive_holding_a_hardlink_is_one_line_and_writes_nothing(tmp_path, capsys):
    """Through the CLI: exit 2, one line naming the archive and the member, no table written, and
    nothing extracted next to the archive."""
    from vltune.cli import main

    _tar_with_link(tmp_path / "gqa.tar", "hardlink", last=True)
    rec = _record(tmp_path, [(tmp_path / "gqa.tar", True)])
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(["convert", "--source", f"gqa={rec}", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err == (f"vltune convert: error: {tmp_path / 'gqa.tar'}: member 'images/1.jpg' is a link; "
                   "refusing the archive\n")
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_missing_duplicate_and_changed_files_are_errors(tmp_path):
    _zip(tmp_path / "a.zip", {"x/q.json": b"1", "y/q.json": b"2", "y/1.jpg": b"i", "z/1.png": b"j"})
    rec = _record(tmp_path, [(tmp_path / "a.zip", True)])
    with SourceFiles.open(rec) as files:
        with pytest.raises(ConvertError, match=r"download\.json: no other\.json \(expected from the official release"):
            files.find("other.json")
        with pytest.raises(ConvertError, match=r"a\.zip:y/q\.json: q\.json is also .*a\.zip:x/q\.json"):
            files.find("q.json")
        with pytest.raises(ConvertError, match=r"a\.zip:z/1\.png: image 'src/1' is also .*a\.zip:y/1\.jpg"):
            files.images((".jpg", ".png"), lambda stem: f"src/{stem}")
    (tmp_path / "a.zip").write_bytes(b"changed")
    with pytest.raises(ConvertError, match=r"a\.zip has 7 bytes, the download verified \d+"):
        SourceFiles.open(rec)
    (tmp_path / "a.zip").unlink()
    with pytest.raises(ConvertError, match=r"a\.zip not found"):
        SourceFiles.open(rec)
    rec.write_text(json.dumps({"files": {"a.zip": {"url": "x", "sha256": "0" * 64}}}))
    with pytest.raises(ConvertError, match=r"download\.json: file 'a\.zip' has no 'path'"):
        SourceFiles.open(rec)
    with pytest.raises(ConvertError, match="not found"):
        SourceFiles.open(tmp_path / "nowhere")
    (tmp_path / "b.zip").write_bytes(b"PK")
    with pytest.raises(ConvertError, match=r"b\.zip: expected a raw folder or a download\.json download record"):
        SourceFiles.open(tmp_path / "b.zip")


def test_a_record_whose_archive_is_not_one_is_an_error(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"not an archive")
    with pytest.raises(ConvertError, match=r"a\.zip: not a zip or tar archive"):
        SourceFiles.open(_record(tmp_path, [(tmp_path / "a.zip", True)]))
