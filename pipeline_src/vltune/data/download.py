"""Verified, resumable downloads of the official dataset files.

A dataset's files are listed in a versioned manifest shipped with the package
(``vltune/data/manifests/<dataset>.json``)::

    {"dataset": "vqav2", "version": 1,
     "files": [{"name": "v2_Questions_Train_mscoco.zip", "url": "https://…", "size": 123,
                "sha256": "…", "archive": true}]}

For each file fetched over HTTP(S): the bytes go to ``.<name>.part`` beside the target, a re-run
continues the partial file with an HTTP Range request, transient failures (connection errors, 5xx,
429, a short read) are retried with exponential backoff, and the file is renamed to its final name
only once its size and sha256 match. A mismatch deletes the partial file (its bytes cannot be
trusted) and raises :class:`DownloadError` naming the file, the URL and both digests. A file with
no pinned sha256 is trusted on first download: its digest is recorded (and logged, to be pinned).

``mirror`` replaces a URL's folder with another base URL or a local folder (clusters without
internet, re-hosted copies of dead links): the file name stays the same. A local file (a folder
mirror, or a ``file://`` URL) is verified the same way and used where it lies, never copied; a
mismatch leaves it alone.

Archives (``"archive": true``) are not unpacked: the converter reads their members in place
(:mod:`vltune.data.source_files`), so a dataset costs its archives once on disk. The record
``download.json``, written last, gives every file's ``url``, ``path`` (absolute for a local
file, else relative to the record's folder), ``size``, ``sha256`` and ``archive``.
"""

from __future__ import annotations

import http.client
import logging
import os
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import UserError
from ..utils.io import read_json, sha256_file, write_json

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
_CHUNK = 1 << 20
# Status codes worth a retry: the server or a proxy may recover; any other 4xx will not.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class DownloadError(UserError):
    """A download that failed for good: bad checksum, truncated file, HTTP error, missing file."""


@dataclass(frozen=True)
class FileEntry:
    name: str
    url: str
    size: int | None = None
    sha256: str | None = None
    archive: bool = False
    note: str = ""

    @classmethod
    def from_dict(cls, d: dict, where: str) -> "FileEntry":
        unknown = set(d) - {"name", "url", "size", "sha256", "archive", "note"}
        if "unpack" in unknown:
            raise UserError(f"{where}: {d.get('name')}: unknown key 'unpack' (an archive is marked 'archive': true; "
                            "it is read in place, never unpacked)")
        if unknown:
            raise UserError(f"{where}: unknown key {sorted(unknown)[0]!r} in a file entry")
        if not isinstance(d.get("name"), str) or not d["name"]:
            raise UserError(f"{where}: file entry needs a non-empty string 'name': {d}")
        if not isinstance(d.get("url"), str):
            raise UserError(f"{where}: {d['name']}: 'url' must be a string ('' = no public URL, see 'note')")
        if "/" in d["name"] or d["name"] in (".", ".."):
            raise UserError(f"{where}: file name {d['name']!r} must be a plain name, not a path")
        sha = d.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64
                                or any(c not in "0123456789abcdef" for c in sha)):
            raise UserError(f"{where}: {d['name']}: sha256 must be 64 lower-case hex digits, got {sha!r}")
        size = d.get("size")
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise UserError(f"{where}: {d['name']}: size must be a byte count (an integer >= 0), got {size!r}")
        return cls(d["name"], d["url"], size, sha, bool(d.get("archive", False)), d.get("note", ""))


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


def local_path(url: str) -> Path | None:
    """The file a local path or ``file://`` URL names; None for a remote URL."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        return Path(urllib.request.url2pathname(parsed.path))
    if parsed.scheme == "":
        return Path(url)
    return None


def verify_local(path: str | os.PathLike, name: str, size: int | None = None, sha256: str | None = None) -> str:
    """sha256 of the local file ``path`` (manifest entry ``name``), checked against ``size`` and
    ``sha256`` where given; the file is used where it lies, and left alone on a mismatch."""
    path = Path(path)
    if not path.is_file():
        raise DownloadError(f"{name}: local source {path} not found")
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise DownloadError(f"{name}: local source {path} has {actual} bytes, the manifest expects {size}")
    digest = sha256_file(path)
    if sha256 is not None and digest != sha256:
        raise DownloadError(f"{name}: sha256 mismatch for local source {path}: expected {sha256}, got {digest} "
                            "(check the mirror or the manifest)")
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
    """Fetch the http(s) ``url`` to ``dest``, verified; return its sha256 (a local file is not
    copied: see :func:`verify_local`).

    An existing ``dest`` is re-verified, not re-downloaded. Waits ``backoff · 2^k`` seconds before
    retry k+1.
    """
    dest = Path(dest)
    if local_path(url) is not None:
        raise DownloadError(f"{dest.name}: {url} is a local file; it is verified in place, not downloaded")
    if dest.exists():
        return _verify(dest, dest, url, size, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
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


RECORD = "download.json"


def download_dataset(manifest: dict, raw_dir: str | os.PathLike, mirror: str | None = None,
                     retries: int = 5, backoff: float = 1.0, timeout: float = 60.0) -> Path:
    """Fetch (or, for local files, verify in place) every file of ``manifest`` and write
    ``raw_dir/download.json`` (file → url, path, size, sha256, archive): the rule's declared
    output, written last. Remote files land in ``raw_dir``; archives stay packed."""
    raw_dir = Path(raw_dir)
    record = {"dataset": manifest.get("dataset"), "version": manifest["version"], "files": {}}
    for entry in manifest["files"]:
        url = resolve_url(entry, mirror)
        local = local_path(url)
        if local is not None:
            digest = verify_local(local, entry.name, entry.size, entry.sha256)
            path, where = local.resolve(), str(local.resolve())
        else:
            path = raw_dir / entry.name
            digest = download_file(url, path, entry.size, entry.sha256, retries, backoff, timeout)
            where = entry.name  # relative to the record's folder
        if entry.sha256 is None:
            log.warning("%s: manifest pins no sha256; recorded %s (pin it in the manifest)", entry.name, digest)
        record["files"][entry.name] = {"url": url, "path": where, "size": path.stat().st_size, "sha256": digest,
                                       "archive": entry.archive}
    write_json(raw_dir / RECORD, record)
    return raw_dir / RECORD
