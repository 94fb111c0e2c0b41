"""Decoder-side grain synthesis: any lossy codec plus seeded noise restored at the decoder (``NAME+grain``).

A lossy codec that minimises squared error returns the *conditional mean* of the image given its bits: fine
texture it cannot afford (in EM, the pixel-scale grain of the micrograph) comes back smooth.  Segmenters
trained on real micrographs key on that texture — ``python -m bench.grain_probe`` measured the EM mito U-Net's
agreement with the original's segmentation rising from 0.874 to 0.981 when noise of the lost residual's size
is added back to a ``learned-mse`` reconstruction.  Video codecs do the same for film grain (AV1's film grain
synthesis): the encoder measures the grain, sends its strength in a few bytes, the decoder synthesises it.

Here the encoder codes the image with the inner codec, takes the reconstruction the decoder will make
(:meth:`~core.codecs.base.Codec.encode_with_reconstruction`: a learned codec's own, else a decode), and
measures per channel the RMS of the coding residual (original − reconstruction, in grey levels of the image's bit depth), scaled by
:data:`GRAIN_SCALE`.  The decoder decodes the inner stream and adds white Gaussian noise of that σ, rounds
and clips to ``[0, 2**bit_depth − 1]``.  The noise is pseudo-random but reproducible: NumPy's legacy
``RandomState`` (whose stream NumPy guarantees never to change) seeded with the first 4 bytes of SHA-256 of
the inner stream, so a stream always decodes to the same pixels (its normal deviates go through libm's log
and sqrt: another libm could move a sum that lies within an ulp of a rounding boundary by one grey level, a
chance well under 1e-12 per pixel; an inner learned stream's own hash still verifies).  With σ equal to the
residual's RMS the output has the original's energy and, as the noise is independent of the error, twice its squared error:
PSNR falls by 10·log10(2) ≈ 3.0 dB.  These are synthetic pixels, not the source's: rows of a ``+grain``
codec are its own codec in every table, never mixed with the plain codec's.

Container (big-endian)::

    0   4     magic b"BCGR"
    4   1     format version (1)
    5   1     bit depth of the image (8..16; the decoder clips to 2**bit_depth − 1)
    6   1     C = channels (1 or 3)
    7   4·C   σ per channel, float32, grey levels
    ...       the inner codec's stream

Every byte counts towards the size (7 + 4·C bytes over the inner codec's stream).
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from core.codecs.base import Codec, CodecError, WrappingCodec

MAGIC = b"BCGR"
VERSION = 1
SUFFIX = "+grain"
#: σ of the synthesised noise as a multiple of the RMS coding residual.  1.0 restores the residual's energy;
#: chosen on the stage-2 *val* images (2 EPFL + 2 ISBI slices) among 0.7, 1.0 and 1.3 (`python -m bench.grain_scale --split val`, bench/grain_scale.md).
GRAIN_SCALE = 1.0
#: Inner codecs that get a ``+grain`` variant in the registry: the learned codecs and the two classical
#: codecs that the Dice-safe target is judged against (JPEG 2000, the anchor; AVIF, the strongest).
GRAIN_CODECS = ("jpeg2000", "avif", "learned-mse", "learned-msssim")


def grain_sigma(original: np.ndarray, reconstruction: np.ndarray, scale: float = GRAIN_SCALE) -> np.ndarray:
    """σ per channel (grey levels, float32): ``scale`` × the RMS of ``original − reconstruction``."""
    diff = original.astype(np.float64) - reconstruction.astype(np.float64)
    diff = diff.reshape(diff.shape[0], diff.shape[1], -1)
    return (scale * np.sqrt(np.mean(diff * diff, axis=(0, 1)))).astype(np.float32)


def add_grain(reconstruction: np.ndarray, sigma: np.ndarray, bit_depth: int, seed: int) -> np.ndarray:
    """``reconstruction`` + white Gaussian noise of σ ``sigma[c]`` in channel c, rounded and clipped to the bit
    depth's range, in the input's dtype.  Reproducible: ``RandomState(seed)`` (a NumPy stream frozen forever)."""
    noise = np.random.RandomState(seed).standard_normal(reconstruction.shape)
    shaped = noise.reshape(reconstruction.shape[0], reconstruction.shape[1], -1) * np.asarray(sigma, np.float64)
    out = reconstruction.astype(np.float64) + shaped.reshape(reconstruction.shape)
    return np.clip(np.rint(out), 0, (1 << bit_depth) - 1).astype(reconstruction.dtype)


def stream_seed(payload: bytes) -> int:
    """The noise seed of an inner stream: its SHA-256's first 4 bytes as an unsigned integer."""
    return int.from_bytes(hashlib.sha256(payload).digest()[:4], "big")


class GrainCodec(WrappingCodec):
    """``inner`` with grain synthesis (module doc): the same knob and sweep, synthetic noise at the decoder."""

    #: The decoder adds pixels that are not in the source: stages select these codecs with ``@grain`` only.
    synthetic = True

    def __init__(self, inner: Codec, scale: float = GRAIN_SCALE):
        if inner.lossless:
            raise ValueError(f"{inner.name} is lossless: there is no coding residual to restore")
        super().__init__(inner, "synthetic grain at the decoder")
        self.name = inner.name + SUFFIX
        self.scale = float(scale)

    @property
    def version(self) -> str:
        return f"{self.inner.version}; grain v{VERSION} scale {self.scale:g}"

    def version_for(self, channels: int, bit_depth: int | None = None) -> str:
        return f"{self.inner.version_for(channels, bit_depth)}; grain v{VERSION} scale {self.scale:g}"

    def size_limits(self) -> tuple[int, int | None, int | None]:
        """The inner codec's: the whole image goes to it in one piece."""
        return self.inner.size_limits()

    def models(self) -> list:
        """The inner codec's checkpoints (none for a classical codec): what the rows' training flags read."""
        return list(getattr(self.inner, "models", lambda: [])())

    def _encode(self, pixels, setting, bit_depth):
        payload, reconstruction = self.inner.encode_with_reconstruction(pixels, setting, bit_depth)
        sigma = grain_sigma(pixels, reconstruction, self.scale)
        header = MAGIC + bytes([VERSION, bit_depth, len(sigma)]) + struct.pack(f">{len(sigma)}f", *sigma)
        return header + payload

    def _decode(self, data):
        bit_depth, sigma, payload = parse(data)
        return self.synthesise(self.inner.decode(payload), sigma, bit_depth, stream_seed(payload))

    @staticmethod
    def synthesise(recon: np.ndarray, sigma: np.ndarray, bit_depth: int, seed: int) -> np.ndarray:
        """The decoder's last step: :func:`add_grain` after checking the channel count against the header."""
        got = 1 if recon.ndim == 2 else recon.shape[2]
        if got != len(sigma):
            raise CodecError(f"grain-synthesis header says {len(sigma)} channels, the inner stream decodes to {got}")
        return add_grain(recon, sigma, bit_depth, seed)


def parse(data: bytes) -> tuple[int, np.ndarray, bytes]:
    """``(bit depth, σ per channel, inner stream)`` of a ``BCGR`` stream; :class:`CodecError` on any damage."""
    data = bytes(data)
    if data[:4] != MAGIC or len(data) < 7:
        raise CodecError("not a grain-synthesis stream (bad magic bytes; expected b'BCGR')")
    version, bit_depth, channels = data[4], data[5], data[6]
    if version != VERSION:
        raise CodecError(f"grain-synthesis stream version {version} is not supported (this build reads {VERSION})")
    if not 8 <= bit_depth <= 16 or channels not in (1, 3):
        raise CodecError(f"grain-synthesis header is invalid (bit depth {bit_depth}, {channels} channels)")
    start = 7 + 4 * channels
    if len(data) <= start:
        raise CodecError("grain-synthesis stream truncated in its header")
    sigma = np.array(struct.unpack(f">{channels}f", data[7:start]), dtype=np.float64)
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0) or np.any(sigma > (1 << bit_depth)):
        raise CodecError(f"grain-synthesis header is invalid (σ {sigma.tolist()})")
    return bit_depth, sigma, data[start:]


def is_synthetic(codec: Codec) -> bool:
    """True for codecs whose decoder adds content that is not in the source (grain synthesis)."""
    return bool(getattr(codec, "synthetic", False))

