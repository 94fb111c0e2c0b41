"""The one codec interface of the product, and its name → factory registry.

A :class:`Codec` turns a ``uint8``/``uint16`` array of shape ``(H, W)`` or
``(H, W, 3)`` into one complete, self-contained byte string and back.  Its
*rate knob* (``knob``) is a single number whose meaning the codec states
(JPEG quality, JPEG 2000 compression ratio, JPEG XL distance, learned-model
rate, ...); ``default_settings`` is the sweep the runner uses (set by the
registry, :mod:`core.codecs.registry`, from the catalog's ``[sweeps]``).
Lossless codecs have no knob and one setting, ``None``.

Codecs never convert silently: an unsupported bit depth or channel count
raises :class:`UnsupportedInput`, and the runner skips that combination.

Failures are always one of two exceptions: :class:`UnsupportedInput` when the
input is the reason (bit depth, channels, an image side a library cannot code —
:data:`LIBRARY_SIZE_LIMITS`, checked before the library is called) and
:class:`CodecError` for everything else the library raises while coding (its
own error types, ``MemoryError``, ...), with the codec, the image and what it
supports in the message.  ``ValueError``/``TypeError`` raised by this project's
own argument checks (a setting out of range) stay what they are.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np


class UnsupportedInput(ValueError):
    """The codec does not support this bit depth or channel count."""


class CodecError(RuntimeError):
    """Encoding or decoding failed (corrupt stream, library failure)."""


Setting = float | int | None

#: Image sizes the libraries behind the classical codecs can code in one piece, by registry name:
#: (smallest side px, largest side px or None, most pixels or None).  Measured with the installed
#: imagecodecs 2026.1.14 / glymur + OpenJPEG (tests/test_safety.py checks both sides of every edge):
#:
#: * jpeg — libjpeg-turbo: "Maximum supported image dimension is 65535 pixels";
#: * jpeg2000 — glymur asks OpenJPEG for 6 resolution levels, which need 2**5 = 32 px per side
#:   ("Number of resolutions is too high in comparison to the size of tiles");
#: * avif — libavif *encodes* up to 65536 px but its decoder refuses sides above 32768 px and images
#:   above 16384 · 16384 pixels ("dimensions are too large"): such files would be unreadable;
#: * webp — imagecodecs' WebP encoder refuses sides of 16383 px and more ("invalid data shape").
#:
#: JPEG XL, JPEG-LS and PNG coded 100000 × 1 px; codecs not listed have no known limit.
LIBRARY_SIZE_LIMITS: dict[str, tuple[int, int | None, int | None]] = {
    "jpeg": (1, 65535, None),
    "jpeg2000": (32, None, None),
    "jpeg2000-lossless": (32, None, None),
    "avif": (1, 32768, 16384 * 16384),
    "webp": (1, 16382, None),
    "webp-lossless": (1, 16382, None),
}

_PROJECT = Path(__file__).resolve().parents[1]  # core/: where this project's own checks raise


def _raised_by_project(exc: BaseException) -> bool:
    """True when ``exc`` was raised by this project's code (its innermost Python frame lies in core/)."""
    tb, filename = exc.__traceback__, None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    try:
        return filename is not None and Path(filename).resolve().is_relative_to(_PROJECT)
    except (OSError, ValueError):
        return False


def _describe(pixels: np.ndarray, bit_depth: int | None = None) -> str:
    """``"20x300 8-bit 1-channel"`` (height x width) for error messages."""
    shape = getattr(pixels, "shape", ())
    size = "x".join(str(v) for v in shape[:2]) or "?"
    channels = 1 if len(shape) == 2 else (shape[2] if len(shape) > 2 else "?")
    depth = f" {bit_depth}-bit" if bit_depth else ""
    return f"{size}{depth} {channels}-channel"


class Codec(ABC):
    """Base class: subclasses set the class attributes and implement ``_encode``/``_decode``."""

    #: Registry name, e.g. ``"jpeg2000"``.
    name: str = ""
    #: Human-readable label for tables and plots.
    label: str = ""
    #: True when decode(encode(x)) == x bit for bit.
    lossless: bool = False
    #: What the setting means (e.g. ``"quality 1-100, higher = more bytes"``); None for lossless.
    knob: str | None = None
    #: Settings swept by default, ordered from fewest to most bytes.
    default_settings: tuple[Setting, ...] = (None,)
    #: Supported significant bit depths (8 for uint8; 9–16 for uint16 data).
    bit_depths: frozenset[int] = frozenset({8})
    #: Supported channel counts (1 = grayscale, 3 = RGB).
    channels: frozenset[int] = frozenset({1, 3})
    #: "classical" or "learned" (the dashboard draws learned solid, classical dashed).
    family: str = "classical"
    #: The library (and its version) that does the coding, e.g. ``"imagecodecs 2026.1.14"``.
    library: str = ""
    #: Fixed encoder parameters besides the setting (effort, speed, ...): part of :attr:`version`.
    params: dict = {}

    @property
    def version(self) -> str:
        """What the output depends on besides the setting: library, version and fixed parameters
        (learned codecs: the checkpoints' hash).  Stored per row (``codec_version``); the runner
        recomputes rows whose stored version differs, so an upgrade, a parameter change or new
        weights never leave stale results behind."""
        params = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"{self.library}; {params}" if params else self.library

    def version_for(self, channels: int, bit_depth: int | None = None) -> str:
        """The :attr:`version` of coding a ``channels``-channel image of ``bit_depth`` bits, what the runner
        stores per row.  The same as :attr:`version` unless the codec codes some kinds of image differently: a
        learned codec's rows depend only on the checkpoint that codes them (new colour weights do not recompute
        the gray rows) and, above 8 bits, on its intensity window."""
        return self.version

    # ---------------------------------------------------------------- support checks
    def supports(self, bit_depth: int, channels: int) -> bool:
        return bit_depth in self.bit_depths and channels in self.channels

    def size_limits(self) -> tuple[int, int | None, int | None]:
        """(smallest side px, largest side px or None, most pixels or None) this codec codes in one piece."""
        return LIBRARY_SIZE_LIMITS.get(self.name, (1, None, None))

    def _supported_sizes(self) -> str:
        low, high, most = self.size_limits()
        parts = ([f"sides >= {low} px"] if low > 1 else []) + ([f"sides <= {high} px"] if high else []) \
            + ([f"at most {most} pixels"] if most else [])
        return ", ".join(parts)

    def check_size(self, height: int, width: int) -> None:
        """Raise :class:`UnsupportedInput` unless the library behind this codec can code a height×width image."""
        low, high, most = self.size_limits()
        if min(height, width) < low:
            raise UnsupportedInput(f"{self.name} needs image sides >= {low} px (got {height}x{width})")
        if high is not None and max(height, width) > high:
            raise UnsupportedInput(f"{self.name} supports image sides <= {high} px (got {height}x{width})")
        if most is not None and height * width > most:
            raise UnsupportedInput(f"{self.name} supports at most {most} pixels (got {height}x{width} = "
                                   f"{height * width})")

    def check_input(self, pixels: np.ndarray, bit_depth: int) -> None:
        """Raise :class:`UnsupportedInput` unless this codec can take ``pixels`` as they are."""
        if not isinstance(pixels, np.ndarray):
            raise UnsupportedInput(f"{self.name}: expected a numpy array, got {type(pixels).__name__}")
        if pixels.dtype not in (np.uint8, np.uint16):
            raise UnsupportedInput(f"{self.name}: dtype {pixels.dtype} (uint8/uint16 only)")
        expected = np.uint8 if bit_depth <= 8 else np.uint16
        if pixels.dtype != expected:
            raise UnsupportedInput(f"{self.name}: {bit_depth}-bit data must be {np.dtype(expected).name}")
        if pixels.ndim not in (2, 3):
            raise UnsupportedInput(f"{self.name}: a {pixels.ndim}-D array is not an image "
                                   "(expected (H, W) or (H, W, 3))")
        if 0 in pixels.shape:
            raise UnsupportedInput(f"{self.name}: empty image (shape {pixels.shape})")
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        if bit_depth not in self.bit_depths:
            raise UnsupportedInput(f"{self.name}: {bit_depth}-bit input is not supported "
                                   f"(supported: {sorted(self.bit_depths)})")
        if channels not in self.channels:
            raise UnsupportedInput(f"{self.name}: {channels}-channel input is not supported "
                                   f"(supported: {sorted(self.channels)})")
        self.check_size(int(pixels.shape[0]), int(pixels.shape[1]))

    def check_setting(self, setting: Setting) -> Setting:
        if self.lossless and setting is not None:
            raise ValueError(f"{self.name} is lossless and takes no setting (got {setting!r})")
        if not self.lossless and setting is None:
            raise ValueError(f"{self.name} needs a setting ({self.knob})")
        return setting

    # ---------------------------------------------------------------- public API
    def encode(self, pixels: np.ndarray, setting: Setting = None, bit_depth: int | None = None) -> bytes:
        """Encode ``pixels`` at ``setting``; returns the complete encoded byte string.

        ``bit_depth`` defaults to the container depth (8 for uint8, 16 for uint16).  Raises
        :class:`UnsupportedInput` for input this codec cannot take and :class:`CodecError` for any
        failure of the library (never the library's own exception types).
        """
        bit_depth = bit_depth or (8 if getattr(pixels, "dtype", None) == np.uint8 else 16)
        self.check_input(pixels, bit_depth)
        setting = self.check_setting(setting)
        try:
            data = self._encode(np.ascontiguousarray(pixels), setting, bit_depth)
        except (UnsupportedInput, CodecError):
            raise
        except Exception as exc:
            if isinstance(exc, (ValueError, TypeError)) and _raised_by_project(exc):
                raise  # this project's own argument checks (e.g. a setting out of range)
            supported = self._supported_sizes()
            raise CodecError(f"{self.name}: cannot encode a {_describe(pixels, bit_depth)} image"
                             f"{f' (supported: {supported})' if supported else ''}: "
                             f"{type(exc).__name__}: {str(exc) or 'no message'}") from exc
        return bytes(data)

    def encode_with_reconstruction(self, pixels: np.ndarray, setting: Setting = None,
                                   bit_depth: int | None = None) -> tuple[bytes, np.ndarray]:
        """:meth:`encode`, and the array :meth:`decode` returns for those bytes.  Here a decode; a codec that
        reconstructs the image while encoding anyway (a learned codec) returns that reconstruction instead."""
        data = self.encode(pixels, setting, bit_depth)
        return data, self.decode(data)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode a byte string produced by :meth:`encode` back to an array."""
        try:
            return self._decode(data)
        except (UnsupportedInput, CodecError):
            raise
        except Exception as exc:
            raise CodecError(f"{self.name}: cannot decode {len(data)} bytes "
                             f"({type(exc).__name__}: {str(exc) or 'no message'})") from exc

    @abstractmethod
    def _encode(self, pixels: np.ndarray, setting: Setting, bit_depth: int) -> bytes: ...

    @abstractmethod
    def _decode(self, data: bytes) -> np.ndarray: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class WrappingCodec(Codec):
    """A codec built around another (per-channel, tiled): it keeps the inner codec's name, knob,
    sweep, bit depths, channels and family, and only changes how the image is split."""

    def __init__(self, inner: Codec, label_suffix: str):
        self.inner = inner
        self.name = inner.name
        self.label = f"{inner.label} ({label_suffix})"
        self.lossless = inner.lossless
        self.knob = inner.knob
        self.default_settings = inner.default_settings
        self.bit_depths = inner.bit_depths
        self.channels = inner.channels
        self.family = inner.family

    @property
    def version(self) -> str:
        return self.inner.version

    def version_for(self, channels: int, bit_depth: int | None = None) -> str:
        return self.inner.version_for(channels, bit_depth)

    def size_limits(self) -> tuple[int, int | None, int | None]:
        """No limit of its own: the inner codec checks every piece it is given."""
        return (1, None, None)
