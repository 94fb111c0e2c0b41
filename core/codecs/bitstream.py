"""Self-contained byte formats of the product: learned-codec streams and the file wrapper.

Learned-codec stream (``BCLC``), all integers big-endian::

    offset  size  field
    0       4     magic  b"BCLC"
    4       1     format version: 4 with an intensity window, else 3 (version 2 — without the
                  reconstruction hash — is still read)
    5       1     L = length of the model id
    6       L     model id, ASCII (the checkpoint's stem in data/weights/, e.g. "em-msssim-q3")
    6+L     8     checkpoint hash: first 8 bytes of sha256 of the weights file (.pt)
    +8      4     H (pixels)      uint32
    +4      4     W (pixels)      uint32
    +1      1     channels (1 or 3)
    +1      1     bit depth (8..16)
    +2      2     rate setting × 1000, uint16 (variable-rate models: the codec setting 1.000..16.000;
                  0 for fixed-rate checkpoints, whose model id names the rate point)
    +8      8     reconstruction hash (version 3): first 8 bytes of SHA-256 of the pixels the *encoder*
                  reconstructed (:func:`reconstruction_hash`), so a decoder can prove it reproduced them
                  (``python -m core.codecs decompress --verify``)
    +4      4     intensity window (version 4 only): lo, hi, uint16 each, 0 ≤ lo < hi ≤ 2**bit_depth − 1;
                  the network coded (pixels − lo) / (hi − lo) and the decoder maps its output back
                  into [lo, hi] (:mod:`core.codecs.learned`: images deeper than 8 bits)
    +1      1     S = number of entropy-coded strings (1 factorized, 2 hyperpriors, 3 checkerboard)
    +4·S    4·S   length of each string in bytes, uint32
    ...           the S strings (CompressAI rANS output, in the model's order)
    last 4  4     CRC-32 (zlib) of every preceding byte

Version 3 streams choose every probability table in integer arithmetic
(:mod:`core.models.exact`), so they cannot desynchronise on another thread count or
machine; version 2 streams decode through the float path they were written with.
Decoding needs only these bytes and the checkpoint named by the model id whose
hash matches.  Every byte counts towards bpp.  Any corruption or truncation is
reported as :class:`~core.codecs.base.CodecError` (the CRC catches damage to
the entropy-coded strings, which rANS would otherwise decode to a wrong image).

The CRC only catches *accidental* damage: a crafted stream carries a valid CRC.
:func:`unpack` therefore also refuses headers out of range — channels other
than 1/3, bit depth outside 8..16, a zero side, or more than
:data:`core.io.MAX_PIXELS` pixels (the one image-size limit of the product) —
and :meth:`core.codecs.learned.LearnedModel.decode_parsed` refuses strings too
short for the declared shape before CompressAI's entropy decoder (which reads
past the end of a too-short string) sees them.

File wrapper (``BCF1``, used by ``python -m core.codecs compress``)::

    0   4   magic b"BCF1"
    4   1   format version (1)
    5   1   C = length of the codec name;  6..6+C  codec name (ASCII, registry name)
    +1  1   T = length of the setting text; then T bytes: the setting as text ("" for lossless)
    +1  1   colour mode: 0 = joint, 1 = per_channel
    ...     the codec's own encoded bytes (for learned codecs: the BCLC stream above)

The wrapper lets ``decompress`` find the codec (classical or learned) without
being told; it adds 8 + len(name) + len(setting) bytes.
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from core.codecs.base import CodecError
from core.io import MAX_PIXELS
from core.setting_text import format_setting, parse_setting

MAGIC = b"BCLC"
VERSION = 3
#: Version 3 plus the intensity window: written exactly when a header has one.
WINDOW_VERSION = 4
READABLE_VERSIONS = (2, 3, 4)
RECON_HASH_BYTES = 8
FILE_MAGIC = b"BCF1"
FILE_VERSION = 1
HASH_BYTES = 8
MAX_STRINGS = 16


@dataclass(frozen=True)
class Header:
    """Decoded header of a learned-codec stream."""

    model_id: str
    checkpoint_hash: bytes  # HASH_BYTES bytes
    height: int
    width: int
    channels: int
    bit_depth: int
    setting_milli: int = 0  # variable-rate models: the rate setting × 1000 (0 = fixed-rate checkpoint)
    recon_hash: bytes = b""  # version 3: RECON_HASH_BYTES of the encoder's reconstruction; b"" in version 2
    version: int = VERSION
    #: (lo, hi) of the intensity window the network coded, in the image's own units; None = [0, 2**bit_depth − 1]
    window: tuple[int, int] | None = None


def reconstruction_hash(pixels: np.ndarray) -> bytes:
    """First 8 bytes of SHA-256 of a decoded image: its shape, dtype and samples (little-endian, C order)."""
    pixels = np.ascontiguousarray(pixels)
    head = f"{pixels.shape}|{pixels.dtype.str.lstrip('<>|=')}".encode()
    return hashlib.sha256(head + pixels.astype(pixels.dtype.newbyteorder("<"), copy=False).tobytes()).digest()[
        :RECON_HASH_BYTES]


def pack(header: Header, strings: list[bytes], version: int | None = None) -> bytes:
    """Serialise ``header`` + entropy-coded ``strings`` into one byte string (see module doc).

    The version is :data:`WINDOW_VERSION` when the header has a ``window``, else :data:`VERSION`.
    A header without ``recon_hash`` gets 8 zero bytes (which no reconstruction matches: ``--verify`` fails);
    ``version=2`` writes the previous layout (no hash; tests of old streams)."""
    if version is None:
        version = WINDOW_VERSION if header.window is not None else VERSION
    if (header.window is not None) != (version == WINDOW_VERSION):
        raise ValueError(f"version {version} stream with window {header.window!r}: "
                         f"the window is written exactly in version {WINDOW_VERSION}")
    window = b""
    if header.window is not None:
        lo, hi = header.window
        if not 0 <= lo < hi <= (1 << header.bit_depth) - 1:
            raise ValueError(f"intensity window {header.window!r} outside 0 <= lo < hi <= 2**{header.bit_depth} - 1")
        window = struct.pack(">HH", lo, hi)
    mid = header.model_id.encode("ascii")
    if not 0 < len(mid) < 256:
        raise ValueError(f"model id must be 1..255 ASCII bytes, got {header.model_id!r}")
    if len(header.checkpoint_hash) != HASH_BYTES:
        raise ValueError(f"checkpoint hash must be {HASH_BYTES} bytes")
    if not 0 < len(strings) <= MAX_STRINGS:
        raise ValueError(f"1..{MAX_STRINGS} strings expected, got {len(strings)}")
    if version not in READABLE_VERSIONS:
        raise ValueError(f"version must be one of {READABLE_VERSIONS}")
    recon = (header.recon_hash or bytes(RECON_HASH_BYTES)) if version >= 3 else b""
    if version >= 3 and len(recon) != RECON_HASH_BYTES:
        raise ValueError(f"reconstruction hash must be {RECON_HASH_BYTES} bytes")
    body = b"".join([
        MAGIC, bytes([version, len(mid)]), mid, header.checkpoint_hash,
        struct.pack(">IIBBH", header.height, header.width, header.channels, header.bit_depth,
                    header.setting_milli), recon, window, bytes([len(strings)]),
        struct.pack(f">{len(strings)}I", *map(len, strings)),
        *strings,
    ])
    return body + struct.pack(">I", zlib.crc32(body))


def unpack(data: bytes) -> tuple[Header, list[bytes]]:
    """Parse and verify a stream from :func:`pack`; raises :class:`CodecError` on any damage."""
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise CodecError("not a learned-codec stream (bad magic bytes)")
    if len(data) < 6 + 4:
        raise CodecError(f"learned-codec stream truncated ({len(data)} bytes)")
    (crc,) = struct.unpack(">I", data[-4:])
    body = data[:-4]
    if zlib.crc32(body) != crc:
        raise CodecError("learned-codec stream is corrupt or truncated (CRC-32 mismatch)")
    version = body[4]
    if version not in READABLE_VERSIONS:
        raise CodecError(f"learned-codec stream version {version} is not supported (this build reads "
                         f"{', '.join(map(str, READABLE_VERSIONS))})")
    n = body[5]
    pos = 6
    hash_bytes = RECON_HASH_BYTES if version >= 3 else 0
    window_bytes = 4 if version == WINDOW_VERSION else 0
    fixed = n + HASH_BYTES + 13 + hash_bytes + window_bytes
    if len(body) < pos + fixed:
        raise CodecError("learned-codec stream truncated in its header")
    try:
        model_id = body[pos:pos + n].decode("ascii")
    except UnicodeDecodeError:
        raise CodecError("learned-codec stream: model id is not ASCII") from None
    pos += n
    chash = body[pos:pos + HASH_BYTES]
    pos += HASH_BYTES
    h, w, c, bd, milli = struct.unpack(">IIBBH", body[pos:pos + 12])
    pos += 12
    recon = body[pos:pos + hash_bytes]
    pos += hash_bytes
    window = struct.unpack(">HH", body[pos:pos + 4]) if window_bytes else None
    pos += window_bytes
    count = body[pos]
    pos += 1
    if c not in (1, 3) or not 8 <= bd <= 16 or h == 0 or w == 0 or not 0 < count <= MAX_STRINGS:
        raise CodecError(f"learned-codec stream header is invalid (H={h}, W={w}, channels={c}, "
                         f"bit depth={bd}, strings={count})")
    if window is not None and not 0 <= window[0] < window[1] <= (1 << bd) - 1:
        raise CodecError(f"learned-codec stream header is invalid (intensity window {window[0]}..{window[1]} "
                         f"for bit depth {bd})")
    if h * w > MAX_PIXELS:
        raise CodecError(f"learned-codec stream header claims {h}x{w} pixels, more than the "
                         f"{MAX_PIXELS}-pixel limit")
    if len(body) < pos + 4 * count:
        raise CodecError("learned-codec stream truncated in its string table")
    lengths = struct.unpack(f">{count}I", body[pos:pos + 4 * count])
    pos += 4 * count
    if pos + sum(lengths) != len(body):
        raise CodecError(f"learned-codec stream holds {len(body) - pos} string bytes, header says {sum(lengths)}")
    strings = []
    for length in lengths:
        strings.append(body[pos:pos + length])
        pos += length
    return Header(model_id, chash, h, w, c, bd, milli, recon, version, window), strings


# ----------------------------------------------------------------------------- file wrapper
COLOUR_MODES = ("joint", "per_channel")


def wrap_file(codec: str, setting, payload: bytes, colour_mode: str = "joint") -> bytes:
    """Prefix ``payload`` with the ``BCF1`` file header naming codec, setting and colour mode."""
    name = codec.encode("ascii")
    text = b"" if setting is None else format_setting(setting).encode("ascii")
    if not 0 < len(name) < 256 or len(text) > 255:
        raise ValueError("codec name / setting too long for the file header")
    return b"".join([FILE_MAGIC, bytes([FILE_VERSION, len(name)]), name, bytes([len(text)]), text,
                     bytes([COLOUR_MODES.index(colour_mode)]), payload])


def unwrap_file(data: bytes) -> tuple[str, object, str, bytes]:
    """Inverse of :func:`wrap_file`: ``(codec name, setting, colour mode, payload)``."""
    data = bytes(data)
    if data[:4] != FILE_MAGIC:
        raise CodecError("not a BioCodec file (bad magic bytes; expected b'BCF1')")
    if len(data) < 7 or data[4] != FILE_VERSION:
        raise CodecError("BioCodec file truncated or of an unsupported version")
    pos = 6 + data[5]
    if len(data) < pos + 1:
        raise CodecError("BioCodec file truncated in its header")
    name = data[6:pos].decode("ascii", errors="replace")
    t = data[pos]
    text = data[pos + 1:pos + 1 + t].decode("ascii", errors="replace")
    pos += 1 + t
    if len(data) < pos + 1 or data[pos] >= len(COLOUR_MODES):
        raise CodecError("BioCodec file header is invalid (colour mode)")
    mode = COLOUR_MODES[data[pos]]
    try:
        setting = None if text == "" else parse_setting(text)
    except ValueError as exc:
        raise CodecError(f"BioCodec file: {exc}") from None
    return name, setting, mode, data[pos + 1:]
