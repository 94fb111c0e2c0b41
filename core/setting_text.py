"""Codec settings as text, defined once: the canonical text stored in the ``setting`` column, shown by the
dashboard, written into file headers and typed on command lines, and its parser.

* ``None`` (lossless codecs) ⇄ ``"-"``
* integral numbers ⇄ ``"20"`` (``20.0`` is written ``"20"``; ``"20"`` parses to ``int 20``)
* other numbers ⇄ Python's shortest round-trip text (``"0.75"``)

``parse_setting(format_setting(x)) == x`` for every setting a codec takes.
"""
from __future__ import annotations

import math

NONE_TEXTS = ("", "-", "none", "None")


def format_setting(setting) -> str:
    """Canonical text of a codec setting: '-' for None, '20' for 20.0, '0.75' for 0.75."""
    if setting is None:
        return "-"
    if isinstance(setting, float) and setting.is_integer():
        return str(int(setting))
    return str(setting)


def parse_setting(text):
    """Inverse of :func:`format_setting`: None, an int when integral, else a float.

    Raises ValueError naming the text when it is not a number.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        value = float(text)
    else:
        text = text.strip()
        if text in NONE_TEXTS:
            return None
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"setting {text!r} is not a number (or '-' for lossless codecs)") from None
    if not math.isfinite(value):
        raise ValueError(f"setting {text!r} is not a finite number")
    return int(value) if value.is_integer() else value


def parse_sweep_spec(text: str | None, codecs: list[str]) -> dict[str, tuple]:
    """``"jpeg=10,90;jpeg2000=50"`` → {codec: settings}; ``"10,50,90"`` applies to every listed codec.

    Codec names are returned as given; the caller checks them against the registry.
    """
    if not text:
        return {}

    def values(part: str) -> tuple:
        return tuple(parse_setting(v) for v in part.split(","))

    if "=" not in text:
        return {name: values(text) for name in codecs}
    result = {}
    for part in text.split(";"):
        if part.strip():
            name, _, vals = part.partition("=")
            result[name.strip()] = values(vals)
    return result
