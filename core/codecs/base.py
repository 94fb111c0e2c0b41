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
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class UnsupportedInput(ValueError):
    """The codec does not support this bit depth or channel count."""


class CodecError(RuntimeError):
    """Encoding or decoding failed (corrupt stream, library failure)."""


Setting = float | int | None


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

    # ---------------------------------------------------------------- support checks
    def supports(self, bit_depth: int, channels: int) -> bool:
        return bit_depth in self.bit_depths and channels in self.channels

    def check_input(self, pixels: np.ndarray, bit_depth: int) -> None:
        """Raise :class:`UnsupportedInput` unless this codec can take ``pixels`` as they are."""
        if pixels.dtype not in (np.uint8, np.uint16):
            raise UnsupportedInput(f"{self.name}: dtype {pixels.dtype} (uint8/uint16 only)")
        expected = np.uint8 if bit_depth <= 8 else np.uint16
        if pixels.dtype != expected:
            raise UnsupportedInput(f"{self.name}: {bit_depth}-bit data must be {np.dtype(expected).name}")
        channels = 1 if pixels.ndim == 2 else pixels.shape[2]
        if bit_depth not in self.bit_depths:
            raise UnsupportedInput(f"{self.name}: {bit_depth}-bit input is not supported "
                                   f"(supported: {sorted(self.bit_depths)})")
        if channels not in self.channels:
            raise UnsupportedInput(f"{self.name}: {channels}-channel input is not supported "
                                   f"(supported: {sorted(self.channels)})")

    def check_setting(self, setting: Setting) -> Setting:
        if self.lossless and setting is not None:
            raise ValueError(f"{self.name} is lossless and takes no setting (got {setting!r})")
        if not self.lossless and setting is None:
            raise ValueError(f"{self.name} needs a setting ({self.knob})")
        return setting

    # ---------------------------------------------------------------- public API
    def encode(self, pixels: np.ndarray, setting: Setting = None, bit_depth: int | None = None) -> bytes:
        """Encode ``pixels`` at ``setting``; returns the complete encoded byte string.

        ``bit_depth`` defaults to the container depth (8 for uint8, 16 for uint16).
        """
        bit_depth = bit_depth or (8 if pixels.dtype == np.uint8 else 16)
        self.check_input(pixels, bit_depth)
        setting = self.check_setting(setting)
        data = self._encode(np.ascontiguousarray(pixels), setting, bit_depth)
        return bytes(data)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode a byte string produced by :meth:`encode` back to an array."""
        try:
            return self._decode(data)
        except (UnsupportedInput, CodecError):
            raise
        except Exception as exc:
            raise CodecError(f"{self.name}: cannot decode {len(data)} bytes ({type(exc).__name__}: {exc})") from exc

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
