"""The malformed-file corpus of issue #14, generated here (no committed binaries): decompression bombs,
lies in headers, truncation, stacks and odd layouts for every container core.io reads, with the outcome
of each case asserted — a refusal naming what is wrong, or the exact pixels."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

import core.io
from core.io import MAX_PIXELS, ImageReadError, read_image

ROOT = Path(__file__).resolve().parents[1]
RNG = np.random.default_rng(14)
GRAY8 = RNG.integers(0, 256, (37, 53), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (37, 53), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, (37, 53, 3), dtype=np.uint8)


def _refused(path, match, **kwargs) -> str:
    with pytest.raises(ImageReadError, match=match) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


# ============================================================================ generators
def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_claiming(width: int, height: int, colour_type: int = 0) -> bytes:
    """A PNG whose IHDR (CRC valid) claims width × height; one small IDAT follows."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", ihdr)]
    if colour_type == 3:
        chunks.append(_png_chunk(b"PLTE", bytes(range(6))))
    chunks += [_png_chunk(b"IDAT", zlib.compress(b"\0" * 1000)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _tiff(path: Path, data: np.ndarray, **kwargs) -> Path:
    tifffile.imwrite(path, data, **kwargs)
    return path


def _overwrite_tag(path: Path, tag: str, value, page: int = 0) -> None:
    with tifffile.TiffFile(path, mode="r+") as tif:
        tif.pages[page].tags[tag].overwrite(value)


def _pnm(magic: bytes, width, height, maxval, body: bytes = b"", comment: bytes = b"") -> bytes:
    return magic + b"\n" + comment + f"{width} {height}\n{maxval}\n".encode() + body


def _mrc(path: Path, data: np.ndarray) -> Path:
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(data)
    return path


def _patch_mrc_header(path: Path, **fields) -> None:
    """Overwrite int32 header words: nx (0), ny (1), nz (2), mode (3)."""
    words = {"nx": 0, "ny": 1, "nz": 2, "mode": 3}
    raw = bytearray(path.read_bytes())
    for name, value in fields.items():
        struct.pack_into("<i", raw, 4 * words[name], value)
    path.write_bytes(bytes(raw))


# ============================================================================ decompression bombs
def test_png_bomb_is_refused_from_ihdr_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_claiming(25_000, 25_000))
    assert path.stat().st_size < 200
    message = _refused(path, "header says 25000x25000 = 625000000 pixels, more than the 400000000-pixel limit")
    assert "refused before decoding" in message
    path.write_bytes(_png_claiming(40_000, 40_000, colour_type=3))  # palette PNGs go through Pillow
    _refused(path, "header says 40000x40000")
    path.write_bytes(_png_claiming(0, 10))
    _refused(path, r"header says the image is 0x10 .*sides must be >= 1")


def test_tiff_bomb_is_refused_from_its_tags(tmp_path):
    path = _tiff(tmp_path / "bomb.tif", GRAY8, photometric="minisblack", compression="zlib")
    _overwrite_tag(path, "ImageWidth", 30_000)
    _overwrite_tag(path, "ImageLength", 30_000)
    _refused(path, "header says 30000x30000 = 900000000 pixels")


def test_pgm_and_mrc_bombs_are_refused_from_their_headers(tmp_path):
    (tmp_path / "bomb.pgm").write_bytes(_pnm(b"P5", 100_000, 100_000, 255, b"\0" * 100))
    _refused(tmp_path / "bomb.pgm", "header says 100000x100000 = 10000000000 pixels")
    path = _mrc(tmp_path / "bomb.mrc", GRAY8.astype(np.int16))
    _patch_mrc_header(path, nx=50_000, ny=50_000)
    _refused(path, "header says 50000x50000 = 2500000000 pixels")


def test_jpeg_bomb_is_refused_by_our_limit_not_pillows(tmp_path):
    """A JPEG whose SOF claims 30000 × 20000 (600 Mpx): our one limit's message, before decoding (Pillow's own
    guard would say DecompressionBombError, and would refuse 180–400 Mpx images our limit accepts)."""
    data = bytearray(imagecodecs.jpeg8_encode(GRAY8, level=90))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 20_000, 30_000)  # height, width
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    message = _refused(tmp_path / "bomb.jpg", "header says 30000x20000 = 600000000 pixels")
    assert "DecompressionBomb" not in message


@pytest.mark.parametrize("suffix", ["png", "palette.png", "tif", "lzw.tif", "pgm", "plain.pgm", "ppm", "mrc",
                                    "jpg", "gif"])
def test_one_pixel_limit_for_every_format(tmp_path, monkeypatch, suffix):
    """Every reader checks core.io.MAX_PIXELS (patched to 1,000 here): 40×40 is refused, 30×30 read."""
    monkeypatch.setattr(core.io, "MAX_PIXELS", 1000)
    base = np.random.default_rng(40).integers(0, 256, (40, 40), dtype=np.uint8)
    for side, ok in ((40, False), (30, True)):
        gray = base[:side, :side].copy()
        path = tmp_path / f"{side}.{suffix}"
        if suffix == "png":
            path.write_bytes(imagecodecs.png_encode(gray))
        elif suffix == "palette.png":
            Image.fromarray(gray).convert("P").save(path)
        elif suffix == "tif":
            _tiff(path, gray, photometric="minisblack")
        elif suffix == "lzw.tif":
            _tiff(path, np.dstack([gray] * 3), photometric="rgb", compression="lzw")
        elif suffix == "pgm":
            path.write_bytes(_pnm(b"P5", side, side, 255, gray.tobytes()))
        elif suffix == "plain.pgm":
            path.write_bytes(_pnm(b"P2", side, side, 255, " ".join(map(str, gray.ravel())).encode()))
        elif suffix == "ppm":
            path.write_bytes(_pnm(b"P6", side, side, 255, np.dstack([gray] * 3).tobytes()))
        elif suffix == "mrc":
            _mrc(path, gray.astype(np.int16))
        elif suffix == "jpg":
            Image.fromarray(gray).save(path, quality=95)
        elif suffix == "gif":
            Image.fromarray(gray).save(path)
        if ok:
            image = read_image(path)
            assert image.pixels.shape[:2] == (side, side)
            if suffix in ("png", "tif", "pgm", "plain.pgm", "mrc"):
                assert np.array_equal(image.pixels, gray)
        else:
            _refused(path, f"header says 40x40 = 1600 pixels, more than the 1000-pixel limit")
    assert core.io.MAX_PIXELS == 1000 and MAX_PIXELS == 400_000_000


# ============================================================================ TIFF stacks and series
def test_one_page_of_a_stack_is_read_without_decoding_the_others(tmp_path):
    """Page 0's compressed data is destroyed: reading page 2 still works (page 0 is never decoded); page 0
    itself is refused; no page given says how many there are and how to choose."""
    stack = np.stack([GRAY8, GRAY8 // 2, GRAY8 // 3])
    path = _tiff(tmp_path / "stack.tif", stack, photometric="minisblack", compression="zlib")
    with tifffile.TiffFile(path) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    raw = bytearray(path.read_bytes())
    raw[offset:offset + count] = b"\xff" * count
    path.write_bytes(bytes(raw))
    assert np.array_equal(read_image(path, page=2).pixels, GRAY8 // 3)
    assert np.array_equal(read_image(path, page=1).pixels, GRAY8 // 2)
    _refused(path, "cannot read image", page=0)
    message = _refused(path, r"is a stack of 3 planes; pass page=0..2 \(python -m core.codecs compress --page N\)")
    _refused(path, "page 3 out of range 0..2", page=3)
    assert "--page" in message


def test_rgb_stack_and_100_pages(tmp_path):
    rgb = _tiff(tmp_path / "rgb.tif", np.stack([RGB8, RGB8[::-1]]), photometric="rgb")
    assert np.array_equal(read_image(rgb, page=1).pixels, RGB8[::-1])
    pages = np.stack([np.full((8, 9), i, np.uint8) for i in range(100)])
    many = _tiff(tmp_path / "many.tif", pages, photometric="minisblack", compression="zlib")
    assert np.array_equal(read_image(many, page=77).pixels, pages[77])
    _refused(many, "stack of 100 planes")
    _refused(_tiff(tmp_path / "single.tif", GRAY8, photometric="minisblack"), "single image, page 1 does not exist",
             page=1)


def test_multi_series_tiff_is_refused_not_read_as_one_image(tmp_path):
    path = tmp_path / "series.tif"
    with tifffile.TiffWriter(path) as tw:
        tw.write(GRAY8, photometric="minisblack")
        tw.write(RGB8[:20, :30], photometric="rgb")
    _refused(path, r"TIFF holds 2 image series \(\(37, 53\), \(20, 30, 3\)\); only single-series files are read")


# ============================================================================ TIFF tags that lie
@pytest.mark.parametrize("compression", [None, "lzw", "zlib", "packbits", "zstd"])
@pytest.mark.parametrize("bits", [8, 12])
def test_bits_per_sample_below_the_data_is_refused(tmp_path, compression, bits):
    """16-bit data tagged 8 or 12 bits per sample used to decode to garbage (tifffile drops the surplus)."""
    path = _tiff(tmp_path / "lie.tif", GRAY16, photometric="minisblack", compression=compression)
    _overwrite_tag(path, "BitsPerSample", bits)
    message = _refused(path, f"BitsPerSample says {bits} .*the tags disagree with the data")
    need = 37 * ((53 * bits + 7) // 8)  # one strip of 37 rows of 53 samples at the declared size
    if compression is None:  # ... and it holds 37 · 53 · 2 bytes
        assert f"needs {need} bytes, but it holds {37 * 53 * 2}" in message
    else:
        assert f"needs {need} bytes, but it decompresses to {37 * 53 * 2}" in message


def test_bits_per_sample_above_the_data_is_refused(tmp_path):
    for compression in (None, "lzw"):
        path = _tiff(tmp_path / f"lie16-{compression}.tif", GRAY8, photometric="minisblack", compression=compression)
        _overwrite_tag(path, "BitsPerSample", 16)
        _refused(path, "BitsPerSample says 16 .*the tags disagree with the data")


@pytest.mark.parametrize("kwargs", [
    {}, {"compression": "lzw"}, {"compression": "zlib", "predictor": True}, {"tile": (16, 16)},
    {"tile": (16, 16), "compression": "zlib"}, {"rowsperstrip": 7}, {"rowsperstrip": 7, "compression": "packbits"},
    {"planarconfig": "separate"}, {"compression": "zstd"},
])
def test_honest_tiff_layouts_are_read_exactly(tmp_path, kwargs):
    """The checks refuse lies, not layouts: strips, tiles, predictors, planar RGB read bit-exact."""
    rgb16 = RNG.integers(0, 65536, (50, 70, 3), dtype=np.uint16)
    data = np.moveaxis(rgb16, -1, 0) if kwargs.get("planarconfig") == "separate" else rgb16
    path = _tiff(tmp_path / "ok.tif", data, photometric="rgb", **kwargs)
    assert np.array_equal(read_image(path).pixels, rgb16)
    gray = _tiff(tmp_path / "gray.tif", GRAY16, photometric="minisblack", **{k: v for k, v in kwargs.items()
                                                                           if k != "planarconfig"})
    assert np.array_equal(read_image(gray).pixels, GRAY16)


def test_cmyk_miniswhite_and_odd_samples_say_what_they_are(tmp_path):
    cmyk = _tiff(tmp_path / "cmyk.tif", np.dstack([RGB8, GRAY8]), photometric="separated")
    message = _refused(cmyk, "CMYK")
    assert "alpha" not in message
    _refused(_tiff(tmp_path / "white.tif", GRAY8, photometric="miniswhite"), "MinIsWhite")
    five = _tiff(tmp_path / "five.tif", np.dstack([RGB8, GRAY8, GRAY8]), photometric="rgb",
                 extrasamples=["unspecified", "unspecified"])
    _refused(five, "5 samples per pixel")
    extra = _tiff(tmp_path / "extra.tif", np.dstack([RGB8, GRAY8]), photometric="rgb", extrasamples=["unspecified"])
    _refused(extra, "fourth sample that is not alpha")
    rgba = _tiff(tmp_path / "rgba.tif", np.dstack([RGB8, np.full(GRAY8.shape, 255, np.uint8)]), photometric="rgb",
                 extrasamples=["unassalpha"])
    assert np.array_equal(read_image(rgba).pixels, RGB8)
    translucent = _tiff(tmp_path / "alpha.tif", np.dstack([RGB8, GRAY8]), photometric="rgb",
                        extrasamples=["unassalpha"])
    _refused(translucent, "non-opaque alpha")


def test_odd_types_and_wrong_extensions(tmp_path):
    _refused(_tiff(tmp_path / "neg.tif", GRAY8.astype(np.int32) - 1, photometric="minisblack"), "outside 0..65535")
    _refused(_tiff(tmp_path / "float.tif", GRAY8.astype(np.float32), photometric="minisblack"), "floating-point")
    (tmp_path / "png.tif").write_bytes(imagecodecs.png_encode(GRAY8))
    _refused(tmp_path / "png.tif", "cannot read image .*TiffFileError")
    _tiff(tmp_path / "tif.png", GRAY8, photometric="minisblack")  # a TIFF named .png
    _refused(tmp_path / "tif.png", "not a PNG file")
    (tmp_path / "png.pgm").write_bytes(imagecodecs.png_encode(GRAY8))
    _refused(tmp_path / "png.pgm", "not a PGM/PPM file")
    (tmp_path / "empty.mrc").write_bytes(b"")
    _refused(tmp_path / "empty.mrc", "cannot read image|not an MRC")


# ============================================================================ PGM / PPM
@pytest.mark.parametrize("header,body,match", [
    ((b"P5", -1, 1000, 255), b"\0" * 1000, "header width is '-1', not a positive integer"),
    ((b"P5", 10, -5, 255), b"\0" * 50, "header height is '-5', not a positive integer"),
    ((b"P5", 0, 10, 255), b"", r"header says the image is 0x10 .*sides must be >= 1"),
    ((b"P5", 10, 0, 255), b"", r"header says the image is 10x0"),
    ((b"P5", 10, 10, 0), b"\0" * 100, "header maxval is 0; it must be 1..65535"),
    ((b"P5", 10, 10, 70000), b"\0" * 400, "header maxval is 70000; it must be 1..65535"),
    ((b"P5", 10, 10, "1e3"), b"\0" * 200, "header maxval is '1e3', not a positive integer"),
    ((b"P5", 10, 10, 100), bytes([200]) + b"\0" * 99, "a sample is 200, above the header's maxval 100"),
    ((b"P5", 10, 10, 1000), b"\x03\xe9" + b"\0" * 198, "a sample is 1001, above the header's maxval 1000"),
    ((b"P5", 10, 10, 255), b"\0" * 60, "file is truncated: header says 100 bytes of data, file has 60"),
    ((b"P6", 10, 10, 65535), b"\0" * 599, "file is truncated: header says 600 bytes of data, file has 599"),
    ((b"P2", 3, 2, 255), b"1 2 3 4 5", "file is truncated: header says 6 samples, file has 5"),
    ((b"P2", 3, 2, 9), b"1 2 3 4 5 10", "a sample is 10, above the header's maxval 9"),
    ((b"P4", 8, 8, 1), b"\0" * 8, "1-bit"),
])
def test_malformed_pgm_ppm_is_refused_with_the_reason(tmp_path, header, body, match):
    magic, width, height, maxval = header
    path = tmp_path / "bad.pgm"
    path.write_bytes(_pnm(magic, width, height, maxval, body))
    _refused(path, match)


def test_truncated_pgm_header(tmp_path):
    (tmp_path / "h.pgm").write_bytes(b"P5\n10")
    _refused(tmp_path / "h.pgm", r"truncated in its header \(missing height\)")
    (tmp_path / "h2.pgm").write_bytes(b"P5\n10 10\n255")
    _refused(tmp_path / "h2.pgm", "truncated after its header")


def test_valid_pgm_ppm_variants_read_exactly(tmp_path):
    path = tmp_path / "c.pgm"
    path.write_bytes(_pnm(b"P5", 53, 37, 255, GRAY8.tobytes(), comment=b"# a comment\n"))
    assert np.array_equal(read_image(path).pixels, GRAY8)
    path.write_bytes(_pnm(b"P5", 53, 37, 65535, GRAY16.astype(">u2").tobytes()))
    assert np.array_equal(read_image(path).pixels, GRAY16)
    path.write_bytes(_pnm(b"P2", 53, 37, 65535, " ".join(map(str, GRAY16.ravel())).encode()))
    assert np.array_equal(read_image(path).pixels, GRAY16)
    path = tmp_path / "c.ppm"
    path.write_bytes(_pnm(b"P3", 53, 37, 255, "\n".join(map(str, RGB8.ravel())).encode()))
    assert np.array_equal(read_image(path).pixels, RGB8)
    _refused(path, "single image, page 1 does not exist", page=1)


# ============================================================================ MRC
def test_truncated_mrc_says_how_much_is_missing(tmp_path):
    path = _mrc(tmp_path / "t.mrc", np.stack([GRAY8.astype(np.int16)] * 2))
    path.write_bytes(path.read_bytes()[:-1000])
    need = 2 * 37 * 53 * 2
    _refused(path, f"file is truncated: header says {need} bytes of data, file has {need - 1000}")


def test_mrc_header_fields_and_stacks(tmp_path):
    stack = np.stack([GRAY8.astype(np.int16), (GRAY8 // 2).astype(np.int16), (GRAY8 // 3).astype(np.int16)])
    path = _mrc(tmp_path / "s.mrc", stack)
    assert np.array_equal(read_image(path, page=2).pixels, GRAY8 // 3)
    _refused(path, "stack of 3 planes; pass page=0..2")
    _patch_mrc_header(path, nz=-3)
    _refused(path, "nz = -3")
    path = _mrc(tmp_path / "c.mrc", np.zeros((4, 4), np.complex64))
    _refused(path, "complex data")
    path = _mrc(tmp_path / "m.mrc", GRAY8.astype(np.int16))
    _patch_mrc_header(path, mode=99)
    _refused(path, "MRC mode 99 is not supported")
    _refused(_mrc(tmp_path / "f.mrc", GRAY8.astype(np.float32)), "floating-point")
    assert np.array_equal(read_image(_mrc(tmp_path / "u.mrc", GRAY16)).pixels, GRAY16)


# ============================================================================ the file CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core.codecs", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={"PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"})


def test_cli_reads_a_page_of_a_stack_and_refuses_bombs_in_one_line(tmp_path):
    stack = _tiff(tmp_path / "stack.tif", np.stack([GRAY8, GRAY8 // 2]), photometric="minisblack")
    proc = _cli("compress", stack, tmp_path / "s.bcc", "--codec", "png")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--page N" in proc.stderr, proc.stderr
    proc = _cli("compress", stack, tmp_path / "s.bcc", "--codec", "png", "--page", "1")
    assert proc.returncode == 0, proc.stderr
    assert _cli("decompress", tmp_path / "s.bcc", tmp_path / "s.png").returncode == 0
    assert np.array_equal(read_image(tmp_path / "s.png").pixels, GRAY8 // 2)
    (tmp_path / "bomb.png").write_bytes(_png_claiming(25_000, 25_000))
    proc = _cli("compress", tmp_path / "bomb.png", tmp_path / "b.bcc", "--codec", "png")
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
    assert "400000000-pixel limit" in proc.stderr and "Traceback" not in proc.stderr


def test_a_callers_side_limit_is_checked_from_the_header(tmp_path):
    """read_image(max_side=) / read_image_bytes(max_side=): an upload limit refused before decoding (a 40000²
    PNG of 200 bytes is refused by its IHDR, not after a 1.6 GB decode)."""
    from core.io import read_image_bytes

    bomb = _png_claiming(40_000, 40_000)
    with pytest.raises(ImageReadError, match="header says 40000x40000 pixels; sides are limited to 4096 px"):
        read_image_bytes(bomb, "upload.png", max_side=4096)
    wide = imagecodecs.png_encode(np.zeros((2, 4097), np.uint8))
    with pytest.raises(ImageReadError, match="sides are limited to 4096 px"):
        read_image_bytes(wide, "wide.png", max_side=4096)
    assert read_image_bytes(wide, "wide.png").width == 4097  # the limit is per call
    assert read_image_bytes(wide, "wide.png", max_side=4097).width == 4097
    path = _tiff(tmp_path / "s.tif", np.stack([GRAY8, GRAY8]), photometric="minisblack")
    with pytest.raises(ImageReadError, match="limited to 50 px"):
        read_image(path, page=1, max_side=50)
    assert read_image(path, page=1, max_side=53).width == 53
