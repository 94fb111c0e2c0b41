"""Learned streams decode identically on any thread count; the probability tables are chosen in integer
arithmetic (core.models.exact); the reconstruction hash lets ``decompress --verify`` prove a decode."""
from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.codecs import CodecError, available_codecs, get_codec  # noqa: E402
from core.codecs.bitstream import Header, pack, reconstruction_hash, unpack, unwrap_file, wrap_file  # noqa: E402
from core.models import build_model  # noqa: E402
from core.models.exact import (FRAC, GFRAC, ExactHyperDecoder, fixed_gains, table_indexes)  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _em_like(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = 120 + 50 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    if len(shape) == 3:
        base = np.dstack([base + 10 * c for c in range(3)])
    return np.clip(base + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)


def _shipped(name):
    if name not in available_codecs():
        pytest.skip(f"{name} not shipped")
    return get_codec(name)


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name,shape,setting", [("learned-msssim", (130, 200), 7.5),
                                                ("learned-msssim", (70, 129, 3), 3)])
def test_same_indexes_and_pixels_on_1_2_4_threads_and_the_int64_reference(name, shape, setting, restore_threads):
    codec = _shipped(name)
    image = _em_like(shape)
    data = codec.encode(image, setting)
    header, _ = unpack(data)
    assert header.version == 3
    model = codec._by_id[header.model_id]
    runs = []
    for threads, reference in ((1, False), (2, False), (4, False), (1, True)):
        torch.set_num_threads(threads)
        model.exact_reference = reference  # int64-only convolutions: no float anywhere in the hyper path
        trace = {}
        try:
            pixels = model.decode(data, trace)
        finally:
            model.exact_reference = False
        runs.append((trace["indexes"], trace["means"], pixels))
    first = runs[0]
    assert first[0].dtype == torch.int32 and int(first[0].max()) > int(first[0].min())  # tables really vary
    for indexes, means, pixels in runs[1:]:
        assert torch.equal(indexes, first[0])
        assert (means is None and first[1] is None) or torch.equal(means, first[1])
        assert np.array_equal(pixels, first[2])
    assert reconstruction_hash(first[2]) == header.recon_hash  # the encoder reconstructed the same pixels


def test_encoding_on_another_thread_count_gives_the_same_stream(restore_threads):
    codec = _shipped("learned-msssim")
    image = _em_like((96, 140), 3)
    torch.set_num_threads(1)
    one = codec.encode(image, 4)
    torch.set_num_threads(2)
    assert codec.encode(image, 4) == one


def test_integer_hyper_decoder_matches_int64_reference_for_every_hyper_architecture():
    """float64 convolutions on integer values == int64 convolutions, bit for bit (ReLU and LeakyReLU nets)."""
    for arch in ("hyperprior", "mean-scale"):
        torch.manual_seed(1)
        model = build_model(arch, 1, 16, 24)
        z = torch.randint(-20, 21, (1, 16, 3, 5), dtype=torch.long) * (2 ** FRAC) + 1234
        fast, ref = ExactHyperDecoder(model.h_s), ExactHyperDecoder(model.h_s, reference=True)
        out = fast(z)
        assert out.dtype == torch.long and out.shape == (1, 24 if arch == "hyperprior" else 48, 12, 20)
        assert torch.equal(out, ref(z))
        with torch.no_grad():  # and it is the float network, to the fixed-point resolution
            expected = model.h_s(z.double().div(2 ** FRAC).float())
        assert float((out.double() / 2 ** FRAC - expected.double()).abs().max()) < 1e-2


def test_table_indexes_are_compressais_rule_on_fixed_point_scales():
    from compressai.entropy_models import GaussianConditional

    gc = GaussianConditional(None)
    table = torch.exp(torch.linspace(np.log(0.11), np.log(256), 64))
    gc.scale_table = table
    gc.lower_bound_scale = type(gc.lower_bound_scale)(0.11)
    scales_q = torch.randint(0, 300 * 2 ** FRAC, (5000,), dtype=torch.long)
    scales_q[:64] = torch.floor(table.double() * 2 ** FRAC).long()  # exactly on every threshold
    expected = gc.build_indexes((scales_q.double() / 2 ** FRAC).float()[None])[0]
    got = table_indexes(scales_q, table)
    # CompressAI compares float32 values: away from a threshold (by more than the fixed-point step) they agree
    near = (scales_q.double()[:, None] / 2 ** FRAC - table.double()[None]).abs().min(1).values <= 2.0 ** -FRAC
    assert torch.equal(got[~near], expected[~near]) and int((~near).sum()) > 4000 and bool(near[:64].all())
    assert got.tolist()[:3] == [0, 1, 2]  # s <= t  counts as below t


def test_fixed_gains_are_decimal_exp_of_the_interpolated_log_gain():
    table = torch.tensor([[0.0, -1.0], [1.0, 0.5], [3.0, 2.0]])
    got = fixed_gains(table, Fraction(1, 2))
    assert got.tolist() == [round(np.exp(0.5) * 2 ** GFRAC), round(np.exp(-0.25) * 2 ** GFRAC)]
    assert fixed_gains(table, Fraction(2)).tolist() == [round(np.exp(3.0) * 2 ** GFRAC), round(np.exp(2.0) * 2 ** GFRAC)]
    assert torch.equal(fixed_gains(table, Fraction(3, 4)), fixed_gains(table, Fraction(3, 4)))


def test_version_2_streams_still_decode_through_their_float_path():
    codec = _shipped("learned-mse")  # a hyperprior-only gray model (version-2 streams predate the context model)
    model = codec.model_for(1, 3)
    image = _em_like((64, 64), 5)
    x = torch.from_numpy(image.astype(np.float32) / 255)[None, None]
    from core.codecs.learned import vr_rate

    rate, milli = vr_rate(3, model.levels)
    with torch.inference_mode():
        out = model.model.compress(x, rate)
        strings = [s[0] for s in out["strings"]]
        x_hat = model.model.decompress([[b] for b in strings], model.latent_shape(64, 64), rate)["x_hat"]
    old = pack(Header(model.model_id, model.checkpoint_hash, 64, 64, 1, 8, milli), strings, version=2)
    assert unpack(old)[0].version == 2 and unpack(old)[0].recon_hash == b""
    expected = np.rint(x_hat[0, 0].clamp(0, 1).numpy() * 255).astype(np.uint8)
    assert np.array_equal(codec.decode(old), expected)
    future = bytearray(old[:-4])
    future[4] = 9
    with pytest.raises(CodecError, match="stream version 9 is not supported"):
        unpack(bytes(future) + struct.pack(">I", zlib.crc32(bytes(future))))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core.codecs", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={"PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin",
                                                       "OMP_NUM_THREADS": "1"})


def test_decompress_verify_passes_on_a_good_stream_and_fails_on_an_altered_one(tmp_path):
    _shipped("learned-msssim")
    from core.io import as_bioimage, write_image

    write_image(tmp_path / "em.png", as_bioimage(_em_like((96, 128), 7)))
    assert _cli("compress", tmp_path / "em.png", tmp_path / "em.bcc", "--codec", "learned-msssim",
                "--setting", "8").returncode == 0
    good = _cli("decompress", tmp_path / "em.bcc", tmp_path / "em_out.png", "--verify")
    assert good.returncode == 0 and good.stdout.strip() == "verify: pass (1 learned stream(s); reconstruction hash matches)"
    # alter the y string in the middle and recompute the CRC: the stream still parses and decodes
    name, setting, mode, payload = unwrap_file((tmp_path / "em.bcc").read_bytes())
    header, strings = unpack(payload)
    y = bytearray(strings[0])
    y[len(y) // 2] ^= 0x5A
    altered = pack(header, [bytes(y), *strings[1:]])
    assert unpack(altered)[0] == header  # CRC valid
    (tmp_path / "bad.bcc").write_bytes(wrap_file(name, setting, altered, mode))
    bad = _cli("decompress", tmp_path / "bad.bcc", tmp_path / "bad_out.png", "--verify")
    assert bad.returncode == 1, bad.stderr
    assert bad.stderr.startswith("verify: FAIL: 1 of 1 learned stream(s) decode to pixels other than the encoder's")
    assert _cli("compress", tmp_path / "em.png", tmp_path / "p.bcc", "--codec", "png").returncode == 0
    classical = _cli("decompress", tmp_path / "p.bcc", tmp_path / "p_out.png", "--verify")
    assert classical.returncode == 3 and "png streams carry no reconstruction hash" in classical.stderr
