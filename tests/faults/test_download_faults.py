"""Fault injection for the downloader: a real HTTP server on 127.0.0.1 (started here) that cuts
bodies, sends HTML error pages with status 200, changes its file between a dropped connection and
the resume, and a final file corrupted on disk after its download. Every case ends either with the
server's current bytes under the final name or with one error line naming the URL and what was
expected, and nothing wrong under the final name."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vltune.cli import main
from vltune.data.download import DownloadError, download_file, record_path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _etag(data: bytes) -> str:
    return f'"{_sha(data)[:16]}"'


class FaultyServer:
    """Serves ``files`` like a static file server (Range, strong ETag, If-Range per RFC 9110: a
    validator that does not match gets 200 and the whole current file). ``faults[path]`` is a list
    of misbehaviours, one used up per request:

    - ``"cut"``: Content-Length sent, half the body, then the connection closes;
    - ``"cut-nolength"``: no Content-Length, half the body, then close;
    - ``"html"``: an HTML error page with status 200 and Content-Type text/html;
    - ``"html-as-binary"``: the same page labelled application/octet-stream.

    ``honour_if_range = False`` makes it a server that ignores If-Range (serves the Range of
    whatever the file is now). ``validators``: "strong" (an ETag), "weak" (a weak ETag, which
    If-Range may not carry, and Last-Modified) or "none"."""

    PAGE = b"<!DOCTYPE html>\n<html><body>Please log in to download this file.</body></html>\n"

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[dict] = []
        self.honour_if_range = True
        self.validators = "strong"
        self.modified: dict[str, str] = {}  # path -> Last-Modified of its current version
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                outer.requests.append({"path": path, "Range": self.headers.get("Range"),
                                       "If-Range": self.headers.get("If-Range")})
                fault = outer.faults.get(path, []).pop(0) if outer.faults.get(path) else None
                if fault in ("html", "html-as-binary"):
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8" if fault == "html"
                                     else "application/octet-stream")
                    self.send_header("Content-Length", str(len(outer.PAGE)))
                    self.end_headers()
                    self.wfile.write(outer.PAGE)
                    return
                if path not in outer.files:
                    self.send_error(404)
                    return
                body = outer.files[path]
                rng, if_range = self.headers.get("Range"), self.headers.get("If-Range")
                current = {"strong": _etag(body), "weak": outer.modified.get(path), "none": None}[outer.validators]
                if rng and if_range is not None and if_range != current and outer.honour_if_range:
                    rng = None  # the file changed: the whole current file, status 200
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if rng and start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                self.send_header("Content-Type", "application/octet-stream")
                if outer.validators == "strong":
                    self.send_header("ETag", _etag(body))
                elif outer.validators == "weak":
                    self.send_header("ETag", "W/" + _etag(body))
                    self.send_header("Last-Modified", outer.modified[path])
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                part = body[start:]
                if fault != "cut-nolength":
                    self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if fault in ("cut", "cut-nolength"):
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)


@pytest.fixture()
def server():
    s = FaultyServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _zip(seed: int, n: int = 300_000) -> bytes:
    """A zip holding ``n`` bytes of incompressible data (so a cut body leaves a real partial file)."""
    data = b"".join(hashlib.sha256(f"{seed}:{i}".encode()).digest() for i in range(n // 32))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("questions.json", data)
    return buf.getvalue()


V1, V2 = _zip(1), _zip(2)
assert len(V1) == len(V2) and V1 != V2  # a changed file of the same length: appending would pass a size check


def _listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_body_cut_without_content_length_is_refused_and_the_part_resumed_next_run(server, tmp_path):
    server.files["qs.zip"] = V1
    server.faults["qs.zip"] = ["cut-nolength"]
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, retries=0, backoff=0)
    assert str(err.value) == (f"qs.zip: {url} sent no Content-Length (nor a Content-Range total) and the manifest "
                              "pins no size: a complete download cannot be told from a cut one "
                              "(kept .qs.zip.part; pin 'size' in the manifest)")
    assert not dest.exists()
    assert (tmp_path / ".qs.zip.part").read_bytes() == V1[: len(V1) // 2]
    # the next run resumes it: the 206's Content-Range gives the total, If-Range the first response's ETag
    assert download_file(url, dest, retries=0, backoff=0) == _sha(V1)
    assert dest.read_bytes() == V1
    assert server.requests[-1] == {"path": "qs.zip", "Range": f"bytes={len(V1) // 2}-", "If-Range": _etag(V1)}
    assert _listing(tmp_path) == ["qs.zip", "qs.zip.sha256.json"]


def test_connection_dropped_mid_body_resumes_with_if_range(server, tmp_path):
    server.files["qs.zip"] = V1
    server.faults["qs.zip"] = ["cut", "cut"]
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    assert download_file(url, dest, retries=2, backoff=0) == _sha(V1)
    assert dest.read_bytes() == V1
    half, quarter = len(V1) // 2, (len(V1) - len(V1) // 2) // 2
    assert [(r["Range"], r["If-Range"]) for r in server.requests] == [
        (None, None), (f"bytes={half}-", _etag(V1)), (f"bytes={half + quarter}-", _etag(V1))]
    assert json.loads(record_path(dest).read_text())["sha256"] == _sha(V1)


@pytest.mark.parametrize("honour_if_range", [True, False], ids=["server-honours-if-range", "server-ignores-if-range"])
def test_file_changed_between_drop_and_resume_restarts_from_byte_0(server, tmp_path, honour_if_range):
    server.honour_if_range = honour_if_range
    server.files["qs.zip"] = V1
    server.faults["qs.zip"] = ["cut"]
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    with pytest.raises(DownloadError, match=r"giving up .* \(kept \.qs\.zip\.part; a re-run resumes it\)"):
        download_file(url, dest, retries=0, backoff=0)
    server.files["qs.zip"] = V2  # a new release, same length
    assert download_file(url, dest, retries=0, backoff=0) == _sha(V2)
    assert dest.read_bytes() == V2  # the server's current bytes, not half of each
    resume = server.requests[1]
    assert (resume["Range"], resume["If-Range"]) == (f"bytes={len(V1) // 2}-", _etag(V1))
    # a server honouring If-Range answered 200 with V2; one ignoring it sent V2's tail, refused for its ETag
    assert [r["Range"] for r in server.requests[2:]] == ([] if honour_if_range else [None])


def test_weak_etag_resumes_with_last_modified(server, tmp_path):
    server.validators = "weak"
    server.files["qs.zip"], server.modified["qs.zip"] = V1, "Tue, 01 Dec 2026 10:00:00 GMT"
    server.faults["qs.zip"] = ["cut"]
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    assert download_file(url, dest, retries=1, backoff=0) == _sha(V1)
    assert dest.read_bytes() == V1
    assert server.requests[1]["If-Range"] == "Tue, 01 Dec 2026 10:00:00 GMT"


def test_partial_file_without_validator_or_digest_is_fetched_again_from_byte_0(server, tmp_path):
    """Nothing could tell bytes appended from a changed file: no ETag, no Last-Modified, no sha256."""
    server.validators = "none"
    server.files["qs.zip"] = V1
    server.faults["qs.zip"] = ["cut"]
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    with pytest.raises(DownloadError, match="giving up"):
        download_file(url, dest, retries=0)
    server.files["qs.zip"] = V2  # same length: a resume would pass the size check
    assert download_file(url, dest, retries=0) == _sha(V2)
    assert dest.read_bytes() == V2
    assert [r["Range"] for r in server.requests] == [None, None]


@pytest.mark.parametrize("fault, how", [
    ("html", "(Content-Type text/html; charset=utf-8)"),
    ("html-as-binary", "(it starts with b'<!DOCTYPE html>')"),
])
def test_html_page_with_status_200_is_refused_naming_the_url(server, tmp_path, fault, how):
    server.files["qs.zip"] = V1
    server.faults["qs.zip"] = [fault]
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, retries=3, backoff=0)
    assert str(err.value) == (f"qs.zip: {url} sent an HTML page {how}, expected a zip archive "
                              "(a login or error page? check the URL/mirror)")
    assert len(server.requests) == 1  # not retried: the same page would come back
    assert _listing(tmp_path) == []  # nothing of the page written


def test_html_page_on_a_resumed_request_keeps_the_partial_file(server, tmp_path):
    server.files["qs.zip"] = V1
    server.faults["qs.zip"] = ["cut", "html"]
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    with pytest.raises(DownloadError, match=rf"qs\.zip: {url} sent an HTML page \(Content-Type text/html"):
        download_file(url, dest, retries=1, backoff=0)
    assert (tmp_path / ".qs.zip.part").read_bytes() == V1[: len(V1) // 2]
    assert download_file(url, dest, retries=0, backoff=0) == _sha(V1)  # the page cost nothing already fetched
    assert server.requests[-1]["Range"] == f"bytes={len(V1) // 2}-"


def _tgz() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        info = tarfile.TarInfo("images/1.jpg")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"jpg"))
    return buf.getvalue()


@pytest.mark.parametrize("name, body, archive, expected", [
    ("qs.zip", b"\x00" * 4096, False, "no zip archive (it starts with b'\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00'), "
                                      "expected a zip archive"),
    ("images.tgz", _zip(3, 1000)[:4096], False, "no gzip archive (it starts with b'PK\\x03\\x04\\x14\\x00\\x00\\x00'), "
                                                "expected a gzip-compressed tar archive"),
    ("images.tar", _tgz(), False, "no tar archive (it starts with b'\\x1f\\x8b\\x08\\x00"),
    ("images.bin", b"\x00" * 4096, True, "neither a zip nor a tar archive (it starts with b'\\x00\\x00"),
], ids=["zip", "tgz", "tar", "marked-archive"])
def test_archive_with_wrong_magic_bytes_never_gets_its_name(server, tmp_path, name, body, archive, expected):
    server.files[name] = body
    dest, url = tmp_path / name, f"{server.url}/{name}"
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, len(body), None, retries=0, archive=archive)
    assert str(err.value).startswith(f"{name}: {url} sent {expected}")
    assert str(err.value).endswith("(the partial file was deleted; check the URL/mirror)")
    assert _listing(tmp_path) == []


def test_archives_with_the_right_magic_bytes_pass(server, tmp_path):
    tgz = _tgz()
    plain_tar = io.BytesIO()
    with tarfile.open(fileobj=plain_tar, mode="w") as tf:
        tf.addfile(tarfile.TarInfo("empty"), io.BytesIO(b""))
    for name, body in [("a.zip", V1), ("b.tar.gz", tgz), ("c.tgz", tgz), ("d.tar", plain_tar.getvalue())]:
        server.files[name] = body
        assert download_file(f"{server.url}/{name}", tmp_path / name, retries=0) == _sha(body)
    server.files["e.bin"] = tgz
    assert download_file(f"{server.url}/e.bin", tmp_path / "e.bin", retries=0, archive=True) == _sha(tgz)


def _flip(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[:-100])


@pytest.mark.parametrize("pinned", [True, False], ids=["sha256-pinned", "sha256-recorded"])
@pytest.mark.parametrize("corrupt", [_flip, _truncate], ids=["byte-flip", "truncation"])
def test_final_file_corrupted_on_disk_is_moved_aside_and_fetched_again(server, tmp_path, corrupt, pinned):
    server.files["qs.zip"] = V1
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    sha = _sha(V1) if pinned else None
    download_file(url, dest, None, sha, retries=0)
    corrupt(dest)
    damaged = dest.read_bytes()
    assert download_file(url, dest, None, sha, retries=0) == _sha(V1)
    assert dest.read_bytes() == V1
    assert (tmp_path / "qs.zip.bad").read_bytes() == damaged  # kept aside, never trusted
    assert [r["Range"] for r in server.requests] == [None, None]
    assert _listing(tmp_path) == ["qs.zip", "qs.zip.bad", "qs.zip.sha256.json"]


def test_corruption_within_the_mtime_tick_of_the_download_is_caught(server, tmp_path):
    """mtimes come from a coarse clock: a write just after the download can leave size and mtime
    as recorded. Such a fresh record is racy, so the next use hashes the file in full."""
    server.files["qs.zip"] = V1
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    download_file(url, dest, retries=0)
    st = dest.stat()
    _flip(dest)
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))  # the same tick: size and mtime unchanged
    assert download_file(url, dest, retries=0) == _sha(V1)
    assert dest.read_bytes() == V1 and len(server.requests) == 2


def test_recorded_digest_pins_a_refetch_of_an_unpinned_file(server, tmp_path):
    """The first download's digest is the file's pin: a copy corrupted on disk is fetched again, and
    a server now sending other bytes is an error, not a silent new version."""
    server.files["qs.zip"] = V1
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    download_file(url, dest, retries=0)
    _flip(dest)
    server.files["qs.zip"] = V2
    with pytest.raises(DownloadError) as err:
        download_file(url, dest, retries=0)
    assert str(err.value) == (
        f"qs.zip: sha256 mismatch for {url}: expected {_sha(V1)} (recorded at its first download in "
        f"{record_path(dest)}), got {_sha(V2)} (the partial file was deleted; if the file changed upstream, "
        "pin its sha256 in the manifest or delete that record)")
    assert _listing(tmp_path) == ["qs.zip.bad", "qs.zip.sha256.json"]


def test_unchanged_verified_file_is_not_rehashed(server, tmp_path, monkeypatch):
    """Later uses of a file unwritten since it was hashed check size and mtime only; a fresh record
    (file written moments before its hash) is racy and gets the full hash once."""
    import vltune.data.download as download

    server.files["qs.zip"] = V1
    dest, url = tmp_path / "qs.zip", f"{server.url}/qs.zip"
    download_file(url, dest, retries=0)
    st = dest.stat()
    os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns - 3_000_000_000))  # mtime moved 3 s back
    hashed = []
    monkeypatch.setattr(download, "sha256_file", lambda p: hashed.append(p) or _sha(open(p, "rb").read()))
    assert download_file(url, dest, retries=0) == _sha(V1)
    assert len(hashed) == 1  # the mtime moved: hashed in full, recorded again
    assert download_file(url, dest, retries=0) == _sha(V1)
    assert len(hashed) == 1 and len(server.requests) == 1


def test_cli_reports_a_bad_file_in_one_line_and_keeps_the_good_ones(server, tmp_path, capsys):
    server.files["m/a.json"] = b'{"questions": []}\n'
    server.files["m/b.zip"] = V1
    server.faults["m/b.zip"] = ["html"]
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps({"dataset": "toy", "version": 1, "files": [
        {"name": "a.json", "url": f"{server.url}/m/a.json"},
        {"name": "b.zip", "url": f"{server.url}/m/b.zip", "archive": True}]}))
    raw = tmp_path / "raw"
    argv = ["download", "--dataset", str(manifest), "--out", str(raw), "--params", '{"retries": 0}']
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        f"vltune download: error: b.zip: {server.url}/m/b.zip sent an HTML page (Content-Type text/html; "
        "charset=utf-8), expected a zip archive (a login or error page? check the URL/mirror)\n")
    assert _listing(raw) == ["a.json", "a.json.sha256.json"]  # no download.json: the job did not finish
    assert main(argv) == 0
    assert [r["path"] for r in server.requests] == ["m/a.json", "m/b.zip", "m/b.zip"]  # a.json not fetched again
    record = json.loads((raw / "download.json").read_text())["files"]
    assert record["b.zip"]["sha256"] == _sha(V1) and (raw / "b.zip").read_bytes() == V1
