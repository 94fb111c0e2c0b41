"""Reliability and safety: crafted learned streams, library failures, the file CLI's error lines,
the fetcher's destination paths and the runner's worker processes.  Every input is generated here."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.codecs import CodecError, UnsupportedInput, available_codecs, get_codec
from core.codecs.base import Codec, WrappingCodec
from core.codecs.bitstream import Header, pack, unpack, unwrap_file, wrap_file
from core.fetch import UnsafePathError, local_path
from core.io import MAX_PIXELS, write_image, as_bioimage

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


def _run(args, timeout=240, memory_gb=4, **kwargs):
    """Run a command with an address-space limit (a regression then fails with MemoryError instead of
    swapping the machine); returns (CompletedProcess, seconds)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory_gb << 30, memory_gb << 30))

    start = time.monotonic()
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **kwargs.pop("env", {})}
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, preexec_fn=limit,
                          env=env, **kwargs)
    return proc, time.monotonic() - start


def _assert_one_error_line(proc):
    """Exit status 2 (not a signal), and stderr is exactly one line ``error: ...`` without a traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


# ============================================================================ crafted learned streams
try:
    import torch

    from core.codecs.learned import LearnedModel, load_codecs, min_string_bytes
    from core.models import ARCHS, build_model, is_variable_rate, stride
    from core.train import save_checkpoint
except ImportError:  # pragma: no cover - the learned codecs need torch + compressai
    torch, ARCHS = None, ()
needs_torch = pytest.mark.skipif(torch is None, reason="learned codecs need torch + compressai")


def _tiny(folder: Path, arch: str, channels: int, codec: str = "tiny") -> LearnedModel:
    """An untrained small checkpoint saved as core.train saves it (as tests/test_learned.py makes them)."""
    torch.manual_seed(channels * 10 + ARCHS.index(arch))
    variable = is_variable_rate(arch)
    N, M = (16, None) if arch == "checkerboard" else (16, 16)
    model = build_model(arch, channels, N, M, levels=4 if variable else None)
    stem = folder / f"{codec}-{arch}-{channels}"
    save_checkpoint(model, stem)
    meta = {"model_id": stem.name, "codec": codec, "arch": arch, "channels": channels, "N": N, "M": M,
            **({"levels": 4} if variable else {"quality": 1})}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return LearnedModel(stem.with_suffix(".pt"), meta)


@pytest.fixture(scope="module")
def tiny_gray(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-weights")
    _tiny(folder, "mean-scale", 1)
    return folder, load_codecs(folder)["tiny"]


def _crafted(codec, side: int, total: int = 1200, channels: int = 1) -> bytes:
    """A real stream of a small image whose header now claims side × side pixels (CRC recomputed), its
    first string padded with random bytes so that the stream is ``total`` bytes long."""
    shape = (64, 64) if channels == 1 else (64, 64, 3)
    setting = codec.default_settings[0]
    header, strings = unpack(codec.encode(np.full(shape, 100, np.uint8), setting))
    fake = Header(header.model_id, header.checkpoint_hash, side, side, header.channels, header.bit_depth,
                  header.setting_milli)
    pad = max(0, total - len(pack(fake, strings)))
    strings = [strings[0] + np.random.default_rng(side).bytes(pad), *strings[1:]]
    data = pack(fake, strings)
    assert unpack(data)[0].height == side  # the CRC is valid: only the plausibility checks can refuse it
    return data


_DECOMPRESS_TINY = """
import sys
from core.codecs.learned import load_codecs
from core.codecs.registry import register_codec
codec = load_codecs(sys.argv[1])["tiny"]
register_codec("tiny", lambda: codec)
from core.codecs.__main__ import main
sys.exit(main(["decompress", sys.argv[2], sys.argv[3]]))
"""


@needs_torch
@pytest.mark.parametrize("side", [8192, 4096])
def test_crafted_learned_file_is_refused_by_the_cli_with_one_line(tiny_gray, tmp_path, side):
    folder, codec = tiny_gray
    src = tmp_path / f"crafted{side}.bcc"
    src.write_bytes(wrap_file("tiny", 1, _crafted(codec, side, 1200 - 8 - len("tiny") - 1)))
    assert len(src.read_bytes()) == 1200
    proc, seconds = _run([PYTHON, "-c", _DECOMPRESS_TINY, str(folder), str(src), str(tmp_path / "out.png")])
    line = _assert_one_error_line(proc)
    assert f"claims {side}x{side} pixels" in line and "needs at least" in line
    assert not (tmp_path / "out.png").exists()
    assert seconds < 120  # process start + torch import on a busy machine; the refusal itself: below


@needs_torch
def test_crafted_stream_is_refused_within_seconds(tiny_gray):
    _, codec = tiny_gray
    codec.decode(codec.encode(np.zeros((64, 64), np.uint8), 1))  # model loaded
    for side in (8192, 4096, 2048):
        data = _crafted(codec, side)
        start = time.monotonic()
        with pytest.raises(CodecError, match="needs at least"):
            codec.decode(data)
        assert time.monotonic() - start < 5.0  # the 4096² header used to run 49 s and allocate 4 GB


@needs_torch
def test_crafted_stream_for_a_shipped_checkpoint_is_refused_by_python_m_core_codecs(tmp_path):
    learned = available_codecs("learned")
    if not learned:
        pytest.skip("no shipped learned checkpoints")
    name = learned[0]
    src = tmp_path / "crafted.bcc"
    src.write_bytes(wrap_file(name, 1, _crafted(get_codec(name), 8192, 1100)))
    proc, _ = _run([PYTHON, "-m", "core.codecs", "decompress", str(src), str(tmp_path / "out.png")])
    line = _assert_one_error_line(proc)
    assert "claims 8192x8192 pixels" in line


@needs_torch
@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_refuses_short_strings_and_keeps_real_ones(tmp_path, arch):
    """Real streams (gray and colour; flat and noise; awkward sizes) decode and are longer than the
    bound; the same streams claiming 2048² pixels are refused before decoding."""
    from compressai.entropy_models import EntropyBottleneck

    for channels in (1, 3):
        model = _tiny(tmp_path, arch, channels)
        setting = 1 if model.variable_rate else None
        rng = np.random.default_rng(channels)
        for h, w in [(1, 1), (17, 130), (70, 129)]:
            shape = (h, w) if channels == 1 else (h, w, 3)
            for image in (np.zeros(shape, np.uint8), np.full(shape, 255, np.uint8),
                          rng.integers(0, 256, shape, dtype=np.uint8)):
                data = model.encode(image, 8, setting)
                out = model.decode(data)  # never refused
                assert out.shape == image.shape
                header, strings = unpack(data)
                eb = next(m for m in model.model.modules() if isinstance(m, EntropyBottleneck))
                latent = model.latent_shape(h + -h % stride(arch), w + -w % stride(arch))
                size = tuple(latent["hyper"] if isinstance(latent, dict) else latent)
                need = min_string_bytes(eb, eb._build_indexes((1, eb._quantized_cdf.size(0), *size)))[0]
                assert len(strings[-1]) >= need
        guarded = [m for m in model.model.modules() if getattr(m, "_biocodec_guarded", False)]
        assert guarded, "the entropy models were not guarded"
        fake = Header(header.model_id, header.checkpoint_hash, 2048, 2048, channels, 8, header.setting_milli)
        with pytest.raises(CodecError, match="claims 2048x2048 pixels.*needs at least"):
            model.decode(pack(fake, strings))


@needs_torch
def test_padded_z_string_with_a_short_y_string_is_refused_too(tiny_gray):
    """A crafted z long enough for its own bound decodes to scales that need a long y string."""
    _, codec = tiny_gray
    header, strings = unpack(codec.encode(np.zeros((64, 64), np.uint8), 1))
    fake = Header(header.model_id, header.checkpoint_hash, 1024, 1024, 1, 8, 0)
    z = np.random.default_rng(3).bytes(20_000)
    with pytest.raises(CodecError, match="Gaussian-conditional string has 8 bytes"):
        codec.decode(pack(fake, [np.random.default_rng(4).bytes(8), z]))


@needs_torch
def test_shipped_checkpoints_decode_real_streams_of_flat_images():
    """The bound never refuses a real stream of the shipped models (flat images code the fewest z bytes)."""
    learned = available_codecs("learned")
    if not learned:
        pytest.skip("no shipped learned checkpoints")
    for name in learned:
        codec = get_codec(name)
        for setting in (codec.default_settings[0], codec.default_settings[-1]):
            for channels in sorted(codec.channels):
                shape = (128, 192) if channels == 1 else (128, 192, 3)
                for value in (0, 255):
                    image = np.full(shape, value, np.uint8)
                    assert codec.decode(codec.encode(image, setting)).shape == shape


@pytest.mark.parametrize("field,value,message", [
    ("size", (30_000, 30_000), "pixel limit"),
    ("channels", 2, "header is invalid"),
    ("bit_depth", 7, "header is invalid"),
    ("bit_depth", 17, "header is invalid"),
    ("size", (0, 64), "header is invalid"),
])
def test_unpack_refuses_headers_out_of_range(field, value, message):
    h, w = value if field == "size" else (64, 64)
    header = Header("m", b"12345678", h, w, value if field == "channels" else 1,
                    value if field == "bit_depth" else 8)
    with pytest.raises(CodecError, match=message):
        unpack(pack(header, [b"x" * 10, b"y" * 10]))
    assert 30_000 * 30_000 > MAX_PIXELS


# ============================================================================ library failures
def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("name,shape,message", [
    ("jpeg2000", (20, 300), "jpeg2000 needs image sides >= 32 px (got 20x300)"),
    ("jpeg2000-lossless", (300, 31), "jpeg2000-lossless needs image sides >= 32 px (got 300x31)"),
    ("jpeg", (100_000, 1), "jpeg supports image sides <= 65535 px (got 100000x1)"),
    ("avif", (100_000, 1), "avif supports image sides <= 32768 px (got 100000x1)"),
    ("avif", (16, 32769), "avif supports image sides <= 32768 px (got 16x32769)"),
    ("webp", (16383, 4), "webp supports image sides <= 16382 px (got 16383x4)"),
    ("webp-lossless", (4, 16383), "webp-lossless supports image sides <= 16382 px (got 4x16383)"),
])
def test_sizes_a_library_cannot_code_are_unsupported_input(name, shape, message):
    codec = get_codec(name)
    setting = None if codec.lossless else codec.default_settings[0]
    with pytest.raises(UnsupportedInput) as info:
        codec.encode(_noise(shape), setting)
    assert str(info.value) == message


@pytest.mark.parametrize("name,shape", [
    ("jpeg2000", (32, 300)), ("jpeg2000-lossless", (300, 32)), ("jpeg", (65535, 1)),
    ("avif", (32768, 16)), ("webp", (16382, 4)), ("webp-lossless", (4, 16382)),
])
def test_sizes_at_each_limit_still_code(name, shape):
    """The other side of every edge of LIBRARY_SIZE_LIMITS: coded and decoded by the installed library."""
    codec = get_codec(name)
    setting = None if codec.lossless else codec.default_settings[-1]
    image = _noise(shape)
    out = codec.decode(codec.encode(image, setting))
    assert out.shape == image.shape
    if codec.lossless:
        assert np.array_equal(out, image)


def test_avif_pixel_limit_is_checked_before_any_coding():
    codec = get_codec("avif")
    with pytest.raises(UnsupportedInput, match="at most 268435456 pixels"):
        codec.check_size(16385, 16384)
    codec.check_size(16384, 16384)


@pytest.mark.parametrize("shape,dtype", [((300, 1), np.uint8), ((1000, 1), np.uint8), ((100_000, 1), np.uint16),
                                         ((3000, 1, 3), np.uint16), ((1, 1), np.uint8), ((257, 259, 3), np.uint8)])
def test_png_codes_incompressible_noise_of_any_shape(tmp_path, shape, dtype):
    """Narrow noise used to raise imagecodecs' PngError "output stream too small" (the default buffer is the
    pixels' size; PNG rows carry a filter byte each).  The codec and write_image both round-trip it now."""
    from core.io import png_bound, read_image

    image = np.random.default_rng(1).integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    data = get_codec("png").encode(image)
    assert len(data) > image.nbytes and len(data) <= png_bound(image)  # incompressible: grows, within the bound
    assert np.array_equal(get_codec("png").decode(data), image)
    write_image(tmp_path / "noise.png", as_bioimage(image))
    assert np.array_equal(read_image(tmp_path / "noise.png").pixels, image)


@pytest.mark.parametrize("name,shape,tiled,no_threshold", [
    ("webp", (16383, 4), True, False), ("webp", (16382, 4), False, False), ("webp-lossless", (4, 16384), True, False),
    ("png", (16384, 4), False, False), ("jpeg", (65536, 1), True, True), ("jpeg", (65535, 1), False, True),
])
def test_pipeline_tiles_what_the_library_cannot_code_whole(name, shape, tiled, no_threshold):
    """classical_max_side (16384) is above WebP's 16382-px limit: the pipeline tiles by the codec's true
    limit (LIBRARY_SIZE_LIMITS), so a 16383-px-tall image codes through the CLI's path instead of failing —
    even with the size threshold switched off (0)."""
    from core.catalog import tiling_options
    from core.pipeline import build_encoder
    from core.tiling import TiledCodec

    options = {**tiling_options(), "classical_max_side": 0} if no_threshold else None
    codec = build_encoder(name, "joint", 1, *shape, tiling=options)
    assert isinstance(codec, TiledCodec) is tiled
    if tiled:
        image = _noise(shape)
        setting = None if codec.lossless else codec.default_settings[-1]
        out = codec.decode(codec.encode(image, setting))
        assert out.shape == image.shape
        if codec.lossless:
            assert np.array_equal(out, image)


class _LibraryError(Exception):
    """Stands in for a library's own exception type (raised outside core/)."""


class _Failing(Codec):
    name, label, lossless = "failing", "failing", True
    bit_depths = frozenset({8, 16})
    failure: BaseException = _LibraryError("bad thing")

    def _encode(self, pixels, setting, bit_depth):
        raise self.failure

    def _decode(self, data):
        raise self.failure


@pytest.mark.parametrize("failure,expected,text", [
    (_LibraryError("bad thing"), CodecError, "failing: cannot encode a 20x30 8-bit 1-channel image: "
                                             "_LibraryError: bad thing"),
    (MemoryError(), CodecError, "failing: cannot encode a 20x30 8-bit 1-channel image: MemoryError: no message"),
    (RuntimeError("torch said no"), CodecError, "RuntimeError: torch said no"),
    (OSError(28, "No space left on device"), CodecError, "No space left on device"),
    (UnsupportedInput("failing: 5-channel"), UnsupportedInput, "failing: 5-channel"),
    (CodecError("failing: inner"), CodecError, "failing: inner"),
])
def test_encode_turns_every_library_exception_into_codec_error(failure, expected, text):
    codec = _Failing()
    codec.failure = failure
    with pytest.raises(expected) as info:
        codec.encode(np.zeros((20, 30), np.uint8))
    assert text in str(info.value)
    if isinstance(failure, (UnsupportedInput, CodecError)):
        assert info.value is failure  # raised by the codec itself: untouched
    else:
        assert info.value.__cause__ is failure
    with pytest.raises((CodecError, UnsupportedInput)):
        codec.decode(b"abc")


def test_library_value_error_is_wrapped_but_own_setting_checks_stay_value_errors():
    codec = _Failing()
    codec.failure = ValueError("invalid data shape, strides, or dtype")  # raised outside core/
    with pytest.raises(CodecError, match="ValueError: invalid data shape"):
        codec.encode(np.zeros((20, 30), np.uint8))
    with pytest.raises(ValueError, match="ratio must be > 1") as info:  # core/codecs/classical.py's own check
        get_codec("jpeg2000").encode(np.zeros((40, 40), np.uint8), 1)
    assert not isinstance(info.value, CodecError)


def test_wrapping_codecs_leave_size_checks_to_the_pieces():
    from core.pipeline import build_encoder
    from core.codecs.per_channel import PerChannelCodec

    tall = _noise((100_000, 1))
    tiled = build_encoder("jpeg", "joint", 1, *tall.shape)  # the pipeline tiles it: every tile fits JPEG
    assert isinstance(tiled, WrappingCodec)
    assert tiled.decode(tiled.encode(tall, 90)).shape == tall.shape
    with pytest.raises(UnsupportedInput, match=r"jpeg2000 needs image sides >= 32 px \(got 20x300\)"):
        PerChannelCodec(get_codec("jpeg2000")).encode(_noise((20, 300, 3)), 10)


def test_non_images_are_unsupported_input():
    codec = get_codec("png")
    for bad in (np.zeros(5, np.uint8), np.zeros((2, 2, 3, 1), np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(UnsupportedInput):
            codec.encode(bad)


# ============================================================================ CLI: one line, never a traceback
def _cli(*args, **kwargs):
    proc, _ = _run([PYTHON, "-m", "core.codecs", *map(str, args)], **kwargs)
    return proc


def test_cli_missing_and_unreadable_inputs(tmp_path):
    line = _assert_one_error_line(_cli("compress", tmp_path / "missing.png", tmp_path / "o.bcc", "--codec", "png"))
    assert "no such file or folder" in line
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    line = _assert_one_error_line(_cli("compress", garbage, tmp_path / "o.bcc", "--codec", "png"))
    assert "garbage.png" in line
    line = _assert_one_error_line(_cli("decompress", garbage, tmp_path / "o.png"))
    assert "not a BioCodec file" in line
    folder_as_output = tmp_path / "taken"
    folder_as_output.mkdir()
    write_image(tmp_path / "ok.png", as_bioimage(_noise((40, 40))))
    line = _assert_one_error_line(_cli("compress", tmp_path / "ok.png", folder_as_output, "--codec", "png"))
    assert "directory" in line.lower()


def test_cli_unsupported_input_and_bad_arguments(tmp_path):
    write_image(tmp_path / "small.png", as_bioimage(_noise((20, 300))))
    line = _assert_one_error_line(_cli("compress", tmp_path / "small.png", tmp_path / "o.bcc", "--codec", "jpeg2000"))
    assert line.endswith("jpeg2000 needs image sides >= 32 px (got 20x300)")
    line = _assert_one_error_line(_cli("compress", tmp_path / "small.png", tmp_path / "o.bcc", "--codec", "nope"))
    assert line.startswith("error: ") and "unknown codec 'nope'" in line and '"' not in line


def test_cli_corrupt_streams(tmp_path):
    write_image(tmp_path / "img.png", as_bioimage(_noise((64, 80))))
    assert _cli("compress", tmp_path / "img.png", tmp_path / "img.bcc", "--codec", "png").returncode == 0
    data = (tmp_path / "img.bcc").read_bytes()
    name, setting, mode, payload = unwrap_file(data)
    cases = {
        "truncated": data[: len(data) // 3],
        "scrambled": wrap_file(name, setting, payload[:20] + bytes(len(payload) - 20), mode),
        "header": data[:6],
        "unknown-codec": wrap_file("nope", None, payload),
    }
    for label, content in cases.items():
        (tmp_path / f"{label}.bcc").write_bytes(content)
        proc = _cli("decompress", tmp_path / f"{label}.bcc", tmp_path / f"{label}.png")
        line = _assert_one_error_line(proc)
        assert f"{label}.bcc" in line or "nope" in line, (label, line)


_LIBRARY_FAILURE = """
import sys
from core.codecs.base import Codec
from core.codecs.registry import register_codec

class Boom(Exception):
    pass

class Failing(Codec):
    name, label, lossless = "failing", "failing", True
    bit_depths = frozenset({8})
    def _encode(self, pixels, setting, bit_depth):
        raise Boom("the library fell over")
    def _decode(self, data):
        raise MemoryError()

register_codec("failing", Failing)
from core.codecs.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_cli_library_failures_and_memory_errors(tmp_path):
    write_image(tmp_path / "img.png", as_bioimage(_noise((40, 40))))
    proc, _ = _run([PYTHON, "-c", _LIBRARY_FAILURE, "compress", str(tmp_path / "img.png"), str(tmp_path / "o.bcc"),
                    "--codec", "failing"])
    line = _assert_one_error_line(proc)
    assert "failing: cannot encode a 40x40 8-bit 1-channel image: Boom: the library fell over" in line
    (tmp_path / "x.bcc").write_bytes(wrap_file("failing", None, b"payload"))
    proc, _ = _run([PYTHON, "-c", _LIBRARY_FAILURE, "decompress", str(tmp_path / "x.bcc"), str(tmp_path / "x.png")])
    line = _assert_one_error_line(proc)
    assert "failing: cannot decode 7 bytes (MemoryError" in line


def test_cli_main_reports_memory_error_and_interrupt_in_one_line(tmp_path, monkeypatch, capsys):
    import core.codecs.__main__ as cli

    (tmp_path / "a.bcc").write_bytes(b"whatever")
    for exc, status, text in [(MemoryError(), 2, "out of memory"), (KeyboardInterrupt(), 130, "interrupted"),
                              (AssertionError("internal"), 2, "AssertionError: internal")]:
        def boom(*args, exc=exc, **kwargs):
            raise exc
        monkeypatch.setattr(cli, "decompress_file", boom)
        assert cli.main(["decompress", str(tmp_path / "a.bcc"), str(tmp_path / "a.png")]) == status
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and text in err and "Traceback" not in err


# ============================================================================ fetcher destinations
@pytest.mark.parametrize("name", [
    "../evil.txt", "%2e%2e/evil.txt", "%2e%2e%2fevil.txt", "..%2Fevil.txt", "%2E%2E%5Cevil.txt",
    "%252e%252e%252fevil.txt", "a/../../evil.txt", "a/%2e%2e/%2e%2e/evil.txt", "/tmp/evil.txt",
    "%2Ftmp%2Fevil.txt", "%2ftmp/evil.txt", "\\tmp\\evil.txt", "..\\evil.txt", "C:\\evil.txt", "c:evil.txt",
    "", ".", "./", "a/..", "evil\x00.txt", "%00evil.txt",
])
def test_remote_names_that_leave_the_dataset_folder_are_refused(tmp_path, name):
    with pytest.raises(UnsafePathError, match="refusing remote file name"):
        local_path(tmp_path / "ds", name)


@pytest.mark.parametrize("name,expected", [
    ("sec0/tile_0.mrc", "sec0/tile_0.mrc"), ("img/plane 000.tif", "img/plane 000.tif"),
    ("50%.tif", "50%.tif"), ("a%20b.tif", "a%20b.tif"), ("./x/./y.tif", "x/y.tif"), ("..x/..y..", "..x/..y.."),
])
def test_ordinary_remote_names_map_inside_the_folder(tmp_path, name, expected):
    assert local_path(tmp_path / "ds", name) == tmp_path / "ds" / expected


def test_symlink_inside_the_folder_cannot_lead_outside(tmp_path):
    folder = tmp_path / "ds"
    folder.mkdir()
    (folder / "link").symlink_to(tmp_path.parent)
    with pytest.raises(UnsafePathError, match="outside"):
        local_path(folder, "link/evil.txt")


# ============================================================================ no orphan workers
try:
    import psutil
except ImportError:  # pragma: no cover
    psutil = None


def _alive(process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture(scope="module")
def runner_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runner-images")
    for i in range(24):
        write_image(folder / f"noise{i:02d}.png", as_bioimage(_noise((256, 256), i)))
    return folder


@pytest.mark.skipif(psutil is None or not sys.platform.startswith("linux"), reason="needs psutil, Linux")
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_runner_workers_end_with_the_runner(runner_images, tmp_path, how):
    proc = subprocess.Popen([PYTHON, "-m", "core.runner", "--data-root", str(runner_images),
                             "--db", str(tmp_path / "r.duckdb"), "--codecs", "jpegxl,avif,jpeg2000",
                             "--workers", "2", "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    main = psutil.Process(proc.pid)
    workers, children = [], []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                children = main.children(recursive=True)
                workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())
                           and "resource_tracker" not in " ".join(c.cmdline())]
            except psutil.Error:
                pass
            # the workers exist and are past start-up (their imports take ~2 s of CPU): they are coding
            if len(workers) == 2 and all(w.cpu_times().user > 2.5 for w in workers if _alive(w)):
                break
            time.sleep(0.2)
        assert len(workers) == 2 and proc.poll() is None, "the runner did not start two workers"
        children = main.children(recursive=True)
        os.kill(proc.pid, how)
        proc.wait(timeout=30)
        assert proc.returncode == (-9 if how == signal.SIGKILL else 128 + signal.SIGTERM), \
            proc.stderr.read().decode(errors="replace")[-3000:]
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c.pid for c in children if _alive(c)], "worker processes outlived the runner"
    finally:
        for child in children:  # only the processes this test started
            if _alive(child):
                child.kill()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.skipif(psutil is None, reason="needs psutil")
def test_leaving_the_execute_loop_early_terminates_the_workers(runner_images):
    """A caller that stops iterating (an exception in its loop) leaves no worker behind either."""
    from contextlib import closing

    from core import runner
    from core.cluster import connect
    from core.datasets import folder_refs

    jobs = [runner.Job(ref, [runner.Task("jpegxl", d) for d in (0.5, 1.0, 2.0, 4.0)])
            for ref in folder_refs(runner_images)[:8]]
    with pytest.raises(RuntimeError, match="the caller's loop failed"):
        with connect("local", workers=2) as client:
            rows = closing(runner.execute(client, jobs, "test-run"))
            first = next(rows.thing)
            assert first and not first[0].get("error")
            workers = [c for c in psutil.Process().children() if "spawn_main" in " ".join(c.cmdline())
                       and "resource_tracker" not in " ".join(c.cmdline())]
            assert len(workers) == 2
            with rows:  # the caller's loop ends with an exception: its generator is closed
                raise RuntimeError("the caller's loop failed")
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [w.pid for w in workers if _alive(w)]
