"""The codec pipeline, built in one place: colour mode → tiling → codec.

Every caller that codes an image — the runner, the file CLI, the dashboard and the benchmarks —
gets its :class:`~core.codecs.base.Codec` from :func:`build_encoder` and decodes with
:func:`build_decoder`, so they all code an image the same way:

1. **colour mode** — ``joint`` (the codec's own path: the 3-channel architecture of a learned codec on
   RGB) or ``per_channel`` (each RGB plane through the codec's grayscale path,
   :class:`~core.codecs.per_channel.PerChannelCodec`).  A grayscale image has one plane, so its
   per-channel coding *is* its joint coding: :func:`effective_colour_mode` says ``joint``, and that is
   what streams record.
2. **tiling** — images larger than the ``[tiling]`` thresholds of ``data/stages.toml`` are coded tile
   by tile (:class:`~core.tiling.TiledCodec`; learned codecs with overlap), every tile's bytes counted.
   An image larger than the codec's own library can code in one piece
   (:data:`~core.codecs.base.LIBRARY_SIZE_LIMITS`: WebP's 16382-px sides, AVIF's 16384² pixels, JPEG's
   65535 px) is tiled too, whatever the thresholds say, so the threshold never promises a size the
   library refuses.  A tiled stream starts with its own magic bytes, so the decoder needs no flag.
3. **codec** — the registry entry (:func:`core.codecs.get_codec`).
"""
from __future__ import annotations

from core.codecs import Codec, get_codec
from core.codecs.per_channel import PerChannelCodec
from core.tiling import TILED_MAGIC, TiledCodec, tile_if_large

COLOUR_MODES = ("joint", "per_channel")


def effective_colour_mode(colour_mode: str, channels: int) -> str:
    """The colour mode actually applied to an image of ``channels`` planes (``joint`` for grayscale)."""
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {colour_mode!r}")
    return colour_mode if channels == 3 else "joint"


def build_encoder(codec: Codec | str, colour_mode: str = "joint", channels: int = 1,
                  height: int | None = None, width: int | None = None, tiling: dict | None = None) -> Codec:
    """The codec that codes an image of ``channels`` × ``height`` × ``width`` pixels in ``colour_mode``.

    ``height``/``width`` None skips tiling (callers that code small crops); ``tiling`` overrides the
    catalog's ``[tiling]`` table.
    """
    codec = get_codec(codec) if isinstance(codec, str) else codec
    base = codec
    if effective_colour_mode(colour_mode, channels) == "per_channel":
        codec = PerChannelCodec(codec)
    if height is not None and width is not None:
        if tiling is None:
            from core.catalog import tiling_options

            tiling = tiling_options()
        tiled = tile_if_large(codec, height, width, tiling)
        if tiled is codec and exceeds_library_limits(base, height, width):
            _, high, _ = base.size_limits()
            tile = min(int(tiling["tile"]), high or int(tiling["tile"]))
            tiled = TiledCodec(codec, tile=tile, overlap=int(tiling["learned_overlap"]) if base.family == "learned"
                               else 0)
        codec = tiled
    return codec


def exceeds_library_limits(codec: Codec, height: int, width: int) -> bool:
    """True when the library behind ``codec`` cannot code a height×width image in one piece because it is
    too *large* (too long a side or too many pixels; too small a side is the codec's to refuse)."""
    _, high, most = codec.size_limits()
    return (high is not None and max(height, width) > high) or (most is not None and height * width > most)


def build_decoder(codec: Codec | str, colour_mode: str, payload: bytes) -> Codec:
    """The codec that decodes ``payload``, made by :func:`build_encoder` with ``codec`` and ``colour_mode``."""
    codec = get_codec(codec) if isinstance(codec, str) else codec
    if colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour_mode must be one of {COLOUR_MODES}, got {colour_mode!r}")
    if colour_mode == "per_channel":
        codec = PerChannelCodec(codec)
    if bytes(payload[:4]) == TILED_MAGIC:
        codec = TiledCodec(codec)
    return codec
