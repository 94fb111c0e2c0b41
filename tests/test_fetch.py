"""Fetchers against a local threaded HTTP server on 127.0.0.1 with Range support."""
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from core import fetch
from core.fetch import ChecksumError, FetchError, RemoteFile, Source


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` {path: bytes}; honours ``Range: bytes=N-``; an index page for '/tree/'.

    Paths in ``server.cut_once`` are answered, the first time, with the full Content-Length
    but only half the body before the connection closes (an interrupted transfer).
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if self.path.endswith("/"):
            names = sorted({p[len(self.path):].split("/")[0] + ("/" if "/" in p[len(self.path):] else "")
                            for p in server.files if p.startswith(self.path)})
            body = "".join(f'<a href="{n}">{n}</a>\n' for n in ["../", "?C=M"] + names).encode()
            return self._send(200, body, len(body))
        data = server.files.get(self.path)
        if data is None:
            return self._send(404, b"", 0)
        start = 0
        header = self.headers.get("Range")
        if header and header.startswith("bytes="):
            start = int(header[6:].split("-")[0])
            if start >= len(data):
                return self._send(416, b"", 0)
        body = data[start:]
        if self.path in server.cut_once:
            server.cut_once.discard(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        status = 206 if start else 200
        self._send(status, body, len(body), start, len(data))

    def _send(self, status, body, length, start=0, total=None):
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture()
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    httpd.files, httpd.cut_once, httpd.requests = {}, set(), []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed * 13 + (i >> 8)) % 256 for i in range(n))


def test_good_download_verifies_and_records(server, tmp_path):
    data = _payload(300_000)
    server.files["/a/one.bin"] = data
    digest = hashlib.sha256(data).hexdigest()
    source = Source("demo", "demo", "-", "-", files=[RemoteFile("one.bin", server.base + "/a/one.bin", digest,
                                                                len(data))])
    paths = fetch.fetch(source, tmp_path, progress=False)
    assert paths == [tmp_path / "demo" / "one.bin"] and paths[0].read_bytes() == data
    assert fetch.read_manifest(tmp_path / "demo") == {"one.bin": digest}
    assert fetch.verify(source, tmp_path) == []
    paths[0].write_bytes(b"corrupted")
    assert fetch.verify(source, tmp_path) == ["one.bin: sha256 mismatch"]


def test_checksum_mismatch_is_a_clear_error_and_removes_the_file(server, tmp_path):
    server.files["/bad.bin"] = _payload(50_000, 1)
    dest = tmp_path / "bad.bin"
    with pytest.raises(ChecksumError, match="does not match the expected 0000"):
        fetch.download(server.base + "/bad.bin", dest, sha256="0" * 64, progress=False)
    assert not dest.exists() and not (tmp_path / "bad.bin.part").exists()


def test_interrupted_download_resumes_with_range(server, tmp_path):
    data = _payload(400_000, 2)
    server.files["/big.bin"] = data
    server.cut_once.add("/big.bin")
    dest = tmp_path / "big.bin"
    digest = hashlib.sha256(data).hexdigest()
    with pytest.raises(FetchError, match="resume"):
        fetch.download(server.base + "/big.bin", dest, sha256=digest, progress=False)
    part = tmp_path / "big.bin.part"
    assert part.is_file() and part.stat().st_size == 200_000 and not dest.exists()
    assert fetch.download(server.base + "/big.bin", dest, sha256=digest, progress=False) == digest
    assert dest.read_bytes() == data and not part.exists()
    assert server.requests[-1] == ("/big.bin", "bytes=200000-")


def test_http_error_and_size_mismatch(server, tmp_path):
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch.download(server.base + "/missing.bin", tmp_path / "m.bin", progress=False)
    server.files["/s.bin"] = b"x" * 100
    with pytest.raises(ChecksumError, match="expected 99"):
        fetch.download(server.base + "/s.bin", tmp_path / "s.bin", size=99, progress=False)
    assert not (tmp_path / "s.bin").exists()


def test_tree_crawl_subset_and_tofu_manifest(server, tmp_path):
    for i in range(4):
        server.files[f"/tree/sec{i}/tile_{i}.mrc"] = _payload(1000 + i, i)
    server.files["/tree/readme.txt"] = b"hello"
    source = Source("tree", "t", "-", "-", tree_url=server.base + "/tree/")
    listed = fetch.crawl_index(source.tree_url, include="sec*/*.mrc")
    assert [f.path for f in listed] == [f"sec{i}/tile_{i}.mrc" for i in range(4)]
    paths = fetch.fetch(source, tmp_path, include="sec*/*.mrc", max_files=2, progress=False)
    assert [p.relative_to(tmp_path / "tree").as_posix() for p in paths] == ["sec0/tile_0.mrc", "sec1/tile_1.mrc"]
    manifest = fetch.read_manifest(tmp_path / "tree")
    assert manifest["sec1/tile_1.mrc"] == hashlib.sha256(_payload(1001, 1)).hexdigest()
    # the server's copy changes: the recorded digest now catches it (file removed, clear error)
    server.files["/tree/sec1/tile_1.mrc"] = b"changed"
    paths[1].unlink()
    with pytest.raises(ChecksumError):
        fetch.fetch(source, tmp_path, include="sec*/*.mrc", max_files=2, progress=False)


def test_cli_list_and_missing_accession(capsys, tmp_path):
    assert fetch.main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("imagecompression_info", "empiar-12592", "tggates", "bia-mri", "bia-brightfield"):
        assert name in out
    assert fetch.main(["fetch", "bia-mri", "--root", str(tmp_path), "--quiet"]) == 2
    assert "--accession" in capsys.readouterr().err
    (tmp_path / "MANIFEST.sha256").write_text(f"{hashlib.sha256(b'abc').hexdigest()}  ./x.txt\n")
    (tmp_path / "x.txt").write_bytes(b"abc")
    assert fetch.main(["verify", "root", "--root", str(tmp_path)]) == 0
    (tmp_path / "x.txt").write_bytes(b"abd")
    assert fetch.main(["verify", "root", "--root", str(tmp_path)]) == 1
