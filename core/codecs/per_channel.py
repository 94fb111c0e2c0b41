"""Colour mode ``per_channel``: code each RGB channel independently with a grayscale codec.

This is the architecture that *excludes* the colour component: the inner codec
never sees inter-channel correlation.  Compare it with ``joint`` (the codec's
own 3-channel path) on the same image.

Container: ``b"BCPC"`` · version (1 byte) · channel count (1 byte) · one
big-endian uint32 length per channel · the inner codec's streams.  Every byte
is counted in the size.
"""
from __future__ import annotations

import struct

import numpy as np

from core.codecs.base import Codec, CodecError, UnsupportedInput, WrappingCodec

_MAGIC = b"BCPC"
_VERSION = 1


class PerChannelCodec(WrappingCodec):
    """Wrap a codec that supports 1 channel so that it codes RGB channel by channel."""

    def __init__(self, inner: Codec):
        if 1 not in inner.channels:
            raise UnsupportedInput(f"{inner.name} has no grayscale mode; per-channel coding needs one")
        super().__init__(inner, "per channel")
        self.channels = frozenset({3})

    def version_for(self, channels: int, bit_depth: int | None = None) -> str:
        """Every plane is coded as a 1-channel image."""
        return self.inner.version_for(1, bit_depth)

    def _encode(self, pixels, setting, bit_depth):
        streams = [self.inner.encode(np.ascontiguousarray(pixels[:, :, c]), setting, bit_depth)
                   for c in range(pixels.shape[2])]
        header = _MAGIC + bytes([_VERSION, len(streams)]) + b"".join(struct.pack(">I", len(s)) for s in streams)
        return header + b"".join(streams)

    def _decode(self, data):
        if data[:4] != _MAGIC or len(data) < 6:
            raise CodecError("not a per-channel stream (bad magic)")
        if data[4] != _VERSION:
            raise CodecError(f"per-channel stream version {data[4]} is not supported")
        count = data[5]
        offset = 6 + 4 * count
        if len(data) < offset:
            raise CodecError("per-channel stream truncated in its header")
        lengths = struct.unpack(f">{count}I", data[6:offset])
        if offset + sum(lengths) != len(data):
            raise CodecError(f"per-channel stream is {len(data)} bytes, header says {offset + sum(lengths)}")
        planes = []
        for length in lengths:
            planes.append(self.inner.decode(data[offset:offset + length]))
            offset += length
        return np.ascontiguousarray(np.stack(planes, axis=-1))
