"""Fetchers against a local threaded HTTP server on 127.0.0.1 with Range support."""
import hashlib
import http.server
import json
import threading
import urllib.parse
from pathlib import Path

import pytest

from core import fetch
from core.fetch import ChecksumError, FetchError, RemoteFile, Source


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files`` {path: bytes}; honours ``Range: bytes=N-``; an index page for '/tree/'.

    Paths in ``server.cut_once`` are answered, the first time, with the full Content-Length
    but only half the body before the connection closes (an interrupted transfer).
    Paths under ``/api/`` are answered with JSON from ``server.api(path, query)`` when it is set.
    """

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        url = urllib.parse.urlsplit(self.path)
        if server.api is not None and url.path.startswith("/api/"):
            body = json.dumps(server.api(url.path, urllib.parse.parse_qs(url.query))).encode()
            return self._send(200, body, len(body))
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
    httpd.files, httpd.cut_once, httpd.requests, httpd.api = {}, set(), [], None
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


# --------------------------------------------------------------------------- BioStudies file list


def _fake_biostudies(entries, honour_paging=True):
    """A BioStudies ``/api/v1/files/{acc}`` stand-in in the DataTables scheme of EBI's ribs server
    (``start``/``length`` in; ``recordsTotal``/``recordsFiltered``/``data`` out, see core.fetch).
    ``honour_paging=False`` answers every request with the first page, like a server that ignores paging."""
    calls = []

    def api(path, query):
        start, length = int(query.get("start", ["0"])[0]), int(query.get("length", ["5"])[0])
        calls.append((path, start, length))
        if not honour_paging:
            start = 0
        return {"draw": 1, "recordsTotal": len(entries), "recordsFiltered": len(entries),
                "data": entries[start:start + length]}

    return api, calls


def _entry(i, n):
    """Mixed casings as served: legacy ribs rows carry only the string column ``Size``, index-service rows
    also a numeric ``size``."""
    path = f"img/plane {i:03d}.tif"
    if i % 2:
        return {"path": path, "type": "file", "Name": path.split("/")[-1], "Size": str(n)}
    return {"path": path, "type": "file", "Name": path.split("/")[-1], "Size": str(n), "size": n}


def test_biostudies_listing_pages_through_everything_once(server):
    entries = [_entry(i, 1000 + i) for i in range(23)]
    entries.insert(5, {"path": "img/raw_dir", "type": "directory", "Name": "raw_dir", "Size": "0"})
    server.api, calls = _fake_biostudies(entries)
    api, files = server.base + "/api/v1/files/", server.base + "/files/"
    listed = fetch.biostudies_files("S-BIADTEST", api=api, files_url=files, page_size=10)
    assert [f.path for f in listed] == [f"img/plane {i:03d}.tif" for i in range(23)]  # all, once, no directory
    assert [f.size for f in listed] == [1000 + i for i in range(23)]
    assert listed[0].url == server.base + "/files/S-BIADTEST/img/plane%20000.tif"
    assert calls == [("/api/v1/files/S-BIADTEST", s, 10) for s in (0, 10, 20)]  # 24 records: 3 pages
    # include / max_files stop early, on the first page that satisfies them
    calls.clear()
    subset = fetch.biostudies_files("S-BIADTEST", include="*/plane 00[2-4].tif", max_files=2, api=api,
                                    files_url=files, page_size=10)
    assert [f.path for f in subset] == ["img/plane 002.tif", "img/plane 003.tif"] and len(calls) == 1


def test_biostudies_listing_terminates_when_the_server_ignores_paging(server):
    entries = [_entry(i, 10) for i in range(50)]
    server.api, calls = _fake_biostudies(entries, honour_paging=False)
    listed = fetch.biostudies_files("S-BIADTEST", api=server.base + "/api/v1/files/",
                                    files_url=server.base + "/files/", page_size=20)
    assert [f.path for f in listed] == [e["path"] for e in entries[:20]]  # the one page it serves, once
    assert len(calls) == 2  # the repeated page added nothing: stop


def test_biostudies_fetch_end_to_end_with_preset_and_override(server, tmp_path, monkeypatch):
    data = {i: _payload(3000 + i, i) for i in range(3)}
    entries = [_entry(i, len(data[i])) for i in range(3)]
    for i in range(3):
        server.files[f"/files/S-BIADTEST/img/plane%20{i:03d}.tif"] = data[i]
    server.api, calls = _fake_biostudies(entries)
    monkeypatch.setattr(fetch, "BIOSTUDIES_API", server.base + "/api/v1/files/")
    monkeypatch.setattr(fetch, "BIOSTUDIES_FILES", server.base + "/files/")
    source = Source("bia-test", "t", "-", "-", biostudies=True, accession="S-BIADNONE", default_max_files=2)
    with pytest.raises(FetchError, match="HTTP 404"):  # the preset is listed, its files are not served here
        fetch.fetch(source, tmp_path, progress=False)
    assert calls[-1][0] == "/api/v1/files/S-BIADNONE"
    paths = fetch.fetch(source, tmp_path, accession="S-BIADTEST", progress=False)  # --accession overrides
    assert calls[-1][0] == "/api/v1/files/S-BIADTEST"
    assert [p.read_bytes() for p in paths] == [data[0], data[1]]
    assert fetch.read_manifest(tmp_path / "bia-test") == {
        f"img/plane {i:03d}.tif": hashlib.sha256(data[i]).hexdigest() for i in range(2)}


def test_bia_presets():
    brightfield, mri = fetch.SOURCES["bia-brightfield"], fetch.SOURCES["bia-mri"]
    assert brightfield.accession == "S-BIAD440" and brightfield.default_max_files == 1
    assert mri.accession is None and "--accession" in mri.title


# --------------------------------------------------------------------------- remote names never leave the folder


def test_crawled_name_that_decodes_to_a_parent_path_is_refused_before_any_download(server, tmp_path):
    server.files["/tree/good.bin"] = b"good"
    server.files["/tree/%2e%2e%2fevil.bin"] = b"evil"  # the index links it as-is; unquoted it is ../evil.bin
    source = Source("tree", "t", "-", "-", tree_url=server.base + "/tree/")
    assert {f.path for f in fetch.crawl_index(source.tree_url)} == {"good.bin", "../evil.bin"}
    root = tmp_path / "root"
    with pytest.raises(fetch.UnsafePathError, match="'..' component"):
        fetch.fetch(source, root, progress=False)
    assert not (root / "evil.bin").exists() and not (root / "tree" / "good.bin").exists()
    assert not [path for path, _ in server.requests if "evil" in path]  # nothing was even downloaded


@pytest.mark.parametrize("bad", ["../../evil.tif", "/tmp/evil.tif", "img/../../evil.tif", "%2e%2e/evil.tif",
                                 "%2Ftmp%2Fevil.tif"])
def test_biostudies_path_outside_the_folder_is_refused(server, tmp_path, monkeypatch, capsys, bad):
    entries = [_entry(0, 5), {"path": bad, "type": "file", "Name": "evil.tif", "Size": "4", "size": 4}]
    server.files["/files/S-BIADTEST/img/plane%20000.tif"] = b"12345"
    server.api, _ = _fake_biostudies(entries)
    monkeypatch.setattr(fetch, "BIOSTUDIES_API", server.base + "/api/v1/files/")
    monkeypatch.setattr(fetch, "BIOSTUDIES_FILES", server.base + "/files/")
    source = Source("bia-test", "t", "-", "-", biostudies=True, accession="S-BIADTEST")
    with pytest.raises(fetch.UnsafePathError, match="refusing remote file name"):
        fetch.fetch(source, tmp_path / "root", progress=False)
    assert not list((tmp_path / "root" / "bia-test").rglob("*.tif"))
    assert not (tmp_path / "evil.tif").exists() and not Path("/tmp/evil.tif").exists()
    capsys.readouterr()
    assert fetch.main(["fetch", "bia-mri", "--accession", "S-BIADTEST", "--root", str(tmp_path / "cli"),
                       "--quiet"]) == 2  # the CLI: one "error: ..." line, exit 2
    err = capsys.readouterr().err
    assert err.startswith("error: refusing remote file name") and err.count("\n") == 1


def test_verify_does_not_read_manifest_entries_outside_the_folder(tmp_path):
    folder = tmp_path / "demo"
    folder.mkdir()
    (tmp_path / "secret.txt").write_bytes(b"abc")
    (folder / "SHA256SUMS").write_text(f"{hashlib.sha256(b'abc').hexdigest()}  ../secret.txt\n")
    problems = fetch.verify(Source("demo", "d", "-", "-"), tmp_path)
    assert len(problems) == 1 and problems[0].startswith("../secret.txt: refusing remote file name")
