"""Large images: code them tile by tile, in one container, and reassemble seam-free.

:class:`TiledCodec` wraps any :class:`~core.codecs.base.Codec` (as
:class:`~core.codecs.per_channel.PerChannelCodec` does).  The image is split into a
grid of near-equal tiles no larger than ``tile`` × ``tile`` pixels (so no sliver
tiles); each tile is encoded by the inner codec with ``overlap`` extra pixels of
context on every side (clipped at the image border).  Decoding keeps only each
tile's own core region, so the overlap's reconstruction — where a learned codec's
padding artefacts live — is thrown away.  Classical codecs are tiled without
overlap (``overlap=0``): reassembly of a lossless codec is then bit-exact.

Container (every byte counted in the size): ``b"BCTL"`` · version (1 byte) ·
height, width (uint32 each) · tile, overlap (uint16 each) · tile count (uint32) ·
one uint32 length per tile (row-major) · the tiles' streams.  Integers are big-endian.

Metrics are computed by :func:`core.evaluate.evaluate` on the whole reassembled image.
"""
from __future__ import annotations

import math
import struct

import numpy as np

from core.codecs.base import Codec, CodecError, WrappingCodec

TILED_MAGIC = b"BCTL"
_VERSION = 1
_HEADER = struct.Struct(">4sBIIHHI")


def tile_edges(length: int, tile: int) -> list[int]:
    """Split ``length`` pixels into ceil(length/tile) near-equal parts: the boundaries 0 … length."""
    if tile < 1:
        raise ValueError(f"tile must be >= 1, got {tile}")
    count = max(1, math.ceil(length / tile))
    return [round(i * length / count) for i in range(count + 1)]


def tile_grid(height: int, width: int, tile: int, overlap: int):
    """Row-major list of (core box, coded box) per tile; boxes are (y0, x0, y1, x1) in pixels."""
    ys, xs = tile_edges(height, tile), tile_edges(width, tile)
    grid = []
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            coded = (max(0, y0 - overlap), max(0, x0 - overlap), min(height, y1 + overlap), min(width, x1 + overlap))
            grid.append(((y0, x0, y1, x1), coded))
    return grid


class TiledCodec(WrappingCodec):
    """Code an image as independent tiles of at most ``tile`` px (plus ``overlap`` px of context)."""

    def __init__(self, inner: Codec, tile: int = 1024, overlap: int = 0):
        if tile < 16:
            raise ValueError(f"tile must be >= 16 px, got {tile}")
        if not 0 <= overlap < 65536:
            raise ValueError(f"overlap must be 0..65535 px, got {overlap}")
        if tile > 65535:
            raise ValueError(f"tile must be <= 65535 px, got {tile}")
        super().__init__(inner, f"tiled {tile}px" + (f", overlap {overlap}px" if overlap else ""))
        self.tile, self.overlap = int(tile), int(overlap)

    @property
    def version(self) -> str:
        """The inner codec's version plus the tiling (tile size and overlap change the bytes)."""
        return f"{self.inner.version}; tiled {self.tile}px overlap {self.overlap}px"

    def version_for(self, channels: int, bit_depth: int | None = None) -> str:
        return f"{self.inner.version_for(channels, bit_depth)}; tiled {self.tile}px overlap {self.overlap}px"

    def _encode(self, pixels, setting, bit_depth):
        height, width = pixels.shape[:2]
        grid = tile_grid(height, width, self.tile, self.overlap)
        streams = [self.inner.encode(np.ascontiguousarray(pixels[y0:y1, x0:x1]), setting, bit_depth)
                   for _, (y0, x0, y1, x1) in grid]
        header = _HEADER.pack(TILED_MAGIC, _VERSION, height, width, self.tile, self.overlap, len(streams))
        return header + struct.pack(f">{len(streams)}I", *map(len, streams)) + b"".join(streams)

    def _decode(self, data):
        if len(data) < _HEADER.size or data[:4] != TILED_MAGIC:
            raise CodecError("not a tiled stream (bad magic)")
        magic, version, height, width, tile, overlap, count = _HEADER.unpack_from(data)
        if version != _VERSION:
            raise CodecError(f"tiled stream version {version} is not supported")
        grid = tile_grid(height, width, tile, overlap)
        if count != len(grid):
            raise CodecError(f"tiled stream holds {count} tiles, the {height}x{width} grid needs {len(grid)}")
        offset = _HEADER.size + 4 * count
        if len(data) < offset:
            raise CodecError("tiled stream truncated in its header")
        lengths = struct.unpack_from(f">{count}I", data, _HEADER.size)
        if offset + sum(lengths) != len(data):
            raise CodecError(f"tiled stream is {len(data)} bytes, header says {offset + sum(lengths)}")
        out = None
        for ((y0, x0, y1, x1), (cy0, cx0, cy1, cx1)), length in zip(grid, lengths):
            part = self.inner.decode(data[offset:offset + length])
            offset += length
            if part.shape[:2] != (cy1 - cy0, cx1 - cx0):
                raise CodecError(f"tile decoded to {part.shape[:2]}, expected {(cy1 - cy0, cx1 - cx0)}")
            if out is None:
                out = np.empty((height, width) + part.shape[2:], part.dtype)
            out[y0:y1, x0:x1] = part[y0 - cy0:y1 - cy0, x0 - cx0:x1 - cx0]
        return out


def tile_if_large(codec: Codec, height: int, width: int, options: dict | None = None) -> Codec:
    """``codec`` wrapped in a :class:`TiledCodec` when the image exceeds the family's size threshold.

    ``options`` defaults to the ``[tiling]`` table of ``data/stages.toml``: learned codecs
    are tiled (with ``learned_overlap`` px of context) above ``learned_max_side`` px,
    classical codecs (without overlap) above ``classical_max_side`` px; a threshold of 0
    disables tiling for that family.
    """
    if options is None:
        from core.catalog import tiling_options

        options = tiling_options()
    learned = codec.family == "learned"
    limit = int(options["learned_max_side" if learned else "classical_max_side"])
    if limit <= 0 or max(height, width) <= limit:
        return codec
    return TiledCodec(codec, tile=int(options["tile"]), overlap=int(options["learned_overlap"]) if learned else 0)
