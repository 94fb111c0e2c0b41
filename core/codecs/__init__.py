"""Codecs behind one interface (:class:`Codec`) and a name → factory registry.

>>> from core.codecs import get_codec
>>> codec = get_codec("jpeg2000")
>>> data = codec.encode(pixels, setting=20)      # bytes
>>> restored = codec.decode(data)                # numpy array
"""
from core.codecs.base import Codec, CodecError, UnsupportedInput  # noqa: F401
from core.codecs.registry import (  # noqa: F401
    available_codecs,
    get_codec,
    parse_codec_list,
    register_codec,
    unregister_codec,
)
