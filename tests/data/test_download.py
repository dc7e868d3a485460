"""Downloader against a real HTTP server on 127.0.0.1 (started here, serving files made here)."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from vltune.data.download import (DownloadError, download_dataset, download_file, load_manifest,
                                  local_path, resolve_url, verify_local)


class Server:
    """Serves ``files`` with HTTP Range support; ``faults`` scripts misbehaviour per path:
    a list of "500" (answer 500) or "cut" (send half the body, then close) used up one per request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[tuple[str, str | None]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                path = self.path.lstrip("/")
                rng = self.headers.get("Range")
                outer.requests.append((path, rng))
                if path not in outer.files:
                    self.send_error(404)
                    return
                fault = outer.faults.get(path, []).pop(0) if outer.faults.get(path) else None
                if fault == "500":
                    self.send_error(500)
                    return
                body, start = outer.files[path], 0
                if rng:
                    start = int(rng.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if fault == "cut":
                    self.wfile.write(part[: len(part) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with Server() as s:
        yield s


PAYLOAD = bytes(range(256)) * 4000  # ~1 MB, so a cut transfer leaves a real partial file


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_normal_download(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    dest = tmp_path / "raw" / "a.bin"
    assert download_file(f"{server.url}/a.bin", dest, len(PAYLOAD), _sha(PAYLOAD)) == _sha(PAYLOAD)
    assert dest.read_bytes() == PAYLOAD
    # no partial file left; the digest record beside the file
    assert sorted(p.name for p in dest.parent.iterdir()) == ["a.bin", "a.bin.sha256.json"]
    # a second call verifies the file on disk and makes no request
    n = len(server.requests)
    download_file(f"{server.url}/a.bin", dest, len(PAYLOAD), _sha(PAYLOAD))
    assert len(server.requests) == n


def test_resume_after_interrupted_transfer(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    server.faults["a.bin"] = ["cut"]
    dest = tmp_path / "a.bin"
    download_file(f"{server.url}/a.bin", dest, len(PAYLOAD), _sha(PAYLOAD), retries=2, backoff=0.01)
    assert dest.read_bytes() == PAYLOAD
    # the retry asked only for the bytes it did not have yet
    assert server.requests == [("a.bin", None), ("a.bin", f"bytes={len(PAYLOAD) // 2}-")]


def test_resume_across_runs_without_retries(server, tmp_path):
    """A job killed mid-transfer: the next run continues the .part file with a Range request."""
    server.files["a.bin"] = PAYLOAD
    server.faults["a.bin"] = ["cut"]
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError, match="giving up"):
        download_file(f"{server.url}/a.bin", dest, len(PAYLOAD), _sha(PAYLOAD), retries=0)
    assert not dest.exists()  # nothing that looks complete
    assert (tmp_path / ".a.bin.part").stat().st_size == len(PAYLOAD) // 2
    download_file(f"{server.url}/a.bin", dest, len(PAYLOAD), _sha(PAYLOAD), retries=0)
    assert dest.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("a.bin", f"bytes={len(PAYLOAD) // 2}-")


def test_checksum_mismatch_names_file_url_and_digests(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    wrong = "0" * 64
    dest = tmp_path / "a.bin"
    with pytest.raises(DownloadError) as err:
        download_file(f"{server.url}/a.bin", dest, None, wrong)
    msg = str(err.value)
    assert "a.bin" in msg and f"{server.url}/a.bin" in msg and wrong in msg and _sha(PAYLOAD) in msg
    assert list(tmp_path.iterdir()) == []  # neither the file nor a partial one remains


def test_server_file_shorter_than_the_manifest_is_refused_before_any_byte(server, tmp_path):
    server.files["a.bin"] = PAYLOAD[:1000]
    with pytest.raises(DownloadError, match=r"a\.bin: .*/a\.bin serves 1000 bytes \(Content-Length\), "
                                            r"the manifest expects 2000: not the manifest's file"):
        download_file(f"{server.url}/a.bin", tmp_path / "a.bin", 2000, None)
    assert list(tmp_path.iterdir()) == []


def test_server_error_is_retried(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    server.faults["a.bin"] = ["500", "500"]
    download_file(f"{server.url}/a.bin", tmp_path / "a.bin", len(PAYLOAD), _sha(PAYLOAD), retries=3, backoff=0.01)
    assert (tmp_path / "a.bin").read_bytes() == PAYLOAD
    assert len(server.requests) == 3


def test_persistent_server_error_and_404_give_up(server, tmp_path):
    server.files["a.bin"] = PAYLOAD
    server.faults["a.bin"] = ["500"] * 5
    with pytest.raises(DownloadError, match=r"a\.bin: HTTP 500"):
        download_file(f"{server.url}/a.bin", tmp_path / "a.bin", retries=2, backoff=0.01)
    assert len(server.requests) == 3
    with pytest.raises(DownloadError, match=r"b\.bin: HTTP 404"):
        download_file(f"{server.url}/b.bin", tmp_path / "b.bin", retries=3, backoff=0.01)
    assert len(server.requests) == 4  # a 404 is not retried


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_download_dataset_with_mirror_keeps_archives_packed(server, tmp_path):
    archive = _zip({"questions/train.json": b'{"q": 1}'})
    server.files["mirror/qs.zip"] = archive
    server.files["mirror/notes.txt"] = b"hello"
    manifest_path = tmp_path / "m.json"
    manifest_path.write_text(json.dumps({"dataset": "toy", "version": 1, "files": [
        {"name": "qs.zip", "url": "https://example.invalid/dead/qs.zip", "size": len(archive),
         "sha256": _sha(archive), "archive": True},
        {"name": "notes.txt", "url": "", "note": "request form", "sha256": None},
    ]}))
    manifest = load_manifest(manifest_path)
    with pytest.raises(DownloadError, match="notes.txt: no public URL \\(request form\\)"):
        resolve_url(manifest["files"][1], None)
    raw = tmp_path / "raw"
    record = download_dataset(manifest, raw, mirror=f"{server.url}/mirror", backoff=0.01)
    assert sorted(p.name for p in raw.iterdir()) == ["download.json", "notes.txt", "notes.txt.sha256.json",
                                                     "qs.zip", "qs.zip.sha256.json"]  # not unpacked
    assert (raw / "qs.zip").read_bytes() == archive
    files = json.loads(record.read_text())["files"]
    assert files["notes.txt"] == {"url": f"{server.url}/mirror/notes.txt", "path": "notes.txt", "size": 5,
                                  "sha256": _sha(b"hello"), "archive": False}
    assert files["qs.zip"]["path"] == "qs.zip" and files["qs.zip"]["archive"] is True


def test_local_mirror_files_are_verified_in_place_not_copied(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    archive = _zip({"questions/train.json": b'{"q": 1}'})
    (local / "qs.zip").write_bytes(archive)
    (local / "notes.txt").write_bytes(b"hello")
    manifest_path = tmp_path / "m.json"
    manifest_path.write_text(json.dumps({"dataset": "toy", "version": 1, "files": [
        {"name": "qs.zip", "url": "", "size": len(archive), "sha256": _sha(archive), "archive": True},
        {"name": "notes.txt", "url": ""}]}))
    raw = tmp_path / "raw"
    record = download_dataset(load_manifest(manifest_path), raw, mirror=str(local))
    assert [p.name for p in raw.iterdir()] == ["download.json"]  # nothing copied
    files = json.loads(record.read_text())["files"]
    assert files["qs.zip"] == {"url": str(local / "qs.zip"), "path": str((local / "qs.zip").resolve()),
                               "size": len(archive), "sha256": _sha(archive), "archive": True}
    assert files["notes.txt"]["sha256"] == _sha(b"hello")  # not pinned: recorded on first use
    # a file:// URL names a local file too; an http one does not
    assert local_path((local / "notes.txt").as_uri()) == local / "notes.txt"
    assert local_path("https://example.invalid/notes.txt") is None


def test_a_bad_local_file_is_an_error_and_left_alone(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(PAYLOAD)
    with pytest.raises(DownloadError, match=r"a\.bin: sha256 mismatch for local source .*a\.bin: expected 0{64}"):
        verify_local(f, "a.bin", None, "0" * 64)
    with pytest.raises(DownloadError, match=rf"a\.bin: local source .* has {len(PAYLOAD)} bytes, the manifest expects 7"):
        verify_local(f, "a.bin", 7, None)
    with pytest.raises(DownloadError, match=r"b\.bin: local source .*b\.bin not found"):
        verify_local(tmp_path / "b.bin", "b.bin")
    assert f.read_bytes() == PAYLOAD  # the mirror's file is never deleted
    with pytest.raises(DownloadError, match="verified in place, not downloaded"):
        download_file(f.as_uri(), tmp_path / "copy.bin")


def test_shipped_manifests_load():
    for name in ("coco2014", "vqav2", "gqa", "nlvr2", "flickr30k"):
        m = load_manifest(name)
        assert m["dataset"] == name and m["files"]
    with pytest.raises(Exception, match="no download manifest for dataset 'nope'"):
        load_manifest("nope")


def test_every_pinned_shipped_entry_has_both_size_and_sha256():
    """A pin is the pair: a size alone would let other bytes of that length through, a digest
    alone would report a truncated download as a mismatch instead of resuming it."""
    pinned = []
    for name in ("coco2014", "vqav2", "gqa", "nlvr2", "flickr30k"):
        for f in load_manifest(name)["files"]:
            assert (f.size is None) == (f.sha256 is None), f"{name}: {f.name} pins only one of size/sha256"
            if f.sha256 is not None:
                pinned.append(f.name)
                assert f.size > 0
    # at least the NLVR2 annotations published in the lil-lab/nlvr repository
    assert {"dev.json", "test1.json"} <= set(pinned)


def test_bad_manifest_entries(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"version": 1, "files": [{"name": "a", "url": "x", "sha256": "abc"}]}))
    with pytest.raises(Exception, match="a: sha256 must be 64"):
        load_manifest(p)
    p.write_text(json.dumps({"version": 1, "files": [{"name": "../a", "url": "x"}]}))
    with pytest.raises(Exception, match="plain name"):
        load_manifest(p)
    p.write_text(json.dumps({"version": 1, "files": [{"name": "a", "url": "x", "size": "12"}]}))
    with pytest.raises(Exception, match="a: size must be a byte count"):
        load_manifest(p)
    p.write_text(json.dumps({"version": 1, "files": [{"name": "a.zip", "url": "x", "unpack": True}]}))
    with pytest.raises(Exception, match="a.zip: unknown key 'unpack'"):
        load_manifest(p)
