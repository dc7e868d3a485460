"""The files of one official source, read where they lie: plain files, folders, and the members of
zip and tar archives (never unpacked to disk, so a source costs its archives' size once).

A source is listed from its download record (``resources/raw/<source>/download.json``, written by
:func:`vltune.data.download.download_dataset`): each file at the path recorded there, its size
checked against the record, and the members of the files the manifest marks as archives. Or from
a plain folder (an unpacked release): every file under it, archives inside it not opened.

Names are POSIX paths relative to the folder or the archive root. An archive with a member whose
path leaves the root (absolute, or ``..`` above it), a link or a special file (device, fifo) is
refused as a whole, naming the member, before anything of it is read. Listing order is
deterministic: the record's files in manifest order, a folder's files sorted by path, an archive's
members in archive order; reading files in listing order reads every archive front to back.
"""

from __future__ import annotations

import json
import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import UserError

RECORD = "download.json"


class ConvertError(UserError):
    """An official file that is missing or not in the expected format."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a source: ``name`` inside its location, ``where`` for messages."""

    name: str
    where: str
    order: tuple[int, int]  # (location, position inside it): the listing order
    _location: "_Location" = field(repr=False, compare=False)
    _key: object = field(repr=False, compare=False)

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]

    def read_bytes(self) -> bytes:
        return self._location.read(self._key)

    def read_text(self) -> str:
        try:
            return self.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConvertError(f"{self.where}: not UTF-8 text ({e})") from None

    @classmethod
    def of_path(cls, path: str | os.PathLike) -> "SourceFile":
        """A plain file on disk as a source file."""
        loc = _Plain(Path(path))
        return loc.list(0)[0]


class _Location:
    def list(self, index: int) -> list[SourceFile]:
        raise NotImplementedError

    def read(self, key) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _Plain(_Location):
    def __init__(self, path: Path, name: str | None = None):
        self.path, self.name = path, name or path.name

    def list(self, index):
        if not self.path.is_file():
            raise ConvertError(f"{self.path}: file not found")
        return [SourceFile(self.name, str(self.path), (index, 0), self, self.path)]

    def read(self, key):
        return key.read_bytes()


class _Folder(_Location):
    def __init__(self, root: Path):
        self.root = root

    def list(self, index):
        out = []
        for dirpath, dirs, files in os.walk(self.root):
            dirs.sort()
            for f in sorted(files):
                path = Path(dirpath) / f
                out.append(SourceFile(path.relative_to(self.root).as_posix(), str(path), (index, len(out)), self, path))
        return out

    def read(self, key):
        return key.read_bytes()


def _member_name(name: str, archive: Path) -> str:
    """``name`` normalised inside the archive root; refuse absolute paths and ``..`` above the root."""
    pure = PurePosixPath(name.replace("\\", "/"))
    parts: list[str] = []
    for part in pure.parts:
        if part == "..":
            if not parts:
                break
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    else:
        if not pure.is_absolute():
            return "/".join(parts)
    raise ConvertError(f"{archive}: member {name!r} lies outside the archive root; refusing the archive")


class _Zip(_Location):
    def __init__(self, path: Path):
        self.path, self.zf = path, None

    def list(self, index):
        try:
            self.zf = zipfile.ZipFile(self.path)
        except zipfile.BadZipFile as e:
            raise ConvertError(f"{self.path}: not a readable zip archive ({e})") from None
        out = []
        for info in self.zf.infolist():
            name = _member_name(info.filename, self.path)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise ConvertError(f"{self.path}: member {info.filename!r} is a link; refusing the archive")
            if info.is_dir():
                continue
            out.append(SourceFile(name, f"{self.path}:{name}", (index, len(out)), self, info))
        return out

    def read(self, key):
        return self.zf.read(key)

    def close(self):
        if self.zf is not None:
            self.zf.close()


class _Tar(_Location):
    def __init__(self, path: Path):
        self.path, self.tf = path, None

    def list(self, index):
        try:
            self.tf = tarfile.open(self.path, "r:*")
            members = self.tf.getmembers()
        except (tarfile.TarError, EOFError, OSError) as e:
            raise ConvertError(f"{self.path}: not a readable tar archive ({e})") from None
        out = []
        for m in members:
            name = _member_name(m.name, self.path)
            if m.issym() or m.islnk():
                raise ConvertError(f"{self.path}: member {m.name!r} is a link; refusing the archive")
            if m.isdir():
                continue
            if not m.isfile():
                raise ConvertError(f"{self.path}: member {m.name!r} is not a regular file; refusing the archive")
            out.append(SourceFile(name, f"{self.path}:{name}", (index, len(out)), self, m))
        return out

    def read(self, key):
        return self.tf.extractfile(key).read()

    def close(self):
        if self.tf is not None:
            self.tf.close()


def _archive(path: Path) -> _Location:
    if zipfile.is_zipfile(path):
        return _Zip(path)
    if tarfile.is_tarfile(path):
        return _Tar(path)
    raise ConvertError(f"{path}: not a zip or tar archive (its manifest entry says archive: true)")


class SourceFiles:
    """Every file of one source; use as a context manager (archives stay open while it is)."""

    def __init__(self, where: str | os.PathLike, locations: list[_Location]):
        self.where, self._locations, self._files = str(where), locations, None

    @classmethod
    def open(cls, path: str | os.PathLike) -> "SourceFiles":
        """A folder (listed as it is) or a download record (its files, archives opened)."""
        path = Path(path)
        if path.is_dir():
            return cls(path, [_Folder(path)])
        if path.is_file() and path.suffix == ".json":
            return cls.from_record(path)
        if path.is_file():
            raise ConvertError(f"{path}: expected a raw folder or a {RECORD} download record, not this file")
        raise ConvertError(f"{path}: not found (expected a raw folder or a {RECORD} download record)")

    @classmethod
    def from_record(cls, record_path: str | os.PathLike) -> "SourceFiles":
        record_path = Path(record_path)
        try:
            record = json.loads(record_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConvertError(f"{record_path}: not a {RECORD} download record ({e})") from None
        if not isinstance(record, dict) or not isinstance(record.get("files"), dict):
            raise ConvertError(f"{record_path}: no 'files' mapping (expected a {RECORD} download record)")
        locations: list[_Location] = []
        for name, entry in record["files"].items():
            if not isinstance(entry, dict) or not isinstance(entry.get("path"), str):
                raise ConvertError(f"{record_path}: file {name!r} has no 'path' (re-run the download rule)")
            path = Path(entry["path"])
            if not path.is_absolute():
                path = record_path.parent / path
            if not path.is_file():
                raise ConvertError(f"{record_path}: {name}: {path} not found (moved since the download?)")
            if entry.get("size") is not None and path.stat().st_size != entry["size"]:
                raise ConvertError(f"{record_path}: {name}: {path} has {path.stat().st_size} bytes, the download "
                                   f"verified {entry['size']} (changed since; re-run the download rule)")
            locations.append(_archive(path) if entry.get("archive") else _Plain(path, name))
        return cls(record_path, locations)

    def __enter__(self) -> "SourceFiles":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for loc in self._locations:
            loc.close()

    def files(self) -> list[SourceFile]:
        """Every file, in listing order (listed once, on first use)."""
        if self._files is None:
            self._files = [f for i, loc in enumerate(self._locations) for f in loc.list(i)]
        return self._files

    def find(self, basename: str) -> SourceFile:
        """The one file called ``basename`` at any depth (releases nest files differently)."""
        found = [f for f in self.files() if f.basename == basename]
        if not found:
            raise ConvertError(f"{self.where}: no {basename} (expected from the official release; "
                               "run the download rule)")
        if len(found) > 1:
            raise ConvertError(f"{found[1].where}: {basename} is also {found[0].where}; expected one")
        return found[0]

    def images(self, suffixes: tuple[str, ...], id_of=lambda stem: stem) -> dict[str, SourceFile]:
        """``id_of(file stem)`` → file, for every file ending in one of ``suffixes`` (lower-case;
        any case matches); an id found twice is an error naming both files."""
        index: dict[str, SourceFile] = {}
        for f in self.files():
            stem, ext = os.path.splitext(f.basename)
            if ext.lower() in suffixes:
                key = id_of(stem)
                if key in index:
                    raise ConvertError(f"{f.where}: image {key!r} is also {index[key].where}; "
                                       "expected one file per image")
                index[key] = f
        return index
