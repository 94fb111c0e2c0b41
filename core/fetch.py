"""Fetch the public source datasets: resumable HTTP downloads with sha256 verification.

    python -m core.datasets list
    python -m core.datasets fetch imagecompression_info [--root DIR] [--include 'gray*'] [--max-files N]
    python -m core.datasets fetch empiar-12592 --include '*.mrc' --max-files 2
    python -m core.datasets fetch bia-mri --accession S-BIADnnnn
    python -m core.datasets fetch bia-brightfield --dry-run    # preset S-BIAD440; list, download nothing
    python -m core.datasets verify NAME [--root DIR]

Downloads use only the standard library (``urllib``): a file is written to
``<name>.part`` and renamed when complete; an interrupted download resumes from
the ``.part`` size with an HTTP ``Range`` request (a server that ignores Range
restarts from zero).  A file whose sha256 is known (published, or recorded
here) is checked after download: on a mismatch the partial/complete file is
removed and :class:`ChecksumError` says which file, expected and actual digest.

Where the source publishes no checksum (EMPIAR, Open TG-GATEs, imagecompression.info,
BioStudies) the digest of the downloaded file is recorded in ``SHA256SUMS`` next to
it (trust on first use) so that ``verify`` detects later corruption; ``list``
says which kind each source has.  Sources that are directory trees (EMPIAR,
TG-GATEs) are listed by crawling their HTTP index pages; ``--include`` (a glob on
the relative path) and ``--max-files`` fetch a subset — they are terabytes in full.

Remote file names never choose where a file is written outside its dataset folder:
:func:`local_path` percent-decodes and normalises every name from a listing (HTTP
index, BioStudies file list) and refuses absolute paths, ``..`` components and
anything that resolves outside ``root/<name>/`` (:class:`UnsafePathError`, before
anything is downloaded).

This machine has no internet: the sources' layouts were taken from their public
documentation and are exercised by the tests only against a local HTTP server.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

CHUNK = 1 << 16
TIMEOUT_S = 60
USER_AGENT = "biocodec-bench-fetch/1 (+urllib)"
MANIFEST = "SHA256SUMS"


class FetchError(RuntimeError):
    """A download failed (network, HTTP status, truncated transfer)."""


class ChecksumError(FetchError):
    """A downloaded file's sha256 differs from the expected one (the file was removed)."""


class UnsafePathError(FetchError):
    """A remote file name would be written outside its dataset folder (refused, nothing written)."""


_DRIVE = re.compile(r"^[A-Za-z]:")


def local_path(folder: str | Path, remote_path: str) -> Path:
    """Where the remote file ``remote_path`` (relative to its dataset) is written: a path inside ``folder``.

    The name is checked as given and after every round of percent-decoding (``%2e%2e%2f`` → ``../``,
    ``%252e`` → ``%2e`` → ``.``), with ``/`` and ``\\`` both taken as separators: an absolute path, a
    drive letter, a ``..`` component, a NUL byte, an empty name or the folder itself is refused with
    :class:`UnsafePathError`; so is a name that resolves outside ``folder`` through a symbolic link
    already in it.  The returned path is ``folder / remote_path`` (``.`` components dropped).
    """
    text = str(remote_path)
    variants = [text]
    while True:
        decoded = urllib.parse.unquote(variants[-1])
        if decoded == variants[-1]:
            break
        if len(variants) > 8:
            raise UnsafePathError(f"refusing remote file name {text!r}: percent-encoded too many times")
        variants.append(decoded)
    for name in variants:
        parts = re.split(r"[/\\]", name)
        why = ("is empty" if not name.strip() else
               "contains a NUL byte" if "\x00" in name else
               "is an absolute path" if name.startswith(("/", "\\")) or _DRIVE.match(name) else
               "contains a '..' component" if ".." in parts else
               "names the dataset folder itself" if all(p in ("", ".") for p in parts) else None)
        if why:
            decoded_note = "" if name == text else f" (percent-decoded: {name!r})"
            raise UnsafePathError(f"refusing remote file name {text!r}{decoded_note}: it {why}; files are only "
                                  "written inside the dataset folder")
    base = Path(folder).resolve()
    target = (base / text).resolve()
    if target == base or not target.is_relative_to(base):
        raise UnsafePathError(f"refusing remote file name {text!r}: it resolves to {target}, outside {base}")
    return Path(folder) / text


@dataclass(frozen=True)
class RemoteFile:
    """One file of a source: ``path`` relative to the dataset folder, its URL, optional sha256/size (bytes)."""

    path: str
    url: str
    sha256: str | None = None
    size: int | None = None


@dataclass
class Source:
    """A public dataset: fixed file list and/or an HTTP directory tree to crawl."""

    name: str
    title: str
    licence: str
    why: str
    files: list[RemoteFile] = field(default_factory=list)
    tree_url: str | None = None           # crawl this HTTP index (EMPIAR, TG-GATEs)
    default_include: str | None = None    # glob on relative paths when --include is not given
    default_max_files: int | None = None
    biostudies: bool = False              # BioImage Archive: listed by accession (--accession overrides)
    accession: str | None = None          # preset accession, if one could be justified
    unzip: bool = False                   # extract .zip files after download (imagecompression.info)
    checksums: str = "recorded on first download (SHA256SUMS); none published"


_ICI = "http://imagecompression.info/test_images/"
# BioStudies (the BioImage Archive's front end), as implemented by EBI's own UI server "ribs"
# (github.com/EBIBioStudies/ribs):
#  * file list: GET/POST {BIOSTUDIES_API}{accession}?start=N&length=M — controller/File.java maps
#    "/api/v1/files/{accession}" with DataTables parameters start (0-based offset) and length (page
#    size, server default 5, -1 = all); js/detail/filetable.js is the web UI calling it.  The reply
#    (service/impl/FilePaginationServiceImpl.java, api/util/Constants.java) is
#    {"draw", "recordsTotal", "recordsFiltered", "data": [{"path", "type": "file"|"directory",
#    "Name", "Size", ...}]}, sorted by Name; the newer index service answering it
#    (github.com/EBIBioStudies/biostudies-index-service, rest/FileSearchController.java) adds a
#    numeric "size" next to the column "Size".  Sizes are bytes.  There is no
#    /api/v1/studies/{accession}/files endpoint (controller/Study.java has only /studies/{acc},
#    /similar and /info).
#  * download: GET {BIOSTUDIES_FILES}{accession}/{path, percent-encoded} — controller/FileDownload.java
#    ("/files/**"); the same template is FILE_URI_TEMPLATE in BioImage-Archive/bia-integrator,
#    bia-ingest/bia_ingest/biostudies/api.py.
BIOSTUDIES_API = "https://www.ebi.ac.uk/biostudies/api/v1/files/"
BIOSTUDIES_FILES = "https://www.ebi.ac.uk/biostudies/files/"
BIOSTUDIES_PAGE = 100  # files per file-list request

SOURCES: dict[str, Source] = {s.name: s for s in [
    Source(
        name="imagecompression_info",
        title="The New Image Compression Test Set (Jan 2008): 8/16-bit gray and RGB, PGM/PPM in zips",
        licence="imagecompression.info terms (readme.txt): free redistribution, no sale, keep the notice",
        why="stage 1: standard photographic compression test images incl. real 16-bit data",
        files=[RemoteFile(f"{n}.zip", f"{_ICI}{n}.zip", size=470611702 if n == "rgb8bit" else None)
               for n in ("gray8bit", "gray16bit", "rgb8bit", "rgb16bit")],
        unzip=True,
        checksums="none published (rgb8bit.zip size 470611702 bytes is checked); recorded in SHA256SUMS",
    ),
    Source(
        name="empiar-12592",
        title="EMPIAR-12592 (EBI EMPIAR): scanning-EM sections, the stage-2 target data",
        licence="EMPIAR entries are released under CC0",
        why="stage 2: real SEM sections; very large, so fetch a subset with --include/--max-files",
        tree_url="https://ftp.ebi.ac.uk/empiar/world_availability/12592/data/",
        default_max_files=2,
    ),
    Source(
        name="tggates",
        title="Open TG-GATEs pathological images (rat liver/kidney H&E whole-slide images, .svs)",
        licence="CC BY-SA 2.1 JP (Open TG-GATEs, NIBIOHN)",
        why="stage 3 at whole-slide scale: exercises tiling of large RGB images",
        tree_url="https://dbarchive.biosciencedbc.jp/data/open-tggates-pathological-images/LATEST/images/",
        default_include="acetaminophen/Liver/*.svs",
        default_max_files=1,
    ),
    Source(
        name="bia-mri",
        title="BioImage Archive study with grayscale MRI (pass --accession S-BIAD...)",
        licence="per study (mostly CC0 / CC BY 4.0): read the study page",
        why=("stage 4 unseen type, >= 12-bit gray. No accession is preset: none could be justified offline. "
             "The BioImage Archive's development principles exclude medical imaging from its initial scope "
             "(ebi.ac.uk/bioimage-archive/project-developments), and no MRI study (2-D/3-D MRI in TIFF/PNG, "
             ">= 12 significant bits, open licence) was found in the public material available here; choose "
             "one on the archive's site and pass it"),
        biostudies=True,
    ),
    Source(
        name="bia-brightfield",
        title=("BioImage Archive S-BIAD440 (Haemorasis): whole peripheral-blood-smear slides, brightfield RGB, "
               "WSI .tiff (override with --accession)"),
        licence="per study (mostly CC0 / CC BY 4.0): read the S-BIAD440 study page (not checked offline)",
        why=("stage 4 unseen type, 8-bit RGB brightfield: stained blood smears (red/white cells), unlike the "
             "H&E tissue of stage 3. Chosen because public material documents it: the Haemorasis pipeline "
             "(github.com/josegcpa/haemorasis; Nat. Commun. 2023, doi:10.1038/s41467-023-39676-y) says S-BIAD440 "
             "holds all its peripheral-blood slides, and github.com/Wang-Yuanlong/PBSBench (data/README.md, "
             "docs/PREPROCESSING.md) reads ~240 of them as images/<slide>.tiff (e.g. images/III_1.tiff) with "
             "OpenSlide, with level-0 coordinates near 96000 px. NOT verified offline: the exact file list, "
             "sizes, licence and pixel format. Level 0 is then far over core.io's 400-Mpixel limit: crop "
             "regions before staging. Only one file is fetched by default"),
        biostudies=True,
        accession="S-BIAD440",
        default_include="*.tiff",
        default_max_files=1,
    ),
]}


# --------------------------------------------------------------------------- download


def _request(url: str, start: int = 0) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    return urllib.request.Request(url, headers=headers)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: str | Path, sha256: str | None = None, size: int | None = None,
             progress: bool = True, timeout: float = TIMEOUT_S) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``); returns the file's sha256 (hex).

    An existing ``dest`` is kept when it matches ``sha256`` (or when no digest is known).
    Raises :class:`ChecksumError` (file removed) on a digest or size mismatch and
    :class:`FetchError` on network/HTTP failures (the ``.part`` file is kept for resuming).
    """
    from tqdm import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        actual = file_sha256(dest)
        if sha256 is None or actual == sha256:
            return actual
        dest.unlink()  # stale or corrupt: fetch again
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.is_file() else 0
    try:
        response = urllib.request.urlopen(_request(url, start), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start and size == start:  # the .part is already complete
            response = None
        elif exc.code == 416:
            part.unlink(missing_ok=True)
            return download(url, dest, sha256, size, progress, timeout)
        else:
            raise FetchError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{url}: {exc}") from exc
    if response is not None:
        with response:
            resumed = start > 0 and response.status == 206
            if start and not resumed:
                start = 0  # server ignored Range: start over
            length = response.headers.get("Content-Length")
            total = (start + int(length)) if length is not None else size
            try:
                with open(part, "ab" if resumed else "wb") as out, \
                        tqdm(total=total, initial=start, unit="B", unit_scale=True, disable=not progress,
                             desc=dest.name[:30], leave=False) as bar:
                    while True:
                        block = response.read(CHUNK)
                        if not block:
                            break
                        out.write(block)
                        bar.update(len(block))
            except (OSError, urllib.error.URLError, ValueError) as exc:  # incl. http.client.IncompleteRead
                raise FetchError(f"{url}: transfer interrupted after {part.stat().st_size} bytes ({exc}); "
                                 "run the same command again to resume") from exc
            if total is not None and part.stat().st_size < total:
                raise FetchError(f"{url}: got {part.stat().st_size} of {total} bytes; run again to resume")
    got = part.stat().st_size
    if size is not None and got != size:
        part.unlink()
        raise ChecksumError(f"{dest.name}: {got} bytes, expected {size}; the file was removed")
    actual = file_sha256(part)
    if sha256 is not None and actual != sha256.lower():
        part.unlink()
        raise ChecksumError(f"{dest.name}: sha256 {actual} does not match the expected {sha256}; "
                            "the file was removed")
    os.replace(part, dest)
    return actual


# --------------------------------------------------------------------------- listings


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.links.append(href)


def _get_text(url: str, timeout: float = TIMEOUT_S) -> str:
    try:
        with urllib.request.urlopen(_request(url), timeout=timeout) as response:
            return response.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{url}: {exc}") from exc


def crawl_index(base_url: str, include: str | None = None, max_files: int | None = None,
                max_depth: int = 6) -> list[RemoteFile]:
    """Files under an HTTP directory index (Apache/nginx style), depth-first, sorted per folder.

    ``include`` is a glob on the path relative to ``base_url``; only folders that can
    still match are entered.  Stops after ``max_files`` matches.
    """
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    found: list[RemoteFile] = []

    def could_match(rel_dir: str) -> bool:
        if include is None:
            return True
        depth = rel_dir.count("/")
        parts = include.split("/")
        prefix = "/".join(parts[:depth])
        return depth >= len(parts) or fnmatch.fnmatch(rel_dir.rstrip("/"), prefix) or "**" in include

    def walk(url: str, rel: str, depth: int) -> None:
        parser = _Links()
        parser.feed(_get_text(url))
        for href in sorted(set(parser.links)):
            if max_files is not None and len(found) >= max_files:
                return
            if href.startswith(("?", "#", "/", "..")) or "://" in href:
                continue
            name = urllib.parse.unquote(href)
            if href.endswith("/"):
                if depth < max_depth and could_match(rel + name):
                    walk(urllib.parse.urljoin(url, href), rel + name, depth + 1)
            elif include is None or fnmatch.fnmatch(rel + name, include):
                found.append(RemoteFile(rel + name, urllib.parse.urljoin(url, href)))

    walk(base_url, "", 0)
    return found


def _size_bytes(item: dict) -> int | None:
    """A file-list entry's size in bytes: numeric ``size`` (index service) or the ``Size`` column (ribs)."""
    for key in ("size", "Size"):
        try:
            return int(item[key])
        except (KeyError, TypeError, ValueError):
            continue
    return None


def biostudies_files(accession: str, include: str | None = None, max_files: int | None = None,
                     api: str | None = None, files_url: str | None = None,
                     page_size: int = BIOSTUDIES_PAGE) -> list[RemoteFile]:
    """Files of a BioStudies/BioImage Archive study, from its paged file-list API (sizes in bytes).

    ``page_size`` is the number of files asked for per request; ``api``/``files_url`` default to
    ``BIOSTUDIES_API``/``BIOSTUDIES_FILES`` (read at call time).  Pages are requested with
    ``start``/``length`` (see ``BIOSTUDIES_API``) until the reported total (``recordsFiltered``,
    else ``recordsTotal``) is reached, a page is empty, or a page adds no file not seen before —
    so a server that ignores the paging parameters cannot loop forever.
    ``type: "directory"`` entries are skipped (their contents are not listed individually).
    """
    api = api or BIOSTUDIES_API
    files_url = files_url or BIOSTUDIES_FILES
    out: list[RemoteFile] = []
    seen: set[str] = set()
    start = 0
    while True:
        page = json.loads(_get_text(f"{api}{accession}?start={start}&length={page_size}"))
        items = page.get("data") or []
        added = 0
        for item in items:
            path = item.get("path")
            if not path or path in seen:
                continue
            seen.add(path)
            added += 1
            if item.get("type") == "directory" or (include is not None and not fnmatch.fnmatch(path, include)):
                continue
            out.append(RemoteFile(path, f"{files_url}{accession}/{urllib.parse.quote(path)}", size=_size_bytes(item)))
            if max_files is not None and len(out) >= max_files:
                return out
        total = page.get("recordsFiltered", page.get("recordsTotal"))
        start += len(items)
        if not added or (total is not None and start >= int(total)):
            return out


# --------------------------------------------------------------------------- fetch / verify


def read_manifest(folder: Path, name: str = MANIFEST) -> dict[str, str]:
    """{relative path: sha256} from a ``sha256sum``-format file in ``folder``."""
    manifest = folder / name
    if not manifest.is_file():
        return {}
    entries = {}
    for line in manifest.read_text().splitlines():
        if line.strip():
            digest, _, path = line.partition("  ")
            entries[path.lstrip("*").removeprefix("./")] = digest
    return entries


def _write_manifest(folder: Path, entries: dict[str, str]) -> None:
    (folder / MANIFEST).write_text("".join(f"{d}  {p}\n" for p, d in sorted(entries.items())))


def resolve_files(source: Source, include: str | None = None, max_files: int | None = None,
                  accession: str | None = None) -> list[RemoteFile]:
    """The files ``fetch`` would download for these options."""
    include = include or source.default_include
    max_files = max_files if max_files is not None else source.default_max_files
    if source.biostudies:
        accession = accession or source.accession
        if not accession:
            raise FetchError(f"{source.name}: pass --accession S-BIAD... ({source.why})")
        return biostudies_files(accession, include, max_files)
    files = [f for f in source.files if include is None or fnmatch.fnmatch(f.path, include)]
    if source.tree_url:
        files += crawl_index(source.tree_url, include, None if max_files is None else max_files - len(files))
    return files[:max_files] if max_files is not None else files


def fetch(source: Source | str, root: str | Path, include: str | None = None, max_files: int | None = None,
          accession: str | None = None, progress: bool = True) -> list[Path]:
    """Download (resuming) the selected files of ``source`` into ``root/<name>/``; returns their paths.

    Digests: a published/declared sha256 is enforced; otherwise a digest recorded in
    ``SHA256SUMS`` by an earlier fetch is enforced; new files are recorded there.
    """
    source = SOURCES[source] if isinstance(source, str) else source
    folder = Path(root) / source.name
    folder.mkdir(parents=True, exist_ok=True)
    files = resolve_files(source, include, max_files, accession)
    if not files:
        raise FetchError(f"{source.name}: nothing matches (include={include or source.default_include!r})")
    destinations = [local_path(folder, item.path) for item in files]  # every name checked before any download
    recorded = read_manifest(folder)
    written = []
    for item, dest in zip(files, destinations):
        expected = item.sha256 or recorded.get(item.path)
        digest = download(item.url, dest, sha256=expected, size=item.size, progress=progress)
        recorded[item.path] = digest
        _write_manifest(folder, recorded)
        written.append(dest)
        if source.unzip and dest.suffix == ".zip":
            import zipfile

            with zipfile.ZipFile(dest) as archive:
                archive.extractall(folder / dest.stem)
    return written


def verify(source: Source | str, root: str | Path) -> list[str]:
    """Problems found (empty when every recorded/declared file is present with its sha256).

    ``source`` ``"root"`` checks the data root's own ``MANIFEST.sha256`` (the shared data's manifest).
    """
    if source == "root":
        folder = Path(root)
        expected = read_manifest(folder, "MANIFEST.sha256")
    else:
        source = SOURCES[source] if isinstance(source, str) else source
        folder = Path(root) / source.name
        expected = {**read_manifest(folder), **{f.path: f.sha256 for f in source.files if f.sha256}}
    if not expected:
        return [f"{folder}: nothing to verify (no checksum manifest; fetch first)"]
    problems = []
    for path, digest in sorted(expected.items()):
        try:
            target = local_path(folder, path)
        except UnsafePathError as exc:
            problems.append(f"{path}: {exc}")
            continue
        if not target.is_file():
            problems.append(f"{path}: missing")
        elif file_sha256(target) != digest:
            problems.append(f"{path}: sha256 mismatch")
    return problems


def default_root() -> Path:
    """The data root of :mod:`core.paths` (``$BIOCODEC_DATA_ROOT`` or ``../shared/data``)."""
    from core.paths import data_root

    return data_root()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.datasets", description="Fetch and verify source datasets")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="the known sources")
    for name in ("fetch", "verify"):
        p = sub.add_parser(name)
        p.add_argument("name", choices=sorted(SOURCES) + (["root"] if name == "verify" else []),
                       help="a source; for verify also 'root' (the data root's MANIFEST.sha256)")
        p.add_argument("--root", help="data root (default: the stages' data root, ../shared/data)")
        if name == "fetch":
            p.add_argument("--include", help="glob on the relative path, e.g. 'gray*' or 'Liver/*.svs'")
            p.add_argument("--max-files", type=int, help="fetch at most N files")
            p.add_argument("--accession", help="BioImage Archive accession (bia-* sources)")
            p.add_argument("--dry-run", action="store_true", help="list the files, download nothing")
            p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.command == "list":
        for source in SOURCES.values():
            print(f"{source.name}\n  {source.title}\n  licence: {source.licence}\n  why: {source.why}\n"
                  f"  checksums: {source.checksums}")
        return 0
    root = Path(args.root) if args.root else default_root()
    try:
        if args.command == "verify":
            problems = verify(args.name, root)
            for line in problems:
                print(line)
            print("OK" if not problems else f"{len(problems)} problem(s)")
            return 0 if not problems else 1
        if args.dry_run:
            for item in resolve_files(SOURCES[args.name], args.include, args.max_files, args.accession):
                print(f"{item.path}\t{item.size or '?'} bytes\t{item.url}")
            return 0
        paths = fetch(args.name, root, args.include, args.max_files, args.accession, progress=not args.quiet)
    except FetchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(paths)} file(s) in {root / args.name}")
    return 0
