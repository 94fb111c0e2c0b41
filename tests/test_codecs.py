"""Classical codecs behind the one Codec interface: exactness, monotone rate, explicit refusal."""
import numpy as np
import pytest

from core.codecs import CodecError, UnsupportedInput, available_codecs, get_codec
from core.codecs.per_channel import PerChannelCodec
from skimage import data

CLASSICAL = available_codecs("classical")
CAMERA = data.camera()[128:384, 128:384]                      # 256x256 8-bit gray
ASTRONAUT = data.astronaut()[:256, 128:384]                    # 256x256 8-bit RGB
GRAY16 = (CAMERA.astype(np.uint32) * 257).astype(np.uint16)     # full 16-bit range
RGB16 = (ASTRONAUT.astype(np.uint32) * 257 + 3).astype(np.uint16)
GRAY12 = (CAMERA.astype(np.uint16) << 4) | 7                   # 12 bits used in uint16
SAMPLES = {"gray8": (CAMERA, 8), "rgb8": (ASTRONAUT, 8), "gray16": (GRAY16, 16), "rgb16": (RGB16, 16),
           "gray12": (GRAY12, 12)}


def test_registry_lists_every_classical_codec():
    assert set(CLASSICAL) >= {"jpeg", "jpeg2000", "jpeg2000-lossless", "png", "jpegxl", "jpegxl-lossless",
                              "avif", "webp", "webp-lossless", "jpegls", "jpegls-near"}
    with pytest.raises(KeyError, match="unknown codec 'nope'"):
        get_codec("nope")


@pytest.mark.parametrize("name", [n for n in CLASSICAL if get_codec(n).lossless])
@pytest.mark.parametrize("sample", SAMPLES)
def test_lossless_codecs_are_bit_exact(name, sample):
    codec = get_codec(name)
    pixels, depth = SAMPLES[sample]
    channels = 1 if pixels.ndim == 2 else 3
    if not codec.supports(depth, channels):
        with pytest.raises(UnsupportedInput):
            codec.encode(pixels, None, depth)
        return
    decoded = codec.decode(codec.encode(pixels, None, depth))
    assert decoded.dtype == pixels.dtype
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize("name", [n for n in CLASSICAL if not get_codec(n).lossless])
@pytest.mark.parametrize("sample", ["gray8", "rgb8", "gray16", "gray12"])
def test_lossy_codecs_grow_monotonically_over_their_sweep(name, sample):
    codec = get_codec(name)
    pixels, depth = SAMPLES[sample]
    if not codec.supports(depth, 1 if pixels.ndim == 2 else 3):
        pytest.skip(f"{name} does not take {sample} (refusal tested separately)")
    sizes, errors = [], []
    for setting in codec.default_settings:
        encoded = codec.encode(pixels, setting, depth)
        decoded = codec.decode(encoded)
        assert decoded.shape == pixels.shape and decoded.dtype == pixels.dtype
        sizes.append(len(encoded))
        errors.append(np.mean((decoded.astype(float) - pixels) ** 2))
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), sizes
    assert errors[-1] < errors[0]


@pytest.mark.parametrize("ratio", [10, 40])
@pytest.mark.parametrize("sample", ["gray8", "rgb8", "gray16"])
def test_jpeg2000_hits_requested_ratio_within_10_percent(ratio, sample):
    pixels, depth = SAMPLES[sample]
    encoded = get_codec("jpeg2000").encode(pixels, ratio, depth)
    achieved = pixels.nbytes / len(encoded)
    assert abs(achieved - ratio) / ratio < 0.10, achieved


@pytest.mark.parametrize("name, sample", [("jpeg", "gray16"), ("webp", "rgb16"), ("avif", "gray16"),
                                          ("webp-lossless", "gray12")])
def test_unsupported_depth_is_refused_not_converted(name, sample):
    pixels, depth = SAMPLES[sample]
    codec = get_codec(name)
    with pytest.raises(UnsupportedInput, match=f"{depth}-bit input is not supported"):
        codec.encode(pixels, codec.default_settings[0], depth)


def test_bad_arguments_and_corrupt_streams():
    with pytest.raises(ValueError, match="lossless and takes no setting"):
        get_codec("png").encode(CAMERA, 5)
    with pytest.raises(ValueError, match="needs a setting"):
        get_codec("jpeg").encode(CAMERA, None)
    with pytest.raises(UnsupportedInput, match="must be uint16"):
        get_codec("png").encode(CAMERA, None, 12)
    for name in ("jpeg", "png", "jpeg2000", "jpegxl", "avif", "webp", "jpegls"):
        with pytest.raises(CodecError):
            get_codec(name).decode(b"definitely not an image stream")


def test_avif_grayscale_honours_quality():
    # libavif encodes 2-D input losslessly whatever the level; the codec works around it
    avif = get_codec("avif")
    low, high = avif.encode(CAMERA, 20), avif.encode(CAMERA, 90)
    assert len(low) < len(high) / 3
    assert avif.decode(low).shape == CAMERA.shape


@pytest.mark.parametrize("name", ["png", "jpegls", "jpeg2000"])
def test_per_channel_colour_mode_round_trip(name):
    inner = get_codec(name)
    codec = PerChannelCodec(inner)
    setting = None if inner.lossless else 20
    encoded = codec.encode(ASTRONAUT, setting)
    decoded = codec.decode(encoded)
    assert decoded.shape == ASTRONAUT.shape and decoded.dtype == np.uint8
    if inner.lossless:
        np.testing.assert_array_equal(decoded, ASTRONAUT)
        planes = sum(len(inner.encode(np.ascontiguousarray(ASTRONAUT[:, :, c]))) for c in range(3))
        assert len(encoded) == planes + 6 + 4 * 3  # every byte counted: header + three streams
    with pytest.raises(CodecError, match="truncated|header says"):
        codec.decode(encoded[:-10])
    with pytest.raises(UnsupportedInput):
        codec.encode(CAMERA, setting)


@pytest.mark.parametrize("name", [n for n in CLASSICAL if get_codec(n).lossless])
def test_lossless_codecs_survive_incompressible_noise(name):
    noise = np.random.default_rng(5).integers(0, 256, (96, 128), dtype=np.uint8)
    codec = get_codec(name)
    np.testing.assert_array_equal(codec.decode(codec.encode(noise)), noise)


@pytest.mark.parametrize("channels", [1, 3])
def test_file_cli_per_channel_round_trip_on_gray_and_rgb(tmp_path, channels):
    """Issue 10: `compress --colour-mode per_channel` on a gray image used to write a stream `decompress` refused."""
    from core.codecs.__main__ import main
    from core.codecs.bitstream import unwrap_file
    from core.io import as_bioimage, read_image, write_image

    rng = np.random.default_rng(channels)
    shape = (48, 64) if channels == 1 else (48, 64, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    write_image(tmp_path / "in.png", as_bioimage(pixels))
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "x.bcc"), "--codec", "png",
                 "--colour-mode", "per_channel"]) == 0
    _, _, mode, _ = unwrap_file((tmp_path / "x.bcc").read_bytes())
    assert mode == ("per_channel" if channels == 3 else "joint")  # the stream records what was done
    assert main(["decompress", str(tmp_path / "x.bcc"), str(tmp_path / "out.png")]) == 0
    assert np.array_equal(read_image(tmp_path / "out.png").pixels, pixels)
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "j.bcc"), "--codec", "jpeg", "--setting", "50",
                 "--colour-mode", "per_channel"]) == 0
    assert main(["decompress", str(tmp_path / "j.bcc"), str(tmp_path / "j.png")]) == 0
    assert read_image(tmp_path / "j.png").pixels.shape == shape


def test_setting_text_round_trips():
    from core.setting_text import format_setting, parse_setting, parse_sweep_spec

    for value in (None, 5, 0.75, 12.5, 160):
        assert parse_setting(format_setting(value)) == value
    assert format_setting(20.0) == "20" and parse_setting("20") == 20 and isinstance(parse_setting("20"), int)
    assert parse_sweep_spec("jpeg=10,90;png=-", []) == {"jpeg": (10, 90), "png": (None,)}
    with pytest.raises(ValueError, match="not a number"):
        parse_setting("fast")


def test_registry_sweeps_come_from_the_catalog():
    from core import catalog

    sweeps = catalog.sweeps()
    for name in available_codecs("classical"):
        codec = get_codec(name)
        assert codec.default_settings == ((None,) if codec.lossless else sweeps[name])


def test_no_import_circle_between_codec_modules():
    """base/classical/learned import nothing of the registry; catalog/datasets/fetch/stages form no cycle."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]

    def imports(rel):
        tree = ast.parse((root / rel).read_text())
        return {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}

    for rel in ("core/codecs/base.py", "core/codecs/classical.py", "core/codecs/learned.py"):
        assert not {"core.codecs.registry", "core.codecs"} & imports(rel), rel
    assert "core.stages" not in imports("core/datasets.py") | imports("core/fetch.py") | imports("core/catalog.py")
    assert "core.datasets" not in imports("core/catalog.py") | imports("core/fetch.py")
