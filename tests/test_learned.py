"""Learned codecs: round trips (gray/colour, 8/16 bit, per channel), bitstream robustness,
fresh-process decode, the file CLI, and the shipped checkpoints."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.codecs import CodecError, UnsupportedInput, available_codecs, get_codec
from core.codecs.bitstream import MAGIC, Header, pack, reconstruction_hash, unpack, unwrap_file, wrap_file
from core.codecs.learned import WEIGHTS_DIR, LearnedCodec, LearnedModel, intensity_window, load_codecs
from core.codecs.per_channel import PerChannelCodec
from core.io import as_bioimage, read_image, write_image
from core.metrics import psnr
from core.models import ARCHS, build_model, is_variable_rate
from core.models.checkpoint import int8_modules, read_state_dict
from core.train import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for p in WEIGHTS_DIR.glob("*.json") if p.with_suffix(".pt").exists())
EPFL = ROOT.parent / "shared" / "data" / "epfl_hippocampus_fibsem" / "train" / "slices"


def _tiny_checkpoint(folder: Path, arch: str, channels: int, quality: int = 1, codec: str = "tiny") -> LearnedModel:
    """An untrained small model saved as core.train saves it (float16 parameters, tables rebuilt)."""
    torch.manual_seed(channels * 10 + quality)
    N, M = (16, None) if arch == "checkerboard" else (16, 16)
    model = build_model(arch, channels, N, M)
    return _save(model, folder / f"{codec}-{arch}-{channels}-{quality}",
                 {"codec": codec, "quality": quality, "arch": arch, "channels": channels, "N": N, "M": M})


def _save(model, stem: Path, meta: dict) -> LearnedModel:
    """Save ``model`` as core.train does (float16 parameters, tables rebuilt) with its JSON metadata."""
    save_checkpoint(model, stem)
    meta = {"model_id": stem.name, **meta}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    return LearnedModel(stem.with_suffix(".pt"), meta)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    for ch in (1, 3):
        for q in (1, 2):
            _tiny_checkpoint(folder, "mean-scale", ch, q)
    return folder, load_codecs(folder)["tiny"]


def _ramp(h, w, channels, bit_depth):
    yy, xx = np.mgrid[0:h, 0:w]
    peak = (1 << bit_depth) - 1
    planes = [((np.sin(xx / 7 + c) + np.cos(yy / 5)) * 0.25 + 0.5) * peak for c in range(channels)]
    arr = np.rint(np.stack(planes, -1) if channels == 3 else planes[0])
    return arr.astype(np.uint8 if bit_depth <= 8 else np.uint16)


@pytest.mark.parametrize("channels,bit_depth", [(1, 8), (1, 12), (1, 16), (3, 8), (3, 16)])
def test_round_trip_preserves_shape_dtype_and_bit_depth(tiny, channels, bit_depth):
    _, codec = tiny
    pixels = _ramp(70, 90, channels, bit_depth)  # not a multiple of the 64-px stride
    data = codec.encode(pixels, 2, bit_depth)
    header, strings = unpack(data)
    window = intensity_window(pixels, bit_depth)  # deeper than 8 bits: the image's own range (version 4)
    assert header == Header(header.model_id, header.checkpoint_hash, 70, 90, channels, bit_depth,
                            recon_hash=header.recon_hash, version=3 if window is None else 4, window=window)
    assert header.model_id == f"tiny-mean-scale-{channels}-2" and len(strings) == 2
    out = codec.decode(data)
    assert header.recon_hash == reconstruction_hash(out)  # the encoder's reconstruction is the decoder's
    assert out.shape == pixels.shape and out.dtype == pixels.dtype
    assert int(out.max()) <= (1 << bit_depth) - 1
    assert np.array_equal(out, codec.decode(data))  # deterministic


def test_colour_switch_picks_the_model_from_the_channel_count(tiny):
    _, codec = tiny
    assert codec.family == "learned" and codec.channels == frozenset({1, 3})
    assert codec.default_settings == (1, 2)
    assert unpack(codec.encode(_ramp(64, 64, 1, 8), 1))[0].model_id == "tiny-mean-scale-1-1"
    assert unpack(codec.encode(_ramp(64, 64, 3, 8), 1))[0].model_id == "tiny-mean-scale-3-1"
    with pytest.raises(UnsupportedInput):
        codec.encode(_ramp(64, 64, 1, 8), 3)


def test_a_rows_version_is_the_checkpoint_that_codes_it_so_new_colour_weights_keep_the_gray_rows(tiny):
    """Codec.version_for: the runner stores the hash of the checkpoints of the image's channel count (per-channel
    coding: the gray ones; tiling appended), so replacing the colour checkpoints recomputes only colour rows."""
    from core.pipeline import build_encoder

    _, codec = tiny
    gray, colour = codec.version_for(1), codec.version_for(3)
    assert len({gray, colour, codec.version}) == 3 and gray.startswith("weights sha256 ")
    models = codec.models()
    only_gray = LearnedCodec("tiny", [m for m in models if m.channels == 1])
    assert only_gray.version_for(1) == gray == only_gray.version  # the colour models do not enter it
    changed = [LearnedModel(m.weights, {**m.meta, "weights_sha256": "new colour weights"}) if m.channels == 3 else m
               for m in models]
    retrained = LearnedCodec("tiny", changed)
    assert retrained.version_for(1) == gray and retrained.version_for(3) != colour
    assert build_encoder(codec, "per_channel", 3).version_for(3) == gray
    assert build_encoder(codec, "joint", 3).version_for(3) == colour
    tiled = build_encoder(codec, "joint", 3, 600, 600, tiling={"tile": 256, "learned_overlap": 32,
                                                               "learned_max_side": 512, "classical_max_side": 0})
    assert tiled.version_for(3) == colour + "; tiled 256px overlap 32px"
    assert codec.with_refinement(5).version_for(1) == gray + "; refine_steps=5 lr=0.01"
    # deeper than 8 bits the intensity window (stream v4) enters it, through every wrapper; 8-bit rows keep theirs
    assert codec.version_for(1, 8) == gray and codec.version_for(1, 12) == gray + "; intensity window (stream v4)"
    assert build_encoder(codec, "per_channel", 3).version_for(3, 16) == codec.version_for(1, 16)
    assert tiled.version_for(3, 16) == colour + "; intensity window (stream v4); tiled 256px overlap 32px"
    assert get_codec("png").version_for(3) == get_codec("png").version  # classical: one version


def test_per_channel_mode_round_trip(tiny):
    _, codec = tiny
    rgb = _ramp(50, 70, 3, 8)
    pc = PerChannelCodec(codec)
    data = pc.encode(rgb, 1)
    out = pc.decode(data)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # each plane went through the 1-channel model: same bytes as coding the plane alone
    plane0 = codec.decode(codec.encode(np.ascontiguousarray(rgb[:, :, 0]), 1))
    assert np.array_equal(out[:, :, 0], plane0)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_codes_gray_and_colour(tmp_path, arch):
    for ch in (1, 3):
        variable = is_variable_rate(arch)
        model = _tiny_variable_rate(tmp_path, ch, arch=arch) if variable else _tiny_checkpoint(tmp_path, arch, ch)
        pixels = _ramp(40, 72, ch, 8)
        data = model.encode(pixels, 8, 8 if variable else None)
        assert len(unpack(data)[1]) == {"factorized": 1, "checkerboard": 3, "gained-checkerboard": 3}.get(arch, 2)
        out = model.decode(data)
        assert out.shape == pixels.shape and out.dtype == np.uint8


def test_build_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        build_model("mean-scale", 2, 16, 16)
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("cheng2020", 1, 16, 16)


def test_corrupt_or_truncated_streams_raise_clear_errors(tiny):
    _, codec = tiny
    data = codec.encode(_ramp(64, 64, 1, 8), 2)
    with pytest.raises(CodecError, match="magic"):
        codec.decode(b"XXXX" + data[4:])
    with pytest.raises(CodecError, match="CRC"):
        codec.decode(data[:-10])  # truncated
    with pytest.raises(CodecError, match="CRC"):
        codec.decode(data[:20] + bytes([data[20] ^ 0xFF]) + data[21:])  # header byte flipped
    bad = bytearray(data)
    bad[len(data) // 2 + 20] ^= 0x01  # inside an entropy-coded string
    with pytest.raises(CodecError, match="CRC"):
        codec.decode(bytes(bad))
    with pytest.raises(CodecError, match="truncated"):
        codec.decode(MAGIC + b"\x01")
    # a stream that claims a different checkpoint of the same model id
    header, strings = unpack(data)
    other = pack(Header(header.model_id, b"\x00" * 8, 64, 64, 1, 8), strings)
    with pytest.raises(CodecError, match="different checkpoint"):
        codec.decode(other)


def test_bpp_counts_every_byte(tiny):
    _, codec = tiny
    data = codec.encode(_ramp(64, 96, 1, 8), 1)
    header, strings = unpack(data)
    # v3 header: + 2-byte rate field, + 8-byte reconstruction hash
    overhead = 4 + 2 + len(header.model_id) + 8 + 13 + 8 + 4 * len(strings) + 4
    assert len(data) == overhead + sum(map(len, strings))


def test_fresh_process_decode_is_identical(tiny, tmp_path):
    folder, codec = tiny
    pixels = _ramp(100, 130, 3, 8)
    data = codec.encode(pixels, 1)
    (tmp_path / "s.bin").write_bytes(data)
    script = (
        "import sys, numpy as np\n"
        "from core.codecs.learned import load_codecs\n"
        f"codec = load_codecs({str(folder)!r})['tiny']\n"
        f"np.save({str(tmp_path / 'out.npy')!r}, codec.decode(open({str(tmp_path / 's.bin')!r}, 'rb').read()))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=300,
                   env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert np.array_equal(np.load(tmp_path / "out.npy"), codec.decode(data))


def test_file_wrapper_round_trip():
    name, setting, mode, payload = unwrap_file(wrap_file("jpeg2000", 20, b"abc", "per_channel"))
    assert (name, setting, mode, payload) == ("jpeg2000", 20, "per_channel", b"abc")
    assert unwrap_file(wrap_file("png", None, b""))[:3] == ("png", None, "joint")
    assert unwrap_file(wrap_file("jpegxl", 1.5, b"x"))[1] == 1.5
    with pytest.raises(CodecError, match="magic"):
        unwrap_file(b"nope")


def test_file_cli_round_trip_classical_and_bpp_search(tmp_path):
    from core.codecs.__main__ import main

    pixels = _ramp(96, 128, 1, 8)
    write_image(tmp_path / "in.png", as_bioimage(pixels))
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "a.bcc"), "--codec", "png"]) == 0
    assert main(["decompress", str(tmp_path / "a.bcc"), str(tmp_path / "a.png")]) == 0
    assert np.array_equal(read_image(tmp_path / "a.png").pixels, pixels)
    # --bpp: the closest achievable rate (core.rate_search); no integer quality one step away is closer
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "b.bcc"), "--codec", "jpeg", "--bpp", "1.0"]) == 0
    size_bpp = 8 * (tmp_path / "b.bcc").stat().st_size / (96 * 128)
    name, setting, _, _ = unwrap_file((tmp_path / "b.bcc").read_bytes())
    codec = get_codec("jpeg")
    for neighbour in (setting - 1, setting + 1):
        other = 8 * len(wrap_file("jpeg", neighbour, codec.encode(pixels, neighbour))) / (96 * 128)
        assert abs(size_bpp - 1.0) <= abs(other - 1.0)
    assert main(["decompress", str(tmp_path / "nope.bcc"), str(tmp_path / "x.png")]) == 2


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints")
def test_file_cli_round_trip_learned_folder(tmp_path):
    from core.codecs.__main__ import main

    name = sorted(available_codecs("learned"))[0]
    src = tmp_path / "src"
    gray = _ramp(80, 100, 1, 8)
    src.mkdir()
    write_image(src / "g.png", as_bioimage(gray))
    assert main(["compress", str(src), str(tmp_path / "enc"), "--codec", name, "--setting", "1"]) == 0
    assert main(["decompress", str(tmp_path / "enc"), str(tmp_path / "dec")]) == 0
    out = read_image(tmp_path / "dec" / "g.png").pixels
    direct = get_codec(name).decode(unwrap_file((tmp_path / "enc" / "g.bcc").read_bytes())[3])
    assert out.shape == gray.shape and np.array_equal(out, direct)


# ----------------------------------------------------------------------------- variable rate
def _tiny_variable_rate(folder: Path, channels: int, codec: str = "tinyvr", levels: int = 4,
                        arch: str = "gained-mean-scale") -> LearnedModel:
    torch.manual_seed(100 + channels)
    model = build_model(arch, channels, 16, 16, levels=levels)
    with torch.no_grad():  # an untrained y is tiny: spread the gains so the rate visibly rises with the level
        model.log_gain.copy_(torch.linspace(0.0, 6.0, levels)[:, None].repeat(1, 16))
    return _save(model, folder / f"{codec}-{channels}", {"codec": codec, "arch": arch,
                                                          "channels": channels, "N": 16, "M": 16, "levels": levels})


@pytest.fixture(scope="module")
def tiny_vr(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vr")
    for ch in (1, 3):
        _tiny_variable_rate(folder, ch)
    return load_codecs(folder)["tinyvr"]


def test_variable_rate_codec_has_a_continuous_knob_carried_in_the_stream(tiny_vr):
    from core.codecs.learned import VR_POINTS

    assert tiny_vr.variable_rate and tiny_vr.default_settings == tuple(range(1, VR_POINTS + 1))
    img = _ramp(96, 128, 1, 8)
    sizes = {}
    for q in (1, 4.5, 8.25, 16):
        data = tiny_vr.encode(img, q, 8)
        assert unpack(data)[0].setting_milli == round(q * 1000)
        out = tiny_vr.decode(data)  # the decoder needs nothing but the stream
        assert out.shape == img.shape and out.dtype == img.dtype
        sizes[q] = len(data)
    # gains rise with the level (coarse → fine quantisation), so the rate rises with q
    assert sizes[1] < sizes[8.25] < sizes[16]
    for bad in (0.5, 16.5, None, "x"):
        with pytest.raises((ValueError, UnsupportedInput)):
            tiny_vr.encode(img, bad, 8)


def test_variable_rate_gains_interpolate_between_levels():
    model = build_model("gained-mean-scale", 1, 16, 16, levels=3)
    with torch.no_grad():
        model.log_gain.copy_(torch.tensor([[0.0] * 16, [1.0] * 16, [3.0] * 16]))
    g = model._gain(model.log_gain, torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0]))[:, 0, 0, 0]
    assert torch.allclose(g, torch.exp(torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0])))


def test_variable_rate_stream_decodes_identically_in_a_fresh_process(tiny_vr, tmp_path):
    img = _ramp(64, 80, 3, 8)
    data = tiny_vr.encode(img, 7.5, 8)
    here = tiny_vr.decode(data)
    (tmp_path / "s.bin").write_bytes(data)
    folder = tiny_vr.models()[0].weights.parent
    code = ("import sys, numpy as np; from core.codecs.learned import load_codecs; "
            f"c = load_codecs({str(folder)!r})['tinyvr']; "
            f"np.save({str(tmp_path / 'o.npy')!r}, c.decode(open({str(tmp_path / 's.bin')!r}, 'rb').read()))")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert np.array_equal(np.load(tmp_path / "o.npy"), here)


def test_variable_rate_training_step_lowers_the_loss():
    from core import train

    torch.manual_seed(0)
    model = build_model("gained-mean-scale", 1, 16, 16, levels=4)
    sampler = train.CropSampler([torch.rand(1, 96, 96) * 0.2 + torch.linspace(0, 0.7, 96)], crop=64, seed=0)
    opt, aux = train.make_optimizers(model, 1e-3)
    losses = train.train_steps(model, sampler, opt, aux, 30, kind="mse",
                               lmbda=[0.002, 0.006, 0.018, 0.054], batch=4, progress=False)
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])


# ----------------------------------------------------------------------------- shipped checkpoints
REQUIRED = ("arch", "channels", "N", "M", "loss", "lmbda", "steps", "training_images", "validation", "codec")


@pytest.mark.parametrize("meta_path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_loads_and_says_what_produced_it(meta_path):
    meta = json.loads(meta_path.read_text())
    for key in REQUIRED:
        assert key in meta, key
    weights = meta_path.with_suffix(".pt")
    # #11: at most 10 MB each. 4.4 MB at M = 96; the wide gray model (M = 224, learned-mse) is 7.5 MB with its
    # hyper-synthesis (2 × 224 means and scales, 7.2 MB in float16) stored in 8 bits (core.models.checkpoint)
    assert weights.stat().st_size <= 10_000_000
    raw = torch.load(weights, map_location="cpu", weights_only=True)
    assert ("int8" in meta.get("weights_storage", "")) == bool(int8_modules(raw))  # the JSON says how it is stored
    model = build_model(meta["arch"], meta["channels"], meta["N"], meta["M"], levels=meta.get("levels"))
    model.load_state_dict(read_state_dict(weights))
    assert meta["loss"] in ("mse", "msssim", "mix")
    assert meta["steps"]["total"] > 0 and meta["training_images"]
    assert not set(meta["training_data"]) & set(meta["validation_data"])
    # the codec's version (stored per result row) is built from these digests: they must be the file's
    assert meta["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    points = meta["validation"].get("settings") or [meta["validation"]]
    for v in points:
        assert v["bpp"] > 0 and v["psnr"] > 15 and 0.5 < v["ms_ssim"] <= 1
    bpps = [v["bpp"] for v in points]
    assert bpps == sorted(bpps)  # rate rises with the setting
    if meta["loss"] == "mix":
        assert meta["alpha"] == 0.84


@pytest.mark.parametrize("meta_path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_checkpoint_never_saw_a_test_image(meta_path):
    """Issue 10: every catalog image a checkpoint trained/validated on is in the train or val split."""
    from core import catalog

    meta = json.loads(meta_path.read_text())
    seen = set(meta["training_images"])
    assert all("/" in cid for cid in seen)  # catalog ids, dataset/image_id
    for dataset in {cid.split("/")[0] for cid in seen}:
        try:
            test = {catalog.catalog_id(r) for r in catalog.split_refs(dataset, ("test",))}
        except FileNotFoundError:
            pytest.skip("the shared data is not present: the split cannot be listed")
        assert not seen & test, sorted(seen & test)


@pytest.mark.skipif(not SHIPPED, reason="no shipped checkpoints")
def test_shipped_codecs_are_registered_and_their_rate_rises_with_the_setting():
    names = available_codecs("learned")
    assert "learned-msssim" in names and get_codec("learned-msssim").variable_rate
    for name in names:
        codec = get_codec(name)
        assert isinstance(codec, LearnedCodec)
        if codec.variable_rate:
            for model in codec.models():  # validation at every integer knob value 1..16
                points = model.meta["validation"]["settings"]
                assert [p["setting"] for p in points] == list(range(1, 17))
                assert points[0]["bpp"] <= 0.25 and points[-1]["bpp"] >= 1.0, (model.model_id, points)
        else:
            assert len(codec.default_settings) >= 4
            for ch in codec.channels:
                bpps = [codec.model_for(ch, q).meta["validation"]["bpp"] for q in codec.default_settings]
                assert bpps == sorted(bpps) and bpps[0] <= 0.12 and bpps[-1] >= 1.0, (name, ch, bpps)


@pytest.mark.skipif(not (SHIPPED and EPFL.is_dir()), reason="needs shipped checkpoints and the EPFL slices")
def test_shipped_gray_model_reconstructs_a_test_em_slice():
    codec = get_codec("learned-msssim")
    image = read_image(EPFL / "training0164.png")  # catalog test split
    crop = np.ascontiguousarray(image.pixels[:256, :320])
    out = codec.decode(codec.encode(crop, codec.default_settings[-1]))
    assert psnr(crop, out, 8) > 24


def test_runner_runs_the_colour_switch_only_for_families_with_both_models(tmp_path):
    """Per-channel rows compare a family's 1-channel model per plane with its 3-channel model; a gray-only family
    codes gray images only unless per_channel is asked for."""
    from core import runner
    from core.codecs.registry import register_codec, unregister_codec

    for ch in (1, 3):
        _tiny_variable_rate(tmp_path, ch, codec="both")
    _tiny_variable_rate(tmp_path, 1, codec="grayonly")
    codecs = load_codecs(tmp_path)
    for name in ("both", "grayonly"):
        register_codec(f"test-{name}", lambda c=codecs[name]: c)
    try:
        settings = {"test-both": (2,), "test-grayonly": (2,)}
        tasks, unsupported = runner.plan_tasks(8, 3, ["test-both", "test-grayonly"], settings, None)
        assert [(t.codec, t.colour_mode) for t in tasks] == [("test-both", "joint"), ("test-both", "per_channel")]
        assert unsupported == 1  # the gray-only family cannot code RGB jointly
        tasks, _ = runner.plan_tasks(8, 1, ["test-both", "test-grayonly"], settings, None)
        assert [(t.codec, t.colour_mode) for t in tasks] == [("test-both", "joint"), ("test-grayonly", "joint")]
        tasks, _ = runner.plan_tasks(8, 3, ["test-grayonly"], settings, ("per_channel",))
        assert [(t.codec, t.colour_mode) for t in tasks] == [("test-grayonly", "per_channel")]
    finally:
        for name in ("both", "grayonly"):
            unregister_codec(f"test-{name}")
