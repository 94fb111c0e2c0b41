"""The learned codecs' intensity window for images deeper than 8 bits (stream version 4)."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from core.codecs import CodecError
from core.codecs import learned
from core.codecs.bitstream import Header, pack, unpack
from core.codecs.learned import intensity_window, load_codecs
from tests.test_learned import _tiny_checkpoint


@pytest.fixture(scope="module")
def codec(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    for ch in (1, 3):
        _tiny_checkpoint(folder, "mean-scale", ch, 1)
    return load_codecs(folder)["tiny"]


def _full_range_8bit(h=64, w=80, channels=1):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (h, w) if channels == 1 else (h, w, channels)).astype(np.uint8)
    x.flat[0], x.flat[1] = 0, 255
    return x


def test_the_window_is_the_images_own_range_above_8_bits_only():
    x16 = np.array([[1000, 2000], [3000, 1500]], dtype=np.uint16)
    assert intensity_window(x16, 16) == (1000, 3000)
    assert intensity_window(x16, 12) == (1000, 3000)
    assert intensity_window(np.array([[0, 65535]], dtype=np.uint16), 16) is None  # full range: no window
    assert intensity_window(np.array([[3, 200]], dtype=np.uint8), 8) is None  # 8 bits: always ÷ 255
    assert intensity_window(np.full((4, 4), 700, np.uint16), 16) == (700, 701)  # flat: one level wide
    assert intensity_window(np.full((4, 4), 4095, np.uint16), 12) == (4094, 4095)
    rgb = np.zeros((2, 2, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 100, 500, 900
    assert intensity_window(rgb, 16) == (100, 900)  # one window over all channels: colour balance kept


@pytest.mark.parametrize("channels", [1, 3])
def test_a_dim_deep_image_is_coded_as_its_stretched_8_bit_self(codec, channels):
    """y = 4·x + 1000 in 16 bits maps to exactly x / 255: the network sees the same input, so the stream holds
    the same entropy-coded strings as the 8-bit image's, plus the 4-byte window, and decodes into [lo, hi]."""
    x = _full_range_8bit(channels=channels)
    y = x.astype(np.uint16) * 4 + 1000
    data8, rec8 = codec.encode_with_reconstruction(x, 1, 8)
    data16, rec16 = codec.encode_with_reconstruction(y, 1, 16)
    h8, s8 = unpack(data8)
    h16, s16 = unpack(data16)
    assert (h8.version, h8.window) == (3, None)
    assert (h16.version, h16.window, h16.bit_depth) == (4, (1000, 2020), 16)
    assert s16 == s8 and len(data16) == len(data8) + 4
    out = codec.decode(data16)
    assert np.array_equal(out, rec16) and out.dtype == np.uint16
    assert out.min() >= 1000 and out.max() <= 2020
    # the same reconstruction, in the 16-bit image's units (the 8-bit one rounds to 1/255, this one to 1/1020)
    assert np.abs(out.astype(float) - (rec8.astype(float) * 4 + 1000)).max() <= 2.0


def test_the_window_is_what_a_dim_image_needs(codec, monkeypatch):
    """Without the window (the plain ÷ 65535 of before), a 16-bit image using 2 % of its range is coded with an
    error set by the whole range; with it, by its own."""
    y = _full_range_8bit().astype(np.uint16) * 4 + 1000
    windowed = codec.decode(codec.encode(y, 1, 16))
    monkeypatch.setattr(learned, "WINDOW_ABOVE_BITS", 16)
    plain_data = codec.encode(y, 1, 16)
    assert unpack(plain_data)[0].version == 3
    plain = codec.decode(plain_data)
    err = lambda a: np.abs(a.astype(float) - y).mean()  # noqa: E731
    assert err(windowed) < err(plain) / 4


def test_window_headers_are_checked(codec):
    data = codec.encode(_full_range_8bit().astype(np.uint16) * 4 + 1000, 1, 16)
    header, strings = unpack(data)
    with pytest.raises(ValueError, match="exactly in version 4"):
        pack(header, strings, version=3)
    with pytest.raises(ValueError, match="outside"):
        pack(Header(**{**header.__dict__, "window": (500, 400)}), strings)
    with pytest.raises(ValueError, match="outside"):
        pack(Header(**{**header.__dict__, "bit_depth": 10, "window": (0, 2000)}), strings)
    # a crafted stream with a valid CRC but an impossible window (hi < lo) is refused with the reason
    pos = data.index(struct.pack(">HH", 1000, 2020))
    body = data[:pos] + struct.pack(">HH", 2020, 1000) + data[pos + 4:-4]
    with pytest.raises(CodecError, match="intensity window 2020..1000"):
        codec.decode(body + struct.pack(">I", zlib.crc32(body)))


def test_the_bench_compares_real_streams_with_and_without_the_window(codec):
    from bench.intensity_window import OFF, measure, window_above

    dim = _full_range_8bit().astype(np.uint16) * 4 + 1000
    frame = measure(codec, [("dim", dim, 16), ("full", _full_range_8bit(), 8)], [1])
    assert learned.WINDOW_ABOVE_BITS == 8  # window_above restored it
    with window_above(OFF):
        assert learned.WINDOW_ABOVE_BITS == 16
    by = frame.set_index(["codec", "image_id"])
    assert by.loc[("window", "dim"), "bytes"] == by.loc[("window", "full"), "bytes"] + 4  # its stretched self
    assert by.loc[("window", "dim"), "psnr"] > by.loc[("plain", "dim"), "psnr"] + 6
    # 8-bit images are coded the same either way
    assert by.loc[("window", "full"), "bytes"] == by.loc[("plain", "full"), "bytes"]
    assert by.loc[("window", "full"), "psnr"] == by.loc[("plain", "full"), "psnr"]


def test_the_bench_can_window_8_bit_images_too_for_the_8_bit_verdict(codec):
    """--window-above-bits 7 windows 8-bit images as well (how the 8-bit case is measured): a dim 8-bit image gets a
    version-4 stream that decodes into its window."""
    from bench.intensity_window import measure, window_above

    dim8 = (_full_range_8bit() // 8 + 10).astype(np.uint8)  # 10..41
    with window_above(7):
        assert intensity_window(dim8, 8) == (10, 41)
        header = unpack(codec.encode(dim8, 1, 8))[0]
        assert (header.version, header.window) == (4, (10, 41))
    frame = measure(codec, [("dim8", dim8, 8)], [1], window_above_bits=7).set_index("codec")
    assert frame.loc["window", "bytes"] != frame.loc["plain", "bytes"]
    assert learned.WINDOW_ABOVE_BITS == 8
