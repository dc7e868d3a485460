"""Verified, resumable downloads of the official dataset files.

A dataset's files are listed in a versioned manifest shipped with the package
(``vltune/data/manifests/<dataset>.json``)::

    {"dataset": "vqav2", "version": 1,
     "files": [{"name": "v2_Questions_Train_mscoco.zip", "url": "https://…", "size": 123,
                "sha256": "…", "archive": true}]}

For each file fetched over HTTP(S), the bytes go to ``.<name>.part`` beside the target and only a
verified file ever gets its final name:

- **Complete** means a known size, met: the manifest's ``size``, else the response's
  Content-Length (or, on a resumed request, the total of its Content-Range). A body cut off short
  of it is retried (connection errors, 5xx, 429 and short reads are, with exponential backoff); a
  response that gives no size for a file whose manifest pins none is refused, the partial file kept.
  A server whose size disagrees with the manifest's is refused before a byte is written.
- **Resume**: the first response's validator (a strong ETag, else Last-Modified) and size are kept
  in ``.<name>.part.json``; a re-run asks for the rest with ``Range`` and ``If-Range``. A server
  whose file changed answers 200 with the whole new file, which then replaces the partial one from
  byte 0 (so does a 206 whose ETag or total differs from the recorded ones: a server that ignores
  If-Range). A partial file without a recorded validator is resumed only when a sha256 will check
  the result, else fetched again from byte 0.
- **Content**: an HTML page (Content-Type text/html, or a body starting ``<!DOCTYPE html`` /
  ``<html``) is refused for any file not itself named .html, naming the URL (a login or error page
  served with status 200); nothing of it is written. Archives are checked by their magic bytes
  before they get their name: ``.zip`` (``PK\x03\x04``, or an empty zip's ``PK\x05\x06``),
  ``.tar`` (``ustar`` at byte 257), ``.tar.gz``/``.tgz`` (gzip's ``\x1f\x8b``); another name marked
  ``"archive": true`` must start as one of these or as a bzip2/xz stream (a compressed tar).
- **Digest**: checked against the manifest's sha256 when it pins one. Either way, the digest of the
  verified file goes to its record ``<name>.sha256.json`` beside it (``sha256``, ``size``,
  ``mtime_ns``, ``hashed_at_ns``, ``url``), written before the rename. Where the manifest pins no
  sha256, the recorded one is the file's pin from then on (trust on first download: a re-download
  must match it too). Wrong bytes in the partial file are deleted and raise :class:`DownloadError`
  naming the file, the URL and both digests.
- **Later use**: an existing file is re-verified every time: its size always (against the
  manifest and the record), its sha256 in full unless size and mtime are as recorded and the record
  is not racy (the file had been unwritten for 2 s when it was hashed, as git judges its index, so
  any later write moved the mtime). A tool that writes the file and then restores its mtime defeats
  that shortcut; deleting the record forces the full hash. A file that fails, or that has neither a
  pinned nor a recorded digest, is moved aside to ``<name>.bad`` and fetched again.

``mirror`` replaces a URL's folder with another base URL or a local folder (clusters without
internet, re-hosted copies of dead links): the file name stays the same. A local file (a folder
mirror, or a ``file://`` URL) is checked against the manifest's size and sha256 and used where it
lies, never copied; a mismatch leaves it alone.

Archives (``"archive": true``) are not unpacked: the converter reads their members in place
(:mod:`vltune.data.source_files`), so a dataset costs its archives once on disk. The record
``download.json``, written last, gives every file's ``url``, ``path`` (absolute for a local
file, else relative to the record's folder), ``size``, ``sha256`` and ``archive``.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
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
# A file written less than this before it was hashed may be written again within the same mtime
# tick (Linux updates mtimes from a coarse clock; FAT has 2 s steps): its record is racy, and the
# next use hashes the file in full instead of trusting size + mtime.
_RACY_NS = 2_000_000_000


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


def _state_path(dest: Path) -> Path:
    """What the partial file's first response said: its URL, validator (ETag / Last-Modified) and size."""
    return dest.with_name(f".{dest.name}.part.json")


def record_path(dest: str | os.PathLike) -> Path:
    """The digest record of the downloaded file ``dest``: ``<name>.sha256.json`` beside it."""
    dest = Path(dest)
    return dest.with_name(f"{dest.name}.sha256.json")


def _bad_path(dest: Path) -> Path:
    return dest.with_name(f"{dest.name}.bad")


def _read_json_or_none(path: Path) -> dict | None:
    """A sidecar's content; None when it is missing or unreadable (then it is not relied on)."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _read_record(dest: Path) -> dict | None:
    rec = _read_json_or_none(record_path(dest))
    if rec is None or not isinstance(rec.get("sha256"), str) or not all(
            isinstance(rec.get(k), int) for k in ("size", "mtime_ns", "hashed_at_ns")):
        return None
    return rec


def _write_record(dest: Path, digest: str, st: os.stat_result, hashed_at_ns: int, url: str) -> None:
    """Record ``digest`` and ``st`` (the stat of ``dest``, or of its partial file before the rename)."""
    write_json(record_path(dest), {"url": url, "sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                   "hashed_at_ns": hashed_at_ns})


def _unchanged_since_hashed(rec: dict, st: os.stat_result) -> bool:
    """Size and mtime as recorded, and the record not racy: the file had not been written for
    ``_RACY_NS`` when it was hashed, so a later write would have moved its mtime."""
    return (rec["size"] == st.st_size and rec["mtime_ns"] == st.st_mtime_ns
            and rec["hashed_at_ns"] - rec["mtime_ns"] >= _RACY_NS)


def _expected_kind(name: str, archive: bool) -> str | None:
    """What the bytes of file ``name`` must be: an archive format, JSON, or None (any non-HTML bytes)."""
    low = name.lower()
    if low.endswith(".zip"):
        return "zip"
    if low.endswith((".tar.gz", ".tgz")):
        return "gzip"
    if low.endswith(".tar"):
        return "tar"
    if archive:
        return "archive"
    if low.endswith((".json", ".jsonl")):
        return "json"
    return None


_KIND_WORDS = {"zip": "a zip archive", "gzip": "a gzip-compressed tar archive", "tar": "a tar archive",
               "archive": "a zip or tar archive", "json": "JSON", None: "the file"}


def _html_allowed(name: str) -> bool:
    return name.lower().endswith((".html", ".htm"))


def _looks_html(head: bytes) -> bool:
    h = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return h.startswith((b"<!doctype html", b"<html"))


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header; an empty zip's end record
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz: a compressed tar


def _content_problem(path: Path, name: str, kind: str | None) -> str | None:
    """What is wrong with the bytes of ``path`` for file ``name`` (judged by their first bytes), or None."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not _html_allowed(name) and _looks_html(head):
        return f"an HTML page (it starts with {head.lstrip()[:15]!r})"
    magic_ok = {
        "zip": head.startswith(_ZIP_MAGIC),
        "gzip": head.startswith(b"\x1f\x8b"),
        "tar": head[257:262] == b"ustar",  # POSIX and GNU tar headers
        # (not tarfile.is_tarfile: it takes zero-filled bytes for an empty tar)
        "archive": head.startswith(_ZIP_MAGIC + _COMPRESSED_MAGIC) or head[257:262] == b"ustar",
    }
    if kind in magic_ok and not magic_ok[kind]:
        return f"no {kind} archive (it starts with {head[:8]!r})" if kind != "archive" else \
            f"neither a zip nor a tar archive (it starts with {head[:8]!r})"
    return None


def _discard(part: Path, state: Path) -> None:
    part.unlink(missing_ok=True)
    state.unlink(missing_ok=True)


def _check_part(part: Path, dest: Path, url: str, total: int | None, sha256: str | None, pinned: bool,
                kind: str | None) -> tuple[str, int]:
    """Digest of the complete partial file and when hashing began; raises unless its size is
    ``total``, its bytes are of ``kind`` and its digest ``sha256`` (where known). Wrong bytes are
    deleted; a short file is kept for resume."""
    state = _state_path(dest)
    actual = part.stat().st_size
    if total is not None and actual != total:
        if actual > total:
            _discard(part, state)  # longer than expected: the bytes are wrong, resuming cannot help
        raise DownloadError(
            f"{dest.name}: {'truncated' if actual < total else 'too long'} download from {url}: "
            f"{actual} bytes, expected {total}" + ("; re-run to resume" if actual < total else "")
        )
    problem = _content_problem(part, dest.name, kind)
    if problem:
        _discard(part, state)
        raise DownloadError(f"{dest.name}: {url} sent {problem}, expected {_KIND_WORDS[kind]} "
                            "(the partial file was deleted; check the URL/mirror)")
    hashed_at = time.time_ns()
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256:
        _discard(part, state)
        if pinned:
            raise DownloadError(
                f"{dest.name}: sha256 mismatch for {url}: expected {sha256}, got {digest} "
                "(the partial file was deleted; check the URL/mirror or the manifest)"
            )
        raise DownloadError(
            f"{dest.name}: sha256 mismatch for {url}: expected {sha256} (recorded at its first download in "
            f"{record_path(dest)}), got {digest} (the partial file was deleted; if the file changed upstream, "
            "pin its sha256 in the manifest or delete that record)"
        )
    return digest, hashed_at


def _recheck(dest: Path, url: str, size: int | None, sha256: str | None) -> str | None:
    """Digest of the existing final file ``dest`` if it still is what was verified; otherwise move
    it aside (``<name>.bad``) and return None, so that it is fetched again."""
    rec = _read_record(dest)
    expected = sha256 if sha256 is not None else (rec["sha256"] if rec else None)
    st = dest.stat()
    if size is not None and st.st_size != size:
        why = f"it has {st.st_size} bytes, the manifest expects {size}"
    elif rec is not None and rec["size"] != st.st_size:
        why = f"it has {st.st_size} bytes, {rec['size']} when verified ({record_path(dest).name})"
    elif expected is None:
        why = f"no sha256 pinned in the manifest or recorded in {record_path(dest).name} to check it against"
    elif rec is not None and rec["sha256"] == expected and _unchanged_since_hashed(rec, st):
        return expected  # unchanged since it was hashed: size and mtime as recorded
    else:
        hashed_at = time.time_ns()
        digest = sha256_file(dest)
        if digest == expected:
            _write_record(dest, digest, st, hashed_at, url)
            return digest
        why = f"its sha256 is {digest}, expected {expected}" + ("" if sha256 is not None else
                                                               f" ({record_path(dest).name})")
    bad = _bad_path(dest)
    os.replace(dest, bad)
    log.warning("%s: %s; moved it aside to %s and fetching it again", dest.name, why, bad.name)
    return None


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


def _validator(headers) -> str | None:
    """The response's validator for If-Range: a strong ETag, else Last-Modified."""
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):
        return etag
    return headers.get("Last-Modified")


def _range_total(content_range: str | None) -> int | None:
    """The complete length in a Content-Range header (``bytes 0-9/10``, ``bytes */10``), None for ``*``."""
    m = re.fullmatch(r"bytes (?:\d+-\d+|\*)/(\d+|\*)", (content_range or "").strip())
    return int(m.group(1)) if m and m.group(1) != "*" else None


def _other_size(name: str, url: str, served: int, header: str, size: int) -> DownloadError:
    return DownloadError(f"{name}: {url} serves {served} bytes ({header}), the manifest expects {size}: "
                         "not the manifest's file (check the URL/mirror or the manifest)")


def _fetch_http(url: str, dest: Path, size: int | None, digest_known: bool, kind: str | None,
                timeout: float) -> None:
    """Bring ``dest``'s partial file up to date from ``url``: resume it (Range + If-Range) where its
    first response left a validator, else (or when the file changed) start again from byte 0.
    Raises DownloadError for good, another exception for a retry."""
    part, state_file = _part_path(dest), _state_path(dest)
    name = dest.name
    for _ in range(2):  # a second pass when the partial file turns out to be of another version
        state = _read_json_or_none(state_file) or {}
        if state.get("url") != url:
            state = {}  # from another URL: its validator says nothing about this one
        have = part.stat().st_size if part.exists() else 0
        total = size if size is not None else state.get("total")
        if have and total is not None and have == total:
            return  # complete already: a previous run was killed between the transfer and the check
        if have and total is not None and have > total:
            have = 0  # longer than the file: start again
        validator = state.get("validator")
        if have and validator is None and not digest_known:
            # without a validator nor a digest, bytes appended from a changed file could not be told apart
            log.warning("%s: no ETag/Last-Modified recorded for the partial file; starting again from byte 0", name)
            have = 0
        req = urllib.request.Request(url, headers={"User-Agent": "vltune-download"})
        if have:
            req.add_header("Range", f"bytes={have}-")
            if validator is not None:
                req.add_header("If-Range", validator)
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as e:
            if e.code == 416 and have:  # nothing left to send from byte `have`
                whole = _range_total(e.headers.get("Content-Range"))
                if whole == have or (whole is None and total == have):
                    return  # the partial file is complete
                _discard(part, state_file)  # longer than the file on the server: start again
                continue
            raise
        with resp:
            if resp.status not in (200, 206):
                raise DownloadError(f"{name}: HTTP {resp.status} {resp.reason} from {url}, expected 200 or 206")
            ctype = resp.headers.get("Content-Type", "")
            if ctype.split(";")[0].strip().lower() == "text/html" and not _html_allowed(name):
                raise DownloadError(f"{name}: {url} sent an HTML page (Content-Type {ctype}), expected "
                                    f"{_KIND_WORDS[kind]} (a login or error page? "
                                    "check the URL/mirror)")
            resp_validator = _validator(resp.headers)
            if have and resp.status == 206:
                content_range = resp.headers.get("Content-Range", "")
                if not content_range.startswith(f"bytes {have}-"):
                    raise DownloadError(f"{name}: {url} answered Range {have}- with {content_range!r}")
                whole = _range_total(content_range)
                changed = ((validator is not None and resp_validator is not None and resp_validator != validator)
                           or (whole is not None and state.get("total") is not None and whole != state["total"]))
                if changed:  # a server that ignored If-Range: these bytes belong to another version
                    log.warning("%s: %s changed since the partial download; starting again from byte 0", name, url)
                    _discard(part, state_file)
                    continue
                if size is not None and whole is not None and whole != size:
                    raise _other_size(name, url, whole, "Content-Range", size)
                if whole is not None and state.get("total") is None:
                    write_json(state_file, {**state, "url": url, "total": whole})
                offset, expected = have, whole
            elif resp.status == 206:
                raise DownloadError(f"{name}: {url} answered 206 Partial Content to a request for the whole file")
            else:  # the whole file: a first request, or a server whose file changed (If-Range) or that ignores Range
                length = resp.headers.get("Content-Length")
                expected = int(length) if length is not None and length.isdigit() else None
                if size is not None and expected is not None and expected != size:
                    raise _other_size(name, url, expected, "Content-Length", size)
                if have:
                    log.warning("%s: %s sent the whole file (changed since the partial download, or no Range "
                                "support); starting again from byte 0", name, url)
                offset = 0
            first = resp.read(_CHUNK)
            if offset == 0 and not _html_allowed(name) and _looks_html(first[:512]):
                raise DownloadError(f"{name}: {url} sent an HTML page (it starts with {first.lstrip()[:15]!r}), "
                                    f"expected {_KIND_WORDS[kind]} (a login or error page? "
                                    "check the URL/mirror)")
            if offset == 0:  # recorded before any byte is written: what a resume must ask If-Range for
                write_json(state_file, {"url": url, "validator": resp_validator, "total": expected})
            with open(part, "ab" if offset else "wb") as f:
                f.write(first)
                shutil.copyfileobj(resp, f, _CHUNK)
        got = part.stat().st_size
        if expected is None:
            expected = size if size is not None else state.get("total")
        if expected is not None and got < expected:
            raise ConnectionError(f"short read from {url}: {got} of {expected} bytes")
        return
    raise DownloadError(f"{name}: {url} changed again while it was fetched from byte 0; re-run later")


def download_file(url: str, dest: str | os.PathLike, size: int | None = None, sha256: str | None = None,
                  retries: int = 5, backoff: float = 1.0, timeout: float = 60.0, archive: bool = False) -> str:
    """Fetch the http(s) ``url`` to ``dest``, verified; return its sha256 (a local file is not
    copied: see :func:`verify_local`). ``archive``: the file must be a zip or tar archive (a name
    ending in .zip, .tar, .tar.gz or .tgz says which).

    An existing ``dest`` is re-verified (see the module docs) and fetched again only if that
    fails. Waits ``backoff · 2^k`` seconds before retry k+1.
    """
    dest = Path(dest)
    if local_path(url) is not None:
        raise DownloadError(f"{dest.name}: {url} is a local file; it is verified in place, not downloaded")
    if dest.exists():
        digest = _recheck(dest, url, size, sha256)
        if digest is not None:
            return digest
    rec = _read_record(dest)
    expected = sha256 if sha256 is not None else (rec["sha256"] if rec else None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, state_file = _part_path(dest), _state_path(dest)
    kind = _expected_kind(dest.name, archive)
    for attempt in range(retries + 1):
        try:
            _fetch_http(url, dest, size, expected is not None, kind, timeout)
            break
        except urllib.error.HTTPError as e:
            if e.code not in _RETRY_STATUS or attempt == retries:
                raise DownloadError(f"{dest.name}: HTTP {e.code} {e.reason} from {url}") from None
            reason = f"HTTP {e.code}"
        except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError) as e:
            if attempt == retries:
                raise DownloadError(f"{dest.name}: giving up on {url} after {retries + 1} tries: {e} "
                                    f"(kept {part.name}; a re-run resumes it)") from None
            reason = str(e) or type(e).__name__
        wait = backoff * 2**attempt
        log.warning("%s: %s; retry %d/%d in %.1f s (resumes at byte %d)", dest.name, reason, attempt + 1,
                    retries, wait, part.stat().st_size if part.exists() else 0)
        time.sleep(wait)
    state = _read_json_or_none(state_file) or {}
    total = size if size is not None else (state.get("total") if state.get("url") == url else None)
    if total is None and expected is None:
        raise DownloadError(f"{dest.name}: {url} sent no Content-Length (nor a Content-Range total) and the manifest "
                            "pins no size: a complete download cannot be told from a cut one "
                            f"(kept {part.name}; pin 'size' in the manifest)")
    digest, hashed_at = _check_part(part, dest, url, total, expected, sha256 is not None, kind)
    # recorded before the rename (which keeps size and mtime): a file under its final name always has one
    _write_record(dest, digest, part.stat(), hashed_at, url)
    os.replace(part, dest)
    state_file.unlink(missing_ok=True)
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
            digest = download_file(url, path, entry.size, entry.sha256, retries, backoff, timeout, entry.archive)
            where = entry.name  # relative to the record's folder
        if entry.sha256 is None:
            log.warning("%s: manifest pins no sha256; recorded %s (pin it in the manifest)", entry.name, digest)
        record["files"][entry.name] = {"url": url, "path": where, "size": path.stat().st_size, "sha256": digest,
                                       "archive": entry.archive}
    write_json(raw_dir / RECORD, record)
    return raw_dir / RECORD
