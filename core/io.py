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
* Stacks (multi-page TIFF, 3-D MRC) need an explicit ``page=``; without it the
  error says how many pages there are.
* Other channel counts (2, 4+ without alpha) are an error.

Supported containers: PNG, TIFF (incl. LZW, via tifffile + imagecodecs),
PGM/PPM, JPEG, MRC (EM; via mrcfile).
"""
from __future__ import annotations

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


def read_image(path: str | Path, bit_depth: int | None = None, page: int | None = None) -> BioImage:
    """Read ``path`` into a :class:`BioImage`.

    ``bit_depth`` declares the significant bits of 16-bit data (e.g. 12); it is
    checked against the maximum value.  ``page`` selects one plane of a stack.
    """
    path = Path(path)
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
    return as_bioimage(pixels, bit_depth, name=path.stem)


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


def read_image_bytes(data: bytes, name: str, bit_depth: int | None = None, page: int | None = None) -> BioImage:
    """Read an image from an in-memory file (an upload); ``name`` gives the suffix."""
    import tempfile

    if len(data) > MAX_FILE_BYTES:
        raise ImageReadError(f"{name}: {len(data)} bytes exceeds the {MAX_FILE_BYTES}-byte limit")
    suffix = Path(name).suffix.lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        image = read_image(path, bit_depth=bit_depth, page=page)
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


def _pick_page(stack: np.ndarray, page: int | None, what: str) -> np.ndarray:
    if page is None:
        raise ImageReadError(f"{what} is a stack of {stack.shape[0]} planes; pass page=0..{stack.shape[0] - 1}")
    if not 0 <= page < stack.shape[0]:
        raise ImageReadError(f"{what}: page {page} out of range 0..{stack.shape[0] - 1}")
    return stack[page]


def _read_tiff(path: Path, page: int | None) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        axes = series.axes
        if series.keyframe.photometric == tifffile.PHOTOMETRIC.PALETTE:
            from PIL import Image

            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        pages = len(series.pages) if len(tif.pages) > 1 else 1
        if pages > 1 or (len(series.shape) == 3 and axes[-1] not in "SC"):
            arr = series.asarray()
            if arr.ndim == 4 or (arr.ndim == 3 and axes[-1] not in "SC"):
                arr = _pick_page(arr, page, str(path))
            return arr
        arr = series.asarray()
    if page not in (None, 0):
        raise ImageReadError(f"{path}: single image, page {page} does not exist")
    return arr


def _read_mrc(path: Path, page: int | None) -> np.ndarray:
    import mrcfile

    with mrcfile.open(path, permissive=True) as mrc:
        data = np.asarray(mrc.data)
    if data is None:
        raise ImageReadError(f"{path}: MRC file holds no data")
    if data.ndim == 3:
        if data.shape[0] == 1:
            data = data[0]
        else:
            data = _pick_page(data, page, str(path))
    return data


def _read_png(path: Path) -> np.ndarray:
    """PNG through libpng (imagecodecs): Pillow truncates 16-bit RGB PNGs to 8 bits."""
    import imagecodecs

    data = path.read_bytes()
    colour_type = data[25] if len(data) > 25 and data[12:16] == b"IHDR" else None
    if colour_type == 3:  # palette: expand through Pillow (8-bit by definition)
        return _read_pillow(path, None)
    try:
        return imagecodecs.png_decode(data)
    except Exception as exc:  # libpng's messages on garbage are themselves garbage: keep only the type
        raise ImageReadError(f"{path}: cannot read image (corrupt or truncated PNG: {type(exc).__name__})") from None


def _read_netpbm(path: Path, page: int | None) -> np.ndarray:
    """Binary PGM/PPM (P5/P6); maxval > 255 means big-endian 16-bit samples (Pillow would truncate)."""
    data = path.read_bytes()
    tokens, pos = [], 0
    while len(tokens) < 4:
        while pos < len(data) and data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        start = pos
        while pos < len(data) and not data[pos:pos + 1].isspace():
            pos += 1
        tokens.append(data[start:pos])
    magic, width, height, maxval = tokens[0], int(tokens[1]), int(tokens[2]), int(tokens[3])
    if magic not in (b"P5", b"P6"):
        return _read_pillow(path, page)  # ASCII variants: Pillow handles them (8-bit)
    channels = 3 if magic == b"P6" else 1
    dtype = np.dtype(">u2") if maxval > 255 else np.dtype(np.uint8)
    count = width * height * channels
    body = np.frombuffer(data, dtype=dtype, count=count, offset=pos + 1)
    shape = (height, width, channels) if channels == 3 else (height, width)
    return body.reshape(shape).astype(np.uint16 if maxval > 255 else np.uint8)


def _read_pillow(path: Path, page: int | None) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        n_frames = getattr(im, "n_frames", 1)
        if n_frames > 1:
            if page is None:
                raise ImageReadError(f"{path} has {n_frames} frames; pass page=0..{n_frames - 1}")
            im.seek(page)
        if im.width * im.height > MAX_PIXELS:
            raise ImageReadError(f"{path}: {im.width}x{im.height} exceeds the {MAX_PIXELS}-pixel limit")
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
        if im.mode == "F":
            return np.asarray(im)
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
        raise ImageReadError(f"{name}: expected a 2-D image, got shape {pixels.shape} (stack? pass page=)")
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
