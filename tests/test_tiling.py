"""TiledCodec: exact reassembly (lossless), no seams (lossy), every byte counted, runner thresholds."""
import struct

import numpy as np
import pytest

from core.codecs import available_codecs, get_codec
from core.codecs.base import CodecError
from core.evaluate import evaluate
from core.io import as_bioimage
from core.tiling import TiledCodec, tile_edges, tile_grid, tile_if_large

TILE = 1024
#: Border band half-width (px) and the allowed ratio of mean abs error in the band to inside tiles.
BAND, SEAM_TOLERANCE = 4, 1.05


def _texture(n: int, seed: int = 0) -> np.ndarray:
    """n×n 8-bit image: smooth sinusoid structure + Gaussian noise (cheap to generate at 6000²)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 37, n, dtype=np.float32)[:, None]
    x = np.linspace(0, 53, n, dtype=np.float32)[None, :]
    base = 120 + 50 * np.sin(y) * np.cos(x * 0.7) + 30 * np.sin(0.31 * x + 0.17 * y)
    return np.clip(base + rng.normal(0, 6, (n, n)).astype(np.float32), 0, 255).astype(np.uint8)


def _band_errors(original, reconstruction, edges):
    err = np.abs(reconstruction.astype(np.float32) - original.astype(np.float32))
    band = np.zeros(original.shape, bool)
    for e in edges[1:-1]:
        band[e - BAND:e + BAND, :] = True
        band[:, e - BAND:e + BAND] = True
    return float(err[band].mean()), float(err[~band].mean())


def test_tile_edges_are_near_equal_and_cover():
    assert tile_edges(6000, 1024) == [0, 1000, 2000, 3000, 4000, 5000, 6000]
    assert tile_edges(1000, 1024) == [0, 1000]
    assert tile_edges(1025, 1024) == [0, 512, 1025] or tile_edges(1025, 1024) == [0, 513, 1025]
    grid = tile_grid(100, 250, 64, 8)
    assert len(grid) == 2 * 4
    (core0, coded0), (core_last, coded_last) = grid[0], grid[-1]
    assert core0[:2] == (0, 0) and coded0[:2] == (0, 0)  # overlap clipped at the border
    assert coded0[2:] == (core0[2] + 8, core0[3] + 8)
    assert core_last[2:] == (100, 250) and coded_last[2:] == (100, 250)


def test_lossless_6000_square_reassembles_exactly_and_counts_every_byte():
    image = _texture(6000)
    inner = get_codec("jpegls")
    codec = TiledCodec(inner, tile=TILE)
    data = codec.encode(image)
    assert np.array_equal(codec.decode(data), image)
    header = struct.calcsize(">4sBIIHHI") + 4 * 36
    lengths = struct.unpack_from(">36I", data, struct.calcsize(">4sBIIHHI"))
    assert len(data) == header + sum(lengths)  # container = header + every tile's bytes
    first_tile = inner.encode(np.ascontiguousarray(image[:1000, :1000]))
    assert lengths[0] == len(first_tile)


def test_lossy_tiles_have_no_seams():
    """JPEG 2000 at 20:1 on a 3000×3000 image (3×3 tiles of 1000 px; 3000 rather than 6000 to keep
    the test under ~10 s): the mean abs error within 4 px of a tile border is at most 5 % above the
    error inside tiles, without overlap (classical) and with 16 px overlap (learned-style)."""
    image = _texture(3000, seed=1)
    edges = tile_edges(3000, TILE)
    for overlap in (0, 16):
        codec = TiledCodec(get_codec("jpeg2000"), tile=TILE, overlap=overlap)
        recon = codec.decode(codec.encode(image, 20))
        border, inside = _band_errors(image, recon, edges)
        assert inside > 0.5  # really lossy
        assert border <= SEAM_TOLERANCE * inside, (overlap, border, inside)


@pytest.mark.skipif(not available_codecs("learned"), reason="no learned codec registered (core/codecs/learned.py)")
def test_learned_codec_tiles_without_seams():
    name = available_codecs("learned")[0]
    inner = get_codec(name)
    image = _texture(768, seed=2)
    if 1 not in inner.channels:
        image = np.ascontiguousarray(np.dstack([image] * 3))
    codec = TiledCodec(inner, tile=256, overlap=32)
    setting = inner.default_settings[len(inner.default_settings) // 2]
    recon = codec.decode(codec.encode(image, setting))
    border, inside = _band_errors(image, recon, tile_edges(768, 256))
    assert border <= 1.15 * inside, (name, border, inside)


def test_evaluate_measures_whole_image_and_total_bytes():
    image = as_bioimage(_texture(1500, seed=3), 8)
    codec = TiledCodec(get_codec("png"), tile=512)
    result = evaluate(image, codec, None)
    assert result.metrics["bytes"] == len(result.encoded)
    assert result.metrics["psnr"] == float("inf")
    assert result.reconstruction.shape == (1500, 1500)


def test_rgb_and_16bit_tiles():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (300, 420, 3), dtype=np.uint8)
    deep = rng.integers(0, 4096, (300, 420), dtype=np.uint16)
    codec = TiledCodec(get_codec("png"), tile=128)
    assert np.array_equal(codec.decode(codec.encode(rgb)), rgb)
    assert np.array_equal(codec.decode(codec.encode(deep, None, 12)), deep)


def test_corrupt_stream_is_a_codec_error():
    codec = TiledCodec(get_codec("png"), tile=64)
    data = codec.encode(np.zeros((100, 100), np.uint8))
    with pytest.raises(CodecError):
        codec.decode(b"XXXX" + data[4:])
    with pytest.raises(CodecError):
        codec.decode(data[:-3])


def test_tile_if_large_thresholds():
    options = {"tile": 1024, "learned_overlap": 32, "learned_max_side": 2048, "classical_max_side": 0}
    png = get_codec("png")
    assert tile_if_large(png, 9000, 9000, options) is png  # classical tiling disabled
    options["classical_max_side"] = 4096
    assert tile_if_large(png, 4096, 100, options) is png
    tiled = tile_if_large(png, 4097, 100, options)
    assert isinstance(tiled, TiledCodec) and tiled.overlap == 0 and tiled.name == "png"


def test_runner_tiles_images_above_the_threshold(tmp_path, monkeypatch):
    """run_job wraps the codec when the image exceeds the [tiling] threshold: stored bytes = tiled container."""
    from core import catalog, runner, store
    from core.io import write_image

    folder = tmp_path / "imgs"
    folder.mkdir()
    image = as_bioimage(_texture(600, seed=5), 8)
    write_image(folder / "big.png", image)
    monkeypatch.setattr(catalog, "tiling_options", lambda: {
        "tile": 256, "learned_overlap": 32, "learned_max_side": 2048, "classical_max_side": 512})
    db = tmp_path / "r.duckdb"
    assert runner.main(["--data-root", str(folder), "--codecs", "png", "--db", str(db), "--quiet"]) == 0
    con = store.open_reader(db)
    stored, psnr = con.execute("SELECT bytes, psnr FROM results WHERE codec = 'png'").fetchone()
    con.close()
    assert stored == len(TiledCodec(get_codec("png"), tile=256).encode(image.pixels))
    assert stored != len(get_codec("png").encode(image.pixels)) and psnr == float("inf")
