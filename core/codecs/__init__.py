"""Codecs behind one interface (:class:`Codec`) and a name → factory registry.

>>> from core.codecs import get_codec
>>> codec = get_codec("jpeg2000")
>>> data = codec.encode(pixels, setting=20)      # bytes
>>> restored = codec.decode(data)                # numpy array
"""
from core.codecs.base import (  # noqa: F401
    Codec,
    CodecError,
    UnsupportedInput,
    available_codecs,
    get_codec,
    parse_codec_list,
    register_codec,
)
