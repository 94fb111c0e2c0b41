"""Image I/O with an explicit bit depth.

Every image in the product is a :class:`BioImage`: a ``uint8`` or ``uint16``
array of shape ``(H, W)`` (grayscale) or ``(H, W, 3)`` (RGB) plus the number of
significant bits per sample (``bit_depth``).  Rules, applied by :func:`read_image`:

* ``uint8`` data is 8-bit; ``uint16`` data is 16-bit unless the caller declares
  fewer bits (e.g. ``bit_depth=12`` for 12-bit camera data in a 16-bit
  container).  A declared depth is checked against the data; it is never guessed.
* Other integer types are accepted only when their values fit in 16 bits
  (``int16``/``int32``/``uint32`` MRC/TIFF data with non-negative values is
  converted to ``uint16``); negative values or values above 65535 are an error.
  Float and boolean data are an error (no silent rescaling).
* RGBA / LA: the alpha channel is dropped only if it is fully opaque;
  otherwise an error.  Palette (indexed) PNG/TIFF/GIF is expanded to RGB.
  A grayscale image stored as RGB with three identical channels stays RGB
  (we do not change the channel count behind the user's back).
* Stacks (multi-page TIFF, 3-D MRC) need an explicit ``page=`` (``--page`` in the file
  CLI); without it the error says how many pages there are.  Only the chosen page is
  decoded.  A TIFF with several image series is refused (not read as one image).
* Other channel counts (2, 4+ without alpha) are an error.

Safety (issue #14): every reader takes the image size from the file's header (PNG IHDR,
TIFF tags, PGM/PPM header, MRC header, Pillow's lazily parsed JPEG/GIF/BMP header) and
refuses more than :data:`MAX_PIXELS` pixels (or a side < 1) *before* decoding, so a small
file claiming a huge image allocates nothing.  Headers that disagree with the data are
refused with what is wrong: TIFF BitsPerSample vs the bytes in its strips/tiles, PGM/PPM
fields (non-numeric/negative/zero sides, maxval outside 1..65535, samples above maxval,
"file is truncated: header says N bytes of data, file has M"), MRC data shorter than its
header says, CMYK / MinIsWhite / non-alpha extra samples in TIFF.

Supported containers: PNG, TIFF (incl. LZW, via tifffile + imagecodecs),
PGM/PPM (binary and plain), JPEG, MRC (EM; via mrcfile).
"""
from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Largest file the readers accept, in bytes (guards uploads and stray files).
MAX_FILE_BYTES = 2 * 1024**3
#: Largest image the readers accept, in pixels (H·W).
MAX_PIXELS = 400_000_000

SUPPORTED_SUFFIXES = (".png", ".tif", ".tiff", ".pgm", ".ppm", ".pnm", ".jpg", ".jpeg", ".mrc", ".mrcs", ".map")


class ImageReadError(ValueError):
    """An image could not be read, or breaks the bit-depth/channel rules."""


@dataclass(frozen=True)
class BioImage:
    """A 2-D grayscale or RGB image with an explicit bit depth.

    ``pixels`` is ``uint8`` (bit_depth 8) or ``uint16`` (bit_depth 9–16),
    shape ``(H, W)`` or ``(H, W, 3)``.
    """

    pixels: np.ndarray
    bit_depth: int
    name: str = ""
    meta: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        validate_pixels(self.pixels, self.bit_depth)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def channels(self) -> int:
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])

    @property
    def max_value(self) -> int:
        """Peak value of the bit depth, 2**bit_depth − 1 (the MAX of PSNR)."""
        return (1 << self.bit_depth) - 1


def validate_pixels(pixels: np.ndarray, bit_depth: int) -> None:
    """Raise :class:`ImageReadError` unless ``pixels``/``bit_depth`` follow the module's rules."""
    if not isinstance(pixels, np.ndarray):
        raise ImageReadError(f"expected a numpy array, got {type(pixels).__name__}")
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] != 3):
        raise ImageReadError(f"expected shape (H, W) or (H, W, 3), got {pixels.shape}")
    if pixels.dtype == np.uint8:
        if bit_depth != 8:
            raise ImageReadError(f"uint8 data must have bit_depth 8, got {bit_depth}")
    elif pixels.dtype == np.uint16:
        if not 9 <= bit_depth <= 16:
            raise ImageReadError(f"uint16 data must have bit_depth 9..16, got {bit_depth}")
    else:
        raise ImageReadError(f"pixels must be uint8 or uint16, got {pixels.dtype}")
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise ImageReadError(f"empty image {pixels.shape}")


def as_bioimage(pixels: np.ndarray, bit_depth: int | None = None, name: str = "") -> BioImage:
    """Wrap an in-memory array after applying the dtype/bit-depth rules of this module."""
    pixels = _normalise_dtype(np.asarray(pixels), name)
    pixels = _normalise_channels(pixels, name)
    return BioImage(np.ascontiguousarray(pixels), _resolve_bit_depth(pixels, bit_depth, name), name)


def read_image(path: str | Path, bit_depth: int | None = None, page: int | None = None,
               max_side: int | None = None) -> BioImage:
    """Read ``path`` into a :class:`BioImage`.

    ``bit_depth`` declares the significant bits of 16-bit data (e.g. 12); it is
    checked against the maximum value.  ``page`` selects one plane of a stack.
    ``max_side`` (e.g. an upload limit) refuses longer sides from the header, before
    decoding, like :data:`MAX_PIXELS`.
    """
    token = _MAX_SIDE.set(max_side)
    try:
        return _read_image(Path(path), bit_depth, page)
    finally:
        _MAX_SIDE.reset(token)


def _read_image(path: Path, bit_depth: int | None, page: int | None) -> BioImage:
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageReadError(f"{path}: {size} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
    suffix = path.suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            pixels = _read_tiff(path, page)
        elif suffix in (".mrc", ".mrcs", ".map"):
            pixels = _read_mrc(path, page)
        elif suffix == ".png":
            pixels = _read_png(path)
        elif suffix in (".pgm", ".ppm", ".pnm"):
            pixels = _read_netpbm(path, page)
        elif suffix in (".jpg", ".jpeg", ".gif", ".bmp"):
            pixels = _read_pillow(path, page)
        else:
            raise ImageReadError(f"{path}: unsupported file type {suffix!r} (supported: {', '.join(SUPPORTED_SUFFIXES)})")
    except ImageReadError:
        raise
    except Exception as exc:  # corrupt or truncated file
        raise ImageReadError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    where = str(path)  # messages name the file; the image keeps its stem as name
    pixels = _normalise_channels(_normalise_dtype(np.asarray(pixels), where), where)
    return BioImage(np.ascontiguousarray(pixels), _resolve_bit_depth(pixels, bit_depth, where), path.stem)


def read_label(path: str | Path) -> np.ndarray:
    """The integer array stored in a label or mask file: 2-D ``uint8``/``uint16``, values as stored.

    Read by :func:`read_image` (same containers and rules: an LA file's alpha is dropped only when
    it is fully opaque, otherwise an error); a label must have one channel, so RGB (and palette
    files, which :func:`read_image` expands to RGB) are an :class:`ImageReadError`.
    """
    pixels = read_image(path).pixels
    if pixels.ndim != 2:
        raise ImageReadError(f"{path}: a label/mask file must have one channel, got shape {pixels.shape}")
    return pixels


def read_image_bytes(data: bytes, name: str, bit_depth: int | None = None, page: int | None = None,
                     max_side: int | None = None) -> BioImage:
    """Read an image from an in-memory file (an upload); ``name`` gives the suffix; ``max_side`` as in
    :func:`read_image` (checked from the header, before decoding)."""
    import tempfile

    if len(data) > MAX_FILE_BYTES:
        raise ImageReadError(f"{name}: {len(data)} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
    suffix = Path(name).suffix.lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        image = read_image(path, bit_depth=bit_depth, page=page, max_side=max_side)
    return BioImage(image.pixels, image.bit_depth, Path(name).stem)


def png_bound(pixels: np.ndarray) -> int:
    """An output-buffer size no PNG encoding of ``pixels`` exceeds, in bytes.

    libpng stores each row with a filter byte, so incompressible data (noise) grows: a 300 × 1 noise image
    is 600 bytes of rows, twice its pixels, and imagecodecs' default buffer ("output stream too small") is
    sized for the pixels.  Bound: the filtered rows, plus deflate's stored-block overhead (5 bytes per
    16 KiB), the IDAT chunk headers (12 bytes per 8 KiB) and the signature/IHDR/IEND — all inside
    rows / 32 + 64 KiB.
    """
    height, width = pixels.shape[:2]
    rows = height * (1 + width * (pixels.shape[2] if pixels.ndim == 3 else 1) * pixels.dtype.itemsize)
    return rows + rows // 32 + 65536


def encode_png(pixels: np.ndarray, **kwargs) -> bytes:
    """PNG bytes of ``pixels`` (libpng through imagecodecs, 8/16-bit), with an output buffer sized by
    :func:`png_bound` so that incompressible images encode too; ``kwargs`` go to ``png_encode``."""
    import imagecodecs

    return bytes(imagecodecs.png_encode(pixels, out=png_bound(pixels), **kwargs))


def write_image(path: str | Path, image: BioImage) -> None:
    """Write losslessly: ``.png`` (8/16-bit) or ``.tif``; 16-bit stays 16-bit."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".png":
        path.write_bytes(encode_png(image.pixels))
    elif suffix in (".tif", ".tiff"):
        import tifffile

        tifffile.imwrite(path, image.pixels, photometric="rgb" if image.channels == 3 else "minisblack",
                         metadata={"bit_depth": image.bit_depth})
    else:
        raise ImageReadError(f"{path}: write supports .png and .tif")


# --------------------------------------------------------------------------- readers
#
# Every reader learns the image's size from the file's *header* (PNG IHDR, TIFF tags, the PGM/PPM
# header, the MRC header, Pillow's lazily parsed header) and calls :func:`_check_size` before any pixel
# data is decoded, so a small file that claims a huge image (a decompression bomb) is refused without
# allocating it.  A stack is never decoded whole to pick one plane.


#: The caller's side limit for the read in progress (:func:`read_image`'s ``max_side``).
_MAX_SIDE: ContextVar[int | None] = ContextVar("max_side", default=None)


def _check_size(path: Path, height: int, width: int, what: str = "image") -> None:
    """Refuse a header's size before decoding: sides must be >= 1 and H·W at most :data:`MAX_PIXELS`
    (and sides at most the caller's ``max_side``)."""
    if height < 1 or width < 1:
        raise ImageReadError(f"{path}: header says the {what} is {width}x{height} (width x height); "
                             "sides must be >= 1")
    max_side = _MAX_SIDE.get()
    if max_side is not None and max(height, width) > max_side:
        raise ImageReadError(f"{path}: header says {width}x{height} pixels; sides are limited to {max_side} px "
                             "here (refused before decoding)")
    if height * width > MAX_PIXELS:
        raise ImageReadError(f"{path}: header says {width}x{height} = {height * width} pixels, more than the "
                             f"{MAX_PIXELS}-pixel limit (refused before decoding)")


def _stack_message(what: str, count: int) -> str:
    return (f"{what} is a stack of {count} planes; pass page=0..{count - 1} "
            "(python -m core.codecs compress --page N)")


def _check_page(what: str, page: int | None, count: int) -> int:
    """The plane to read from a stack of ``count`` planes (``page`` must be given when there are several)."""
    if count > 1 and page is None:
        raise ImageReadError(_stack_message(what, count))
    page = 0 if page is None else int(page)
    if not 0 <= page < count:
        raise ImageReadError(f"{what}: page {page} out of range 0..{count - 1}" if count > 1
                             else f"{what}: single image, page {page} does not exist")
    return page


# ------------------------------------------------------------------ TIFF
_TIFF_PHOTOMETRIC_OK = ("MINISBLACK", "RGB", "PALETTE", "YCBCR")


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    """One plane of a single-series TIFF, sized from its tags and checked against its strips/tiles.

    A file with several image series (e.g. images of different shapes, or a pyramid written as separate
    series) is refused: it is not one image and we do not guess which one is meant.  Only the requested
    page is decoded.
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if len(tif.series) > 1:
            shapes = ", ".join(f"{tuple(s.shape)}" for s in tif.series[:5]) + (", ..." if len(tif.series) > 5 else "")
            raise ImageReadError(f"{path}: TIFF holds {len(tif.series)} image series ({shapes}); only single-series "
                                 "files are read (split it into one file per series)")
        if not tif.series:
            raise ImageReadError(f"{path}: TIFF holds no image")
        series = tif.series[0]
        key = series.keyframe
        _check_size(path, int(key.imagelength), int(key.imagewidth))
        photometric = key.photometric.name if hasattr(key.photometric, "name") else str(key.photometric)
        spp = int(key.samplesperpixel)
        if photometric == "SEPARATED":
            raise ImageReadError(f"{path}: CMYK (separated) TIFF is not supported; convert it to RGB first")
        if photometric == "MINISWHITE":
            raise ImageReadError(f"{path}: MinIsWhite (inverted grayscale) TIFF is not supported; "
                                 "store it as MinIsBlack")
        if photometric not in _TIFF_PHOTOMETRIC_OK:
            raise ImageReadError(f"{path}: TIFF photometric interpretation {photometric} is not supported "
                                 "(grayscale, RGB or palette only)")
        if spp > 4:
            raise ImageReadError(f"{path}: TIFF has {spp} samples per pixel (1, 3, or 2/4 with alpha supported)")
        if int(getattr(key, "imagedepth", 1) or 1) > 1:
            raise ImageReadError(f"{path}: TIFF holds a 3-D volume in one page (ImageDepth "
                                 f"{key.imagedepth}); not supported")
        if photometric == "RGB" and spp == 4 and tuple(key.extrasamples or ()) not in ((1,), (2,)):
            raise ImageReadError(f"{path}: RGB TIFF with a fourth sample that is not alpha "
                                 f"(ExtraSamples {tuple(key.extrasamples or ())}); not supported")
        plane = int(key.imagelength) * int(key.imagewidth) * spp
        count = max(1, int(series.size) // plane) if plane else 1
        page = _check_page(str(path), page, count)
        target = series.pages[page] if count > 1 else key  # a TiffPage or TiffFrame (tags from the keyframe)
        if target is None or not getattr(target, "dataoffsets", None):
            raise ImageReadError(f"{path}: page {page} has no image data in the file")
        _check_tiff_segments(path, tif, key, target.dataoffsets, target.databytecounts)
        if photometric == "PALETTE":
            from PIL import Image

            with Image.open(path) as im:
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(page)
                return np.asarray(im.convert("RGB"))
        arr = series.asarray(key=page) if count > 1 else target.asarray()
    if key.planarconfig == tifffile.PLANARCONFIG.SEPARATE and spp > 1 and arr.ndim == 3 and arr.shape[0] == spp:
        arr = np.moveaxis(arr, 0, -1)
    return arr


def _check_tiff_segments(path: Path, tif, page, offsets, bytecounts) -> None:
    """Refuse a page whose BitsPerSample (or size tags) disagree with the data in its strips or tiles.

    ``page`` gives the tags (the series' keyframe), ``offsets``/``bytecounts`` the segments of the page read.

    Uncompressed: each strip/tile must hold exactly the bytes its rows need at the declared sample size.
    Compressed with a lossless byte codec (LZW, Deflate, PackBits, ...): the first and the last segment are
    decompressed into a buffer of twice a whole segment and must fill exactly what they need (tifffile itself
    decodes into a buffer of the declared size and silently drops the rest: 16-bit data tagged 8 or 12 bits
    read as garbage).  Image codecs inside TIFF (JPEG, ...) carry their own sample size and are left to the
    library.  Tiles may not exceed four times the image (or 1024², whichever is larger).
    """
    import tifffile

    bps = int(page.bitspersample)
    spp = int(page.samplesperpixel)
    separate = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE
    samples = 1 if separate else spp
    height, width = int(page.imagelength), int(page.imagewidth)
    if page.is_tiled:
        tile_h, tile_w = int(page.tilelength), int(page.tilewidth)
        if tile_h < 1 or tile_w < 1 or tile_h * tile_w > max(4 * height * width, 1 << 20):
            raise ImageReadError(f"{path}: TIFF tile size {tile_w}x{tile_h} is invalid for a {width}x{height} image")
        full = tile_h * ((tile_w * samples * bps + 7) // 8)
        needs = [full] * len(offsets)
    else:
        rows = min(int(page.rowsperstrip or height), height) or height
        row_bytes = (width * samples * bps + 7) // 8
        per_plane = [min(rows, height - y) * row_bytes for y in range(0, height, rows)]
        needs = per_plane * (spp if separate else 1)
        full = rows * row_bytes
    if len(needs) != len(offsets) or len(offsets) != len(bytecounts):
        raise ImageReadError(f"{path}: TIFF page has {len(offsets)} strips/tiles, its size tags need {len(needs)}")
    compression = int(page.compression)
    what = f"BitsPerSample says {bps}"
    if compression == 1:  # uncompressed: the byte counts alone tell
        for i, (have, need) in enumerate(zip(bytecounts, needs)):
            if have != need and not (have == full and i == len(needs) - 1):
                raise ImageReadError(f"{path}: {what} ({samples} sample(s) of {width} px per row), so strip/tile {i} "
                                     f"needs {need} bytes, but it holds {have}: the tags disagree with the data")
        return
    if compression not in (5, 8, 32946, 32773, 50000, 34925):  # LZW, Deflate, PackBits, ZSTD, LZMA
        return
    try:
        decompress = tifffile.TIFF.DECOMPRESSORS[compression]
    except (KeyError, ValueError):
        return
    fh = tif.filehandle
    last = len(needs) - 1
    for i, (offset, count, need) in enumerate(zip(offsets, bytecounts, needs)):
        if not count or i not in (0, last):  # a lie about the sample size shows in every segment alike
            continue
        fh.seek(offset)
        data = fh.read(count)
        limit = 2 * full + 1  # bounded: twice a whole segment shows a lie and cannot exhaust memory
        try:
            have = len(decompress(data, out=limit))
        except Exception as exc:  # corrupt, or larger than twice a segment (some decoders raise when full)
            raise ImageReadError(f"{path}: cannot read image (strip/tile {i} does not decompress into "
                                 f"{limit} bytes: {type(exc).__name__})") from None
        if have != need and have != full:
            found = str(have) if have < limit else f"more than {limit - 1}"
            raise ImageReadError(f"{path}: {what} ({samples} sample(s) of {width} px per row), so strip/tile {i} "
                                 f"needs {need} bytes, but it decompresses to {found}: the tags disagree with "
                                 "the data (or the data is corrupt)")


# ------------------------------------------------------------------ MRC
def _read_mrc(path: Path, page: int | None) -> np.ndarray:
    """One section of an MRC file: size and data length checked from the 1024-byte header first."""
    import warnings

    import mrcfile
    from mrcfile.utils import dtype_from_mode

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # permissive mode warns about odd headers; what matters is checked below
        with mrcfile.open(path, permissive=True, header_only=True) as mrc:
            header = mrc.header
            if header is None:
                raise ImageReadError(f"{path}: not an MRC file (no header)")
            nx, ny, nz, mode = int(header.nx), int(header.ny), int(header.nz), int(header.mode)
            extended = int(header.nsymbt)
    _check_size(path, ny, nx, "MRC section")
    if nz < 1:
        raise ImageReadError(f"{path}: MRC header says nz = {nz} sections (must be >= 1)")
    try:
        dtype = dtype_from_mode(mode)
    except ValueError:
        raise ImageReadError(f"{path}: MRC mode {mode} is not supported") from None
    if mode == 101:
        raise ImageReadError(f"{path}: MRC mode 101 (4-bit packed) is not supported")
    if dtype.kind == "c":
        raise ImageReadError(f"{path}: MRC mode {mode} holds complex data ({dtype}), not an image")
    if extended < 0:
        raise ImageReadError(f"{path}: MRC header says the extended header is {extended} bytes")
    need = nx * ny * nz * dtype.itemsize
    have = path.stat().st_size - 1024 - extended
    if have < need:
        raise ImageReadError(f"{path}: file is truncated: header says {need} bytes of data, file has {max(have, 0)}")
    page = _check_page(str(path), page, nz)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with mrcfile.mmap(path, mode="r", permissive=True) as mrc:  # memory-mapped: only one section is read
            data = mrc.data
            if data is None:
                raise ImageReadError(f"{path}: MRC file holds no data")
            return np.array(data.reshape(-1, ny, nx)[page])


# ------------------------------------------------------------------ PNG
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _read_png(path: Path) -> np.ndarray:
    """PNG through libpng (imagecodecs): Pillow truncates 16-bit RGB PNGs to 8 bits.  Size from IHDR."""
    import imagecodecs

    data = path.read_bytes()
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 33:
        raise ImageReadError(f"{path}: cannot read image (not a PNG file: no signature and IHDR chunk)")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    _check_size(path, height, width)
    colour_type = data[25]
    if colour_type == 3:  # palette: expand through Pillow (8-bit by definition)
        return _read_pillow(path, None)
    try:
        return imagecodecs.png_decode(data)
    except Exception as exc:  # libpng's messages on garbage are themselves garbage: keep only the type
        raise ImageReadError(f"{path}: cannot read image (corrupt or truncated PNG: {type(exc).__name__})") from None


# ------------------------------------------------------------------ PGM / PPM
def _netpbm_header(path: Path, data: bytes) -> tuple[bytes, int, int, int, int]:
    """(magic, width, height, maxval, offset of the raster) of a PGM/PPM/PBM header, every field checked."""
    magic = data[:2]
    if magic not in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6"):
        raise ImageReadError(f"{path}: not a PGM/PPM file (magic {magic!r}; expected P2/P3/P5/P6)")
    if magic in (b"P1", b"P4"):
        raise ImageReadError(f"{path}: 1-bit (PBM) images are not supported")
    names = ("width", "height", "maxval")
    tokens, pos = [], 2
    while len(tokens) < 3:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            end = data.find(b"\n", pos)
            if end < 0:
                break
            pos = end + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace() and data[pos:pos + 1] != b"#":
            pos += 1
        if start == pos:
            break
        token = data[start:pos]
        if not token.isdigit():
            raise ImageReadError(f"{path}: header {names[len(tokens)]} is {token[:20].decode('latin-1')!r}, "
                                 "not a positive integer")
        tokens.append(int(token))
    if len(tokens) < 3:
        raise ImageReadError(f"{path}: file is truncated in its header (missing {names[len(tokens)]})")
    width, height, maxval = tokens
    _check_size(path, height, width)
    if not 1 <= maxval <= 65535:
        raise ImageReadError(f"{path}: header maxval is {maxval}; it must be 1..65535")
    if pos >= len(data) or not data[pos:pos + 1].isspace():
        raise ImageReadError(f"{path}: file is truncated after its header")
    return magic, width, height, maxval, pos + 1


def _read_netpbm(path: Path, page: int | None) -> np.ndarray:
    """PGM/PPM, binary (P5/P6) or plain (P2/P3); maxval > 255 means 16-bit samples (big-endian in binary
    files; Pillow would truncate them).  Header fields, data length and every sample (<= maxval) checked."""
    data = path.read_bytes()
    magic, width, height, maxval, offset = _netpbm_header(path, data)
    _check_page(str(path), page, 1)
    channels = 3 if magic in (b"P3", b"P6") else 1
    count = width * height * channels
    if magic in (b"P5", b"P6"):
        dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
        need, have = count * dtype.itemsize, len(data) - offset
        if have < need:
            raise ImageReadError(f"{path}: file is truncated: header says {need} bytes of data, file has {have}")
        body = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    else:
        text = b" ".join(line.split(b"#", 1)[0] for line in data[offset:].splitlines())
        fields = text.split()
        if len(fields) < count:
            raise ImageReadError(f"{path}: file is truncated: header says {count} samples, file has {len(fields)}")
        if not all(f.isdigit() for f in fields[:count]):
            raise ImageReadError(f"{path}: plain PGM/PPM samples must be non-negative integers")
        body = np.array([int(f) for f in fields[:count]], dtype=np.int64)
    peak = int(body.max())
    if peak > maxval:
        raise ImageReadError(f"{path}: a sample is {peak}, above the header's maxval {maxval}")
    shape = (height, width, channels) if channels == 3 else (height, width)
    return body.reshape(shape).astype(np.uint16 if maxval > 255 else np.uint8)


# ------------------------------------------------------------------ Pillow (JPEG, GIF, BMP)
def _read_pillow(path: Path, page: int | None) -> np.ndarray:
    from PIL import Image

    # One limit: Pillow's own bomb guard (a warning above MAX_IMAGE_PIXELS, DecompressionBombError above twice
    # that; default 179 Mpx) would refuse images below ours and print a warning to the CLI's stderr.  Opening
    # parses only the header; the size is checked against MAX_PIXELS right after, before anything is decoded.
    Image.MAX_IMAGE_PIXELS = None
    with Image.open(path) as im:
        _check_size(path, im.height, im.width)
        n_frames = getattr(im, "n_frames", 1)
        page = _check_page(str(path), page, n_frames)
        if page:
            im.seek(page)
            _check_size(path, im.height, im.width)
        if im.mode in ("P", "PA"):
            im = im.convert("RGBA" if im.mode == "PA" or "transparency" in im.info else "RGB")
        if im.mode in ("I;16", "I;16B", "I;16L"):
            return np.asarray(im).astype(np.uint16)
        if im.mode == "I":  # 16-bit PNG/PGM are opened as 32-bit "I" by some Pillow paths
            return np.asarray(im)
        if im.mode == "1":
            raise ImageReadError(f"{path}: 1-bit (binary) images are not supported")
        if im.mode == "CMYK":
            raise ImageReadError(f"{path}: CMYK images are not supported; convert to RGB first")
        return np.asarray(im)


# --------------------------------------------------------------------------- rules


def _normalise_dtype(pixels: np.ndarray, name: str) -> np.ndarray:
    if pixels.dtype in (np.uint8, np.uint16):
        return pixels
    if pixels.dtype == bool:
        raise ImageReadError(f"{name}: boolean (mask) data is not an image; convert it explicitly")
    if np.issubdtype(pixels.dtype, np.floating):
        raise ImageReadError(f"{name}: floating-point data ({pixels.dtype}) has no bit depth; "
                             "quantise it to uint8/uint16 first")
    if np.issubdtype(pixels.dtype, np.integer):
        lo, hi = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ImageReadError(f"{name}: {pixels.dtype} values span {lo}..{hi}, outside 0..65535")
        return pixels.astype(np.uint8 if hi <= 255 and pixels.dtype.itemsize == 1 else np.uint16)
    raise ImageReadError(f"{name}: unsupported data type {pixels.dtype}")


def _normalise_channels(pixels: np.ndarray, name: str) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim != 3:
        raise ImageReadError(f"{name}: expected a 2-D image, got shape {pixels.shape} "
                             "(a stack? pass page=, or --page on the command line)")
    channels = pixels.shape[2]
    if channels == 1:
        return pixels[:, :, 0]
    if channels == 3:
        return pixels
    if channels in (2, 4):  # LA / RGBA: drop alpha only when fully opaque
        alpha = pixels[:, :, -1]
        opaque = np.iinfo(pixels.dtype).max
        if not np.all(alpha == opaque):
            raise ImageReadError(f"{name}: image has a non-opaque alpha channel; flatten it first")
        return pixels[:, :, 0] if channels == 2 else pixels[:, :, :3]
    raise ImageReadError(f"{name}: {channels} channels are not supported (1 or 3)")


def _resolve_bit_depth(pixels: np.ndarray, declared: int | None, name: str) -> int:
    container = 8 if pixels.dtype == np.uint8 else 16
    if declared is None:
        return container
    if pixels.dtype == np.uint8 and declared != 8:
        raise ImageReadError(f"{name}: 8-bit data cannot be declared {declared}-bit")
    if pixels.dtype == np.uint16 and not 9 <= declared <= 16:
        raise ImageReadError(f"{name}: 16-bit container data can be declared 9..16-bit, not {declared}")
    peak = int(pixels.max()) if pixels.size else 0
    if peak > (1 << declared) - 1:
        raise ImageReadError(f"{name}: declared {declared}-bit but holds value {peak} > {(1 << declared) - 1}")
    return declared
