"""Verified, resumable downloads of the official dataset files, and safe unpacking.

A dataset's files are listed in a versioned manifest shipped with the package
(``vltune/data/manifests/<dataset>.json``)::

    {"dataset": "vqav2", "version": 1,
     "files": [{"name": "v2_Questions_Train_mscoco.zip", "url": "https://…", "size": 123,
                "sha256": "…", "unpack": true}]}

For each file: the bytes go to ``.<name>.part`` beside the target, a re-run continues the partial
file with an HTTP Range request, transient failures (connection errors, 5xx, 429, a short read) are
retried with exponential backoff, and the file is renamed to its final name only once its size and
sha256 match. A mismatch deletes the partial file (its bytes cannot be trusted) and raises
:class:`DownloadError` naming the file, the URL and both digests. Archives are unpacked only into
the target folder (members that would land outside it are refused).

``mirror`` replaces a URL's folder with another base URL or a local folder (clusters without
internet, re-hosted copies of dead links): the file name stays the same.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from ..errors import UserError
from ..utils.io import read_json, sha256_file, write_json

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_CHUNK = 1 << 20
# Status codes worth a retry: the server or a proxy may recover; any other 4xx will not.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(UserError):
    """A download that failed for good: bad checksum, truncated file, HTTP error, bad archive."""


@dataclass(frozen=True)
class FileEntry:
    name: str
    url: str
    size: int | None = None
    sha256: str | None = None
    unpack: bool = False
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "FileEntry":
        unknown = set(d) - {"name", "url", "size", "sha256", "unpack", "note"}
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} in a file entry")
        if not isinstance(d.get("name"), str) or not d["name"]:
            raise UserError(f"{where}: file entry needs a non-empty string 'name': {d}")
        if not isinstance(d.get("url"), str):
            raise UserError(f"{where}: {d['name']}: 'url' must be a string ('' = no public URL, see 'note')")
        if "/" in d["name"] or d["name"] in (".", ".."):
            raise UserError(f"{where}: file name {d['name']!r} must be a plain name, not a path")
        sha = d.get("sha256")
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            raise UserError(f"{where}: {d['name']}: sha256 must be 64 lower-case hex digits, got {sha!r}")
        return cls(d["name"], d["url"], d.get("size"), sha, bool(d.get("unpack", False)), d.get("note", ""))


def load_manifest(dataset_or_path: str | os.PathLike) -> dict:
    """A shipped manifest by dataset name, or a manifest JSON file by path; checked."""
    path = Path(dataset_or_path)
    if path.suffix != ".json":
        ref = resources.files("vltune.data") / "manifests" / f"{dataset_or_path}.json"
        if not ref.is_file():
            shipped = sorted(p.name[:-5] for p in (resources.files("vltune.data") / "manifests").iterdir()
                             if p.name.endswith(".json"))
            raise UserError(f"no download manifest for dataset {dataset_or_path!r} (shipped: {', '.join(shipped)})")
        path = Path(str(ref))
    manifest = read_json(path)
    if manifest.get("version") != MANIFEST_VERSION:
        raise UserError(f"{path}: manifest version {manifest.get('version')!r}, this vltune reads {MANIFEST_VERSION}")
    if not isinstance(manifest.get("files"), list) or not manifest["files"]:
        raise UserError(f"{path}: manifest needs a non-empty 'files' list")
    manifest["files"] = [FileEntry.from_dict(f, str(path)) for f in manifest["files"]]
    names = [f.name for f in manifest["files"]]
    if len(set(names)) != len(names):
        raise UserError(f"{path}: file names repeat in the manifest")
    return manifest


def resolve_url(entry: FileEntry, mirror: str | None) -> str:
    """The URL (or local path) to fetch ``entry`` from: its own URL, or ``<mirror>/<name>``."""
    if not mirror:
        if not entry.url:
            raise DownloadError(f"{entry.name}: no public URL ({entry.note or 'see the manifest'}); "
                                "set a mirror (a folder or base URL holding the file)")
        return entry.url
    if "://" in mirror:
        return mirror.rstrip("/") + "/" + urllib.parse.quote(entry.name)
    return str(Path(mirror) / entry.name)


def _part_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.part")


def _verify(path: Path, dest: Path, url: str, size: int | None, sha256: str | None) -> str:
    """Digest of ``path``; raise (and delete it) unless size and sha256 are as expected."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        if actual_size > size:
            path.unlink()  # longer than expected: the bytes are wrong, resuming cannot help
        raise DownloadError(
            f"{dest.name}: {'truncated' if actual_size < size else 'too long'} download from {url}: "
            f"{actual_size} bytes, expected {size}" + ("; re-run to resume" if actual_size < size else "")
        )
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        path.unlink()
        raise DownloadError(
            f"{dest.name}: sha256 mismatch for {url}: expected {sha256}, got {digest} "
            "(the partial file was deleted; check the URL/mirror or the manifest)"
        )
    return digest


def _fetch_http(url: str, part: Path, size: int | None, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (Range from its current length); raises on failure."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have == size:
        return  # complete already: a previous run was killed between the transfer and the check
    req = urllib.request.Request(url, headers={"User-Agent": "vltune-download"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is complete (or wrong)
            return
        raise
    with resp:
        if have and resp.status != 206:
            have = 0  # the server ignored the Range header: start again from byte 0
        elif have:
            content_range = resp.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {have}-"):
                raise DownloadError(f"{part.name}: {url} answered Range {have}- with {content_range!r}")
        with open(part, "ab" if have else "wb") as f:
            shutil.copyfileobj(resp, f, _CHUNK)
        expected = resp.headers.get("Content-Length")
    if expected is not None and part.stat().st_size - have < int(expected):
        raise ConnectionError(f"short read from {url}: {part.stat().st_size - have} of {expected} bytes")


def download_file(url: str, dest: str | os.PathLike, size: int | None = None, sha256: str | None = None,
                  retries: int = 5, backoff: float = 1.0, timeout: float = 60.0) -> str:
    """Fetch ``url`` (http(s), file:// or a local path) to ``dest``, verified; return its sha256.

    An existing ``dest`` is re-verified, not re-downloaded. Waits ``backoff · 2^k`` seconds before
    retry k+1.
    """
    dest = Path(dest)
    if dest.exists():
        return _verify(dest, dest, url, size, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme in ("", "file"):
        source = Path(urllib.request.url2pathname(parsed.path) if parsed.scheme else url)
        if not source.is_file():
            raise DownloadError(f"{dest.name}: local source {source} not found")
        shutil.copyfile(source, part)
    else:
        for attempt in range(retries + 1):
            try:
                _fetch_http(url, part, size, timeout)
                break
            except urllib.error.HTTPError as e:
                if e.code not in _RETRY_STATUS or attempt == retries:
                    raise DownloadError(f"{dest.name}: HTTP {e.code} {e.reason} from {url}") from None
                reason = f"HTTP {e.code}"
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
                if attempt == retries:
                    raise DownloadError(f"{dest.name}: giving up on {url} after {retries + 1} tries: {e}") from None
                reason = str(e)
            wait = backoff * 2**attempt
            log.warning("%s: %s; retry %d/%d in %.1f s (resumes at byte %d)", dest.name, reason, attempt + 1,
                        retries, wait, part.stat().st_size if part.exists() else 0)
            time.sleep(wait)
    digest = _verify(part, dest, url, size, sha256)
    os.replace(part, dest)
    return digest


def _check_member(name: str, target: Path, archive: Path) -> Path:
    """Where member ``name`` goes; refuse absolute paths and anything resolving outside ``target``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    out = (target / pure).resolve()
    if pure.is_absolute() or not out.is_relative_to(target.resolve()):
        raise DownloadError(f"{archive.name}: member {name!r} would be written outside {target}; refusing to unpack")
    return out


def safe_unpack(archive: str | os.PathLike, target: str | os.PathLike) -> list[str]:
    """Unpack a zip or tar archive into ``target``; every member is checked before any is written."""
    archive, target = Path(archive), Path(target)
    target.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for name in names:
                _check_member(name, target, archive)
            zf.extractall(target)
        return names
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for m in members:
                _check_member(m.name, target, archive)
            # The "data" filter also refuses links pointing outside target and device files.
            tf.extractall(target, members=members, filter="data")
        return [m.name for m in members]
    raise DownloadError(f"{archive}: not a zip or tar archive (manifest says unpack: true)")


RECORD = "download.json"


def download_dataset(manifest: dict, raw_dir: str | os.PathLike, mirror: str | None = None,
                     retries: int = 5, backoff: float = 1.0, timeout: float = 60.0) -> Path:
    """Fetch and verify every file of ``manifest`` into ``raw_dir``, unpack archives, and write
    ``raw_dir/download.json`` (file → url, size, sha256): the rule's declared output, written last."""
    raw_dir = Path(raw_dir)
    record = {"dataset": manifest.get("dataset"), "version": manifest["version"], "files": {}}
    for entry in manifest["files"]:
        url = resolve_url(entry, mirror)
        dest = raw_dir / entry.name
        digest = download_file(url, dest, entry.size, entry.sha256, retries, backoff, timeout)
        if entry.sha256 is None:
            log.warning("%s: manifest pins no sha256; recorded %s (pin it in the manifest)", entry.name, digest)
        if entry.unpack:
            stamp = raw_dir / f".{entry.name}.unpacked"
            if not stamp.exists() or stamp.read_text() != digest:
                safe_unpack(dest, raw_dir)
                stamp.write_text(digest)
        record["files"][entry.name] = {"url": url, "size": dest.stat().st_size, "sha256": digest}
    write_json(raw_dir / RECORD, record)
    return raw_dir / RECORD

