"""The codec registry: name → codec, built from the classical codecs, the shipped learned
checkpoints and the catalog's sweeps (``data/stages.toml`` ``[sweeps]``).

This module imports the codec modules; they never import it, so there is no import circle.
A lossy codec's ``default_settings`` is its catalog sweep; lossless codecs sweep ``(None,)``; a ``+grain``
variant (:mod:`core.codecs.grain`) sweeps its inner codec's settings.
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Callable, Iterable

from core.codecs.base import Codec

_EXTRA: dict[str, Callable[[], Codec]] = {}


@lru_cache(maxsize=1)
def _factories() -> dict[str, Callable[[], Codec]]:
    from core.catalog import sweeps
    from core.codecs.classical import CODECS

    sweep = sweeps()
    table: dict[str, Callable[[], Codec]] = {}

    def with_sweep(cls):
        def make():
            codec = cls()
            if not codec.lossless:
                if codec.name not in sweep:
                    raise KeyError(f"codec {codec.name!r} has no sweep in the catalog's [sweeps] table")
                codec.default_settings = sweep[codec.name]
            return codec
        return make

    for cls in CODECS:
        table[cls.name] = with_sweep(cls)
    try:
        from core.codecs.learned import shipped_codecs
    except ImportError as exc:  # learned codecs need torch + compressai
        warnings.warn(f"learned codecs unavailable: {exc}")
    else:
        for name, codec in shipped_codecs().items():
            if name in sweep:
                codec.default_settings = sweep[name]
            table[name] = (lambda c=codec: c)  # one instance: its models load once per process
    from core.codecs.grain import GRAIN_CODECS, SUFFIX, GrainCodec

    for name in GRAIN_CODECS:  # "+grain" variants share the inner codec's (cached) instance; WrappingCodec
        if name in table:      # copies its sweep
            table[name + SUFFIX] = (lambda inner=table[name]: GrainCodec(inner()))
    return table


def register_codec(name: str, factory: Callable[[], Codec]) -> None:
    """Register an extra codec (a plug-in or a test double) under ``name``."""
    if name in _factories() or name in _EXTRA:
        raise ValueError(f"codec {name!r} registered twice")
    _EXTRA[name] = factory


def unregister_codec(name: str) -> None:
    """Remove a codec added with :func:`register_codec`."""
    _EXTRA.pop(name, None)


def get_codec(name: str) -> Codec:
    """Build the codec registered as ``name``."""
    factory = _factories().get(name) or _EXTRA.get(name)
    if factory is None:
        raise KeyError(f"unknown codec {name!r}; available: {', '.join(available_codecs())}")
    return factory()


def available_codecs(family: str | None = None) -> list[str]:
    """Names of every registered codec (optionally only ``classical`` or ``learned``; ``grain``: the codecs
    whose decoder synthesises grain, :mod:`core.codecs.grain`, which the other two families leave out)."""
    from core.codecs.grain import is_synthetic

    names = sorted({*_factories(), *_EXTRA})
    if family is None:
        return names
    codecs = {n: get_codec(n) for n in names}  # construction is cheap (models load lazily)
    if family == "grain":
        return [n for n, c in codecs.items() if is_synthetic(c)]
    return [n for n, c in codecs.items() if c.family == family and not is_synthetic(c)]


def parse_codec_list(text: str | Iterable[str]) -> list[str]:
    """Comma-separated codec names → list, each checked against the registry."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    for name in names:
        get_codec(name)  # raises with the list of valid names
    return names
