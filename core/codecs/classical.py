"""Classical codecs: JPEG, JPEG 2000 (glymur/OpenJPEG), PNG, JPEG XL, AVIF, WebP, JPEG-LS.

Each class states its rate knob, its fixed encoder parameters (``params``: part of the
codec version stored with every result row) and the bit depths / channel counts it
takes (sweeps live in the catalog, ``data/stages.toml`` ``[sweeps]``); :class:`~core.codecs.base.Codec` refuses
anything else with :class:`~core.codecs.base.UnsupportedInput` rather than
converting.  Library traps handled here (measured, see
``../shared/docs/stack-notes.md``):

* imagecodecs JPEG on uint16 without ``lossless=True`` returns garbage, so
  lossy JPEG is 8-bit only.
* imagecodecs AVIF ignores ``level`` for 2-D grayscale and encodes losslessly;
  grayscale is therefore stacked to 3 identical planes and encoded as YUV 4:0:0
  (a single luma plane is stored; the decoder returns it 2-D).
* AVIF carries 8, 10 or 12 bits; WebP 8 bits only.
"""
from __future__ import annotations

import os
import tempfile

import imagecodecs
import numpy as np

from core.codecs.base import Codec, CodecError
from core.io import encode_png

IMAGECODECS = f"imagecodecs {imagecodecs.__version__}"
_SIXTEEN = frozenset(range(9, 17))
_ALL_DEPTHS = frozenset({8}) | _SIXTEEN


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.dstack([pixels] * 3)) if pixels.ndim == 2 else pixels


def _worst_case_bytes(pixels: np.ndarray) -> int:
    """An output-buffer size no encoding of ``pixels`` exceeds (twice the raw size plus headers)."""
    return 2 * pixels.nbytes + 4096


class JPEG(Codec):
    """Baseline JPEG (libjpeg-turbo via imagecodecs), Huffman tables optimised, 4:2:0 for RGB."""

    library = IMAGECODECS
    name, label = "jpeg", "JPEG"
    params = {"optimize": True}
    knob = "quality 1-100 (higher = more bytes)"
    bit_depths = frozenset({8})

    def _encode(self, pixels, setting, bit_depth):
        return imagecodecs.jpeg8_encode(pixels, level=int(setting), **self.params)

    def _decode(self, data):
        return imagecodecs.jpeg8_decode(data)


class _JPEG2000Base(Codec):
    """JPEG 2000 Part 1 codestream (.j2k) written by glymur through OpenJPEG."""

    bit_depths = _ALL_DEPTHS

    @property
    def library(self) -> str:
        import glymur

        return f"glymur {glymur.__version__}, OpenJPEG {glymur.version.openjpeg_version}"

    def _write(self, pixels: np.ndarray, **kwargs) -> bytes:
        import glymur

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.j2k")
            glymur.Jp2k(path, data=pixels, **kwargs)
            with open(path, "rb") as fh:
                return fh.read()

    def _decode(self, data):
        import glymur

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "image.j2k")
            with open(path, "wb") as fh:
                fh.write(data)
            return np.ascontiguousarray(glymur.Jp2k(path)[:])


class JPEG2000(_JPEG2000Base):
    """Lossy JPEG 2000 (9/7 irreversible wavelet) at an explicit compression ratio.

    The setting is OpenJPEG's target ratio raw_bytes : compressed_bytes (e.g. 20 → 20:1),
    with raw bytes counted at the container depth (1 byte/sample for 8-bit, 2 for 16-bit).
    """

    name, label = "jpeg2000", "JPEG 2000"
    params = {"irreversible": True, "format": "j2k"}
    knob = "compression ratio N:1 (higher = fewer bytes)"

    def _encode(self, pixels, setting, bit_depth):
        if setting <= 1:
            raise ValueError("jpeg2000 ratio must be > 1 (use jpeg2000-lossless for exact coding)")
        return self._write(pixels, cratios=[float(setting)], irreversible=self.params["irreversible"])


class JPEG2000Lossless(_JPEG2000Base):
    """Lossless JPEG 2000 (5/3 reversible wavelet)."""

    name, label = "jpeg2000-lossless", "JPEG 2000 lossless"
    params = {"irreversible": False, "format": "j2k"}
    lossless = True

    def _encode(self, pixels, setting, bit_depth):
        return self._write(pixels, irreversible=self.params["irreversible"])


class PNG(Codec):
    """PNG (zlib level 9), lossless, 8 and 16 bit."""

    library = IMAGECODECS
    name, label = "png", "PNG"
    params = {"level": 9}
    lossless = True
    bit_depths = _ALL_DEPTHS

    def _encode(self, pixels, setting, bit_depth):
        # the output buffer is sized for incompressible data (noise), see core.io.png_bound
        return encode_png(pixels, **self.params)

    def _decode(self, data):
        return imagecodecs.png_decode(data)


class JPEGXL(Codec):
    """Lossy JPEG XL (libjxl via imagecodecs, effort 7); the knob is the Butteraugli distance."""

    library = IMAGECODECS
    name, label = "jpegxl", "JPEG XL"
    params = {"effort": 7}
    knob = "Butteraugli distance (lower = more bytes; 1.0 ≈ visually lossless)"
    bit_depths = _ALL_DEPTHS

    def _encode(self, pixels, setting, bit_depth):
        return imagecodecs.jpegxl_encode(pixels, distance=float(setting), bitspersample=bit_depth, **self.params)

    def _decode(self, data):
        return imagecodecs.jpegxl_decode(data)


class JPEGXLLossless(JPEGXL):
    """Lossless JPEG XL (modular mode, effort 7)."""

    name, label = "jpegxl-lossless", "JPEG XL lossless"
    lossless, knob = True, None

    def _encode(self, pixels, setting, bit_depth):
        return imagecodecs.jpegxl_encode(pixels, lossless=True, bitspersample=bit_depth, **self.params)


class AVIF(Codec):
    """AVIF (libavif/AOM via imagecodecs, speed 6); 8, 10 or 12 bit; YUV 4:0:0 for grayscale."""

    library = IMAGECODECS
    name, label = "avif", "AVIF"
    params = {"speed": 6}
    knob = "quality 0-100 (higher = more bytes)"
    bit_depths = frozenset({8, 10, 12})

    def _encode(self, pixels, setting, bit_depth):
        kwargs = dict(level=int(setting), bitspersample=bit_depth, **self.params)
        if pixels.ndim == 2:  # 2-D input ignores `level` (encodes lossless): see module docstring
            pixels = _as_rgb(pixels)
            kwargs["pixelformat"] = imagecodecs.AVIF.PIXEL_FORMAT.YUV400
        return imagecodecs.avif_encode(pixels, **kwargs)

    def _decode(self, data):
        return imagecodecs.avif_decode(data)


class WebP(Codec):
    """Lossy WebP (libwebp, method 6), 8-bit only."""

    library = IMAGECODECS
    name, label = "webp", "WebP"
    params = {"method": 6}
    knob = "quality 0-100 (higher = more bytes)"
    bit_depths = frozenset({8})

    def _encode(self, pixels, setting, bit_depth):
        return imagecodecs.webp_encode(_as_rgb(pixels), level=float(setting), lossless=False, **self.params)

    def _decode(self, data):
        return imagecodecs.webp_decode(data)

    def encode(self, pixels, setting=None, bit_depth=None):
        # libwebp codes only RGB(A): grayscale goes in as three equal planes, and a
        # one-byte tag (counted in the size) tells decode to return it 2-D.
        data = super().encode(pixels, setting, bit_depth)
        return (b"G" if pixels.ndim == 2 else b"C") + data

    def decode(self, data):
        if not data or data[:1] not in (b"G", b"C"):
            raise CodecError(f"{self.name}: not a stream written by this codec")
        out = super().decode(data[1:])
        return out[:, :, 0].copy() if data[:1] == b"G" and out.ndim == 3 else out


class WebPLossless(WebP):
    """Lossless WebP, 8-bit only."""

    name, label = "webp-lossless", "WebP lossless"
    params = {"level": 75, "method": 4}
    lossless, knob = True, None

    def _encode(self, pixels, setting, bit_depth):
        return imagecodecs.webp_encode(_as_rgb(pixels), lossless=True, **self.params)


class JPEGLS(Codec):
    """Lossless JPEG-LS (CharLS via imagecodecs), 8 and 16 bit."""

    library = IMAGECODECS
    name, label = "jpegls", "JPEG-LS"
    lossless = True
    bit_depths = _ALL_DEPTHS

    def _encode(self, pixels, setting, bit_depth):
        # CharLS's default output buffer is too small for incompressible data (noise): size it explicitly
        return imagecodecs.jpegls_encode(pixels, level=0, out=_worst_case_bytes(pixels))

    def _decode(self, data):
        return imagecodecs.jpegls_decode(data)


class JPEGLSNearLossless(JPEGLS):
    """Near-lossless JPEG-LS: every sample within ±NEAR of the original."""

    name, label = "jpegls-near", "JPEG-LS near-lossless"
    lossless = False
    knob = "NEAR, the maximum absolute error per sample (higher = fewer bytes)"

    def _encode(self, pixels, setting, bit_depth):
        return imagecodecs.jpegls_encode(pixels, level=int(setting), out=_worst_case_bytes(pixels))


#: Every classical codec, in the order ``python -m core.codecs list`` shows them (core.codecs.registry).
CODECS = (JPEG, JPEG2000, JPEG2000Lossless, PNG, JPEGXL, JPEGXLLossless, AVIF, WebP, WebPLossless, JPEGLS,
          JPEGLSNearLossless)
