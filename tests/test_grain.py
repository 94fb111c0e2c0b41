"""Grain synthesis (core/codecs/grain.py): σ from the coding residual, reproducible noise, its own rows."""
import struct

import numpy as np
import pytest
from skimage import data

from core.codecs import CodecError, available_codecs, get_codec
from core.codecs.base import Codec
from core.codecs.grain import MAGIC, GrainCodec, add_grain, grain_sigma, stream_seed
from core.metrics import psnr
from core.pipeline import build_encoder

CAMERA = data.camera()[128:384, 128:384]          # 256x256 8-bit gray
ASTRONAUT = data.astronaut()[:256, 128:384]        # 256x256 8-bit RGB


def _inner_and_grain(name):
    grain = get_codec(name + "+grain")
    return grain.inner, grain


def test_noise_is_numpys_frozen_legacy_stream_and_the_seed_is_the_inner_streams_hash():
    # RandomState(0).standard_normal(3) = 1.764, 0.400, 0.979: a format constant, not an implementation detail
    out = add_grain(np.full((1, 3), 100, np.uint8), np.array([10.0]), 8, seed=0)
    assert out.tolist() == [[118, 104, 110]] and out.dtype == np.uint8
    assert stream_seed(b"") == 0xE3B0C442  # SHA-256 of nothing starts e3b0c442
    clipped = add_grain(np.array([[4090, 5]], np.uint16), np.array([500.0]), 12, seed=0)
    assert clipped.tolist() == [[4095, 205]]  # clipped to the 12-bit range, not 65535


def test_grain_stream_restores_the_residual_energy_and_costs_3_db():
    inner, grain = _inner_and_grain("jpeg2000")
    inner_bytes = inner.encode(CAMERA, 20)
    recon = inner.decode(inner_bytes)
    data_ = grain.encode(CAMERA, 20)
    assert data_[:4] == MAGIC and data_[11:] == inner_bytes and len(data_) == len(inner_bytes) + 11
    (sigma,) = struct.unpack(">f", data_[7:11])
    rms = float(np.sqrt(np.mean((CAMERA.astype(float) - recon) ** 2)))
    assert sigma == pytest.approx(rms, rel=1e-6) and sigma > 2
    out = grain.decode(data_)
    assert np.array_equal(out, grain.decode(data_))  # reproducible
    added = out.astype(float) - recon
    assert abs(added.mean()) < 0.1 * sigma and added.std() == pytest.approx(sigma, rel=0.05)
    # independent noise of the residual's RMS doubles the squared error: −10·log10(2) dB
    assert psnr(CAMERA, out, 8) == pytest.approx(psnr(CAMERA, recon, 8) - 3.01, abs=0.25)
    other = grain.encode(CAMERA, 40)  # another stream, another seed: different noise
    assert not np.array_equal(grain.decode(other).astype(int) - inner.decode(other[11:]), added)


def test_a_learned_inner_codec_hands_over_its_own_reconstruction_without_a_second_decode(monkeypatch):
    if "learned-mse+grain" not in available_codecs("grain"):
        pytest.skip("no shipped learned-mse checkpoints")
    inner, grain = _inner_and_grain("learned-mse")
    crop = CAMERA[:64, :96]
    data_, recon = inner.encode_with_reconstruction(crop, 5)
    assert np.array_equal(recon, inner.decode(data_)) and recon.dtype == np.uint8
    calls = []
    monkeypatch.setattr(type(inner), "decode", lambda self, data: calls.append(1) or Codec.decode(self, data))
    stream = grain.encode(crop, 5)
    assert calls == []  # σ came from the encoder's own reconstruction
    (sigma,) = struct.unpack(">f", stream[7:11])
    assert sigma == np.float32(np.sqrt(np.mean((crop.astype(float) - recon) ** 2)))
    assert stream[11:] == data_
    jp_inner, jp_grain = _inner_and_grain("jpeg2000")  # a classical inner codec: the base class decodes
    jp_data, jp_recon = jp_inner.encode_with_reconstruction(crop, 20)
    assert np.array_equal(jp_recon, jp_inner.decode(jp_data))


def test_rgb_gets_one_sigma_per_channel_and_per_channel_mode_wraps_it():
    inner, grain = _inner_and_grain("avif")
    data_ = grain.encode(ASTRONAUT, 45)
    assert data_[6] == 3
    sigmas = np.array(struct.unpack(">3f", data_[7:19]))
    expected = grain_sigma(ASTRONAUT, inner.decode(data_[19:]))
    assert np.allclose(sigmas, expected) and len(set(np.round(sigmas, 3))) == 3
    assert grain.decode(data_).shape == ASTRONAUT.shape
    planes = build_encoder(grain, "per_channel", 3)
    assert planes.decode(planes.encode(ASTRONAUT, 45)).shape == ASTRONAUT.shape


def test_damaged_grain_headers_are_refused_and_lossless_codecs_have_no_grain():
    _, grain = _inner_and_grain("jpeg2000")
    good = grain.encode(CAMERA, 40)
    for bad, match in [(b"XXXX" + good[4:], "bad magic"), (good[:4] + b"\x09" + good[5:], "version 9"),
                       (good[:5] + b"\x07" + good[6:], "invalid"), (good[:11], "truncated"),
                       (good[:7] + struct.pack(">f", float("nan")) + good[11:], "invalid"),
                       (good[:6] + b"\x03" + good[7:], "invalid|jpeg2000")]:
        with pytest.raises(CodecError, match=match):
            grain.decode(bad)
    with pytest.raises(ValueError, match="lossless"):
        GrainCodec(get_codec("png"))


def test_grain_variants_are_their_own_codecs_selected_only_by_at_grain():
    grain = available_codecs("grain")
    assert {"jpeg2000+grain", "avif+grain"} <= set(grain)
    assert not set(grain) & set(available_codecs("classical") + available_codecs("learned"))
    codec = get_codec("jpeg2000+grain")
    assert codec.default_settings == get_codec("jpeg2000").default_settings and codec.family == "classical"
    assert codec.version != get_codec("jpeg2000").version and "grain v1" in codec.version_for(1)
    for name in available_codecs("learned"):
        if name + "+grain" in grain:  # a learned variant: the inner checkpoints flag the rows they trained on
            assert get_codec(name + "+grain").models() == get_codec(name).models()
