"""Encoder-side latent refinement of the learned codecs (``refine_steps`` / ``--effort``): the decoder is
unchanged, the measured rate–distortion objective of the real stream does not get worse, the bytes are
deterministic, and the setting is part of the codec's version."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from core.codecs import available_codecs, get_codec  # noqa: E402
from core.codecs.__main__ import main as cli_main  # noqa: E402
from core.codecs.bitstream import reconstruction_hash, unpack, unwrap_file  # noqa: E402
from core.codecs.learned import LearnedModel, load_codecs  # noqa: E402
from core.io import as_bioimage, write_image  # noqa: E402
from core.metrics import ms_ssim  # noqa: E402
from core.models import build_model  # noqa: E402
from core.train import save_checkpoint  # noqa: E402



def _em_like(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = 120 + 50 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    return np.clip(base + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def shipped():
    if "learned-msssim" not in available_codecs():
        pytest.skip("learned-msssim not shipped")
    return get_codec("learned-msssim")


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _objective(codec, image, data, setting):
    """The RD objective of a real stream: 8 · bytes / pixels + λ · (1 − MS-SSIM of the decoded image)."""
    decoded = codec.decode(data)
    header, _ = unpack(data)
    assert header.recon_hash == reconstruction_hash(decoded)  # the stream's hash is the decoder's pixels
    lam = codec.model_for(1, setting).lmbda_at(int(round(setting * 1000)))
    bpp = 8 * len(data) / image.size
    dist = 1 - ms_ssim(image, decoded, 8)
    return bpp + lam * dist, bpp, dist


def test_refinement_lowers_the_measured_objective_with_the_unchanged_decoder(shipped, one_thread):
    image = _em_like((64, 64), 1)
    refined = shipped.with_refinement(12)
    for setting in (4, 10):
        plain = shipped.encode(image, setting)
        data = refined.encode(image, setting)
        assert data != plain
        # the registry's codec (no refinement) decodes the refined stream: same decoder, same format
        j0, bpp0, d0 = _objective(shipped, image, plain, setting)
        j1, bpp1, d1 = _objective(shipped, image, data, setting)
        assert j1 < j0, (setting, j0, j1)
        assert unpack(data)[0].setting_milli == setting * 1000


def test_refined_bytes_are_deterministic_on_any_thread_count(shipped, one_thread):
    image = _em_like((64, 80), 2)  # not a multiple of the 64-px stride: padded, cropped distortion
    refined = shipped.with_refinement(6)
    first = refined.encode(image, 7.5)
    assert refined.encode(image, 7.5) == first
    torch.set_num_threads(2)
    assert refined.encode(image, 7.5) == first
    assert shipped.with_refinement(6).encode(image, 7.5) == first  # a fresh codec object, same models


def test_refine_steps_is_part_of_the_version_and_off_by_default(shipped):
    assert shipped.refine_steps == 0 and shipped.params == {}
    assert "refine" not in shipped.version  # the stored rows of the default codec keep their version
    assert shipped.with_refinement(0) is shipped
    r25, r50 = shipped.with_refinement(25), shipped.with_refinement(50)
    assert r25.params == {"refine_steps": 25}
    assert r25.version.startswith(shipped.version) and "refine_steps=25" in r25.version
    assert len({shipped.version, r25.version, r50.version}) == 3
    assert r25.default_settings == shipped.default_settings and r25.name == shipped.name
    assert get_codec("learned-msssim").refine_steps == 0  # the registry's instance was not changed
    with pytest.raises(ValueError, match="refine_steps must be >= 0"):
        shipped.with_refinement(-1)


def test_lambda_follows_the_gain_interpolation(shipped):
    model = shipped.model_for(1, 8)
    ladder = model.meta["lmbda"]
    assert model.levels == len(ladder) == 8
    assert model.lmbda_at(1000) == pytest.approx(ladder[0], rel=1e-12)
    assert model.lmbda_at(16000) == pytest.approx(ladder[-1], rel=1e-12)
    # setting 8.5 = position 3.5 between levels 3 and 4: geometric mean (linear in log λ, like the gains)
    assert model.lmbda_at(8500) == pytest.approx(math.sqrt(ladder[3] * ladder[4]), rel=1e-12)
    # setting 3.142 = level position 0.9994...: log-linear
    t = (3142 - 1000) / 15000 * 7
    expected = math.exp((1 - t) * math.log(ladder[0]) + t * math.log(ladder[1]))
    assert model.lmbda_at(3142) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("arch,loss", [("mean-scale", "mse"), ("hyperprior", "msssim")])
def test_fixed_rate_checkpoints_refine_with_their_one_lambda(tmp_path, one_thread, arch, loss):
    torch.manual_seed(3)
    model = build_model(arch, 1, 16, 16)
    stem = tmp_path / f"tiny-{arch}"
    save_checkpoint(model, stem)
    meta = {"model_id": stem.name, "codec": "tiny", "quality": 1, "arch": arch, "channels": 1, "N": 16,
            "M": 16, "loss": loss, "lmbda": 0.01 if loss == "mse" else 10.0}
    stem.with_suffix(".json").write_text(json.dumps(meta))
    codec = load_codecs(tmp_path)["tiny"]
    assert codec.model_for(1, 1).lmbda_at(0) == meta["lmbda"]
    image = _em_like((64, 64), 4)
    plain = codec.encode(image, 1)
    model = codec.model_for(1, 1)
    x = torch.from_numpy(image.astype(np.float32) / 255)[None, None]
    # an untrained model's latents are tiny: a larger step moves them across rounding boundaries
    history: list = []
    y = model.refine_latent(x, 0, 8, 64, 64, lr=0.5, history=history)
    assert len(history) == 9
    best = min(range(9), key=lambda i: history[i][2])
    if arch == "mean-scale":  # the untrained mean-scale model's objective falls
        assert best > 0 and history[best][2] < history[0][2]
    else:  # the untrained hyperprior's synthesis is clamped flat (distortion constant): no step helps
        assert best == 0 and len({h[1] for h in history}) == 1
        with torch.no_grad():  # so the refinement returns g_a(x) itself (computed with oneDNN off), never a worse latent
            assert torch.allclose(y, model.model.g_a(x), rtol=0, atol=1e-6)
    assert y.shape == (1, 16, 4, 4) and not y.requires_grad
    assert model.refine_latent(x, 0, 8, 64, 64, lr=0.5).equal(y)  # deterministic
    data = codec.with_refinement(8).encode(image, 1)  # the default step size
    decoded = codec.decode(data)
    assert unpack(data)[0].recon_hash == reconstruction_hash(decoded)
    measured = []
    for stream in (plain, data):
        out = codec.decode(stream)
        dist = (255.0 ** 2 * np.mean((out / 255.0 - image / 255.0) ** 2) if loss == "mse"
                else 1 - ms_ssim(image, out, 8))
        measured.append(8 * len(stream) / image.size + meta["lmbda"] * dist)
    assert measured[1] <= measured[0]


def test_refinement_refuses_a_checkpoint_without_lambda(tmp_path):
    torch.manual_seed(0)
    stem = tmp_path / "nolambda"
    save_checkpoint(build_model("mean-scale", 1, 16, 16), stem)
    meta = {"model_id": "nolambda", "codec": "tiny", "quality": 1, "arch": "mean-scale", "channels": 1,
            "N": 16, "M": 16}
    model = LearnedModel(stem.with_suffix(".pt"), meta)
    with pytest.raises(ValueError, match="no λ"):
        model.encode(_em_like((64, 64)), 8, None, refine_steps=2)


def test_cli_effort_writes_a_stream_that_decompress_verify_passes(shipped, tmp_path, capsys):
    write_image(tmp_path / "em.png", as_bioimage(_em_like((64, 96), 5)))
    assert cli_main(["compress", str(tmp_path / "em.png"), str(tmp_path / "plain.bcc"), "--codec",
                     "learned-msssim", "--setting", "8"]) == 0
    assert cli_main(["compress", str(tmp_path / "em.png"), str(tmp_path / "refined.bcc"), "--codec",
                     "learned-msssim", "--setting", "8", "--effort", "8"]) == 0
    plain, refined = (tmp_path / "plain.bcc").read_bytes(), (tmp_path / "refined.bcc").read_bytes()
    assert refined != plain
    assert unwrap_file(refined)[:3] == unwrap_file(plain)[:3]  # same codec, setting, colour mode in the wrapper
    # the decoder knows nothing of the refinement: decompress --verify recomputes the reconstruction hash
    capsys.readouterr()
    assert cli_main(["decompress", str(tmp_path / "refined.bcc"), str(tmp_path / "out.png"), "--verify"]) == 0
    assert capsys.readouterr().out.strip() == "verify: pass (1 learned stream(s); reconstruction hash matches)"
    assert cli_main(["compress", str(tmp_path / "em.png"), str(tmp_path / "p.bcc"), "--codec", "png",
                     "--effort", "3"]) == 2
    assert "--effort (latent refinement) applies to learned codecs only" in capsys.readouterr().err


def test_the_refine_bench_scores_each_model_with_its_own_training_loss():
    """bench.refine's objective column is the checkpoint's own objective: bpp + λ · 255²·MSE for an MSE model
    (it used 1 − MS-SSIM for every model, which made an MSE model's objective almost its bpp)."""
    from types import SimpleNamespace

    from bench.refine import model_objective

    original = np.full((40, 40), 100, np.uint8)
    decoded = original.copy()
    decoded[:20] = 104  # MSE 8 on the 8-bit scale: 255² · MSE of [0, 1] pixels is the same number
    mse_model = SimpleNamespace(meta={"loss": "mse"})
    assert model_objective(mse_model, original, decoded, 8, 0.5, 0.01) == pytest.approx(0.5 + 0.01 * 8.0, rel=1e-5)
    ramp = (np.arange(200 * 200).reshape(200, 200) % 256).astype(np.uint16) * 257  # 16-bit, full range: ÷ 65535
    noise = np.random.default_rng(5).normal(0, 4000, ramp.shape)
    noisy = np.clip(ramp + noise, 0, 65535).astype(np.uint16)
    distortion = 1 - ms_ssim(ramp, noisy, 16)
    assert distortion > 0.01  # the distortion term is large enough for the check below to see it
    msssim_model = SimpleNamespace(meta={"loss": "msssim"})
    assert model_objective(msssim_model, ramp, noisy, 16, 0.25, 2.0) == pytest.approx(0.25 + 2.0 * distortion, rel=1e-4)
    # a dim 16-bit image is measured through its intensity window, as the codec coded it: 4·x + 1000 is x / 255
    x = (np.arange(200 * 200).reshape(200, 200) % 256).astype(np.uint8)
    x_noisy = np.clip(x.astype(int) + np.random.default_rng(6).integers(-20, 21, x.shape), 0, 255).astype(np.uint8)
    dim, dim_noisy = (a.astype(np.uint16) * 4 + 1000 for a in (x, x_noisy))
    for model in (mse_model, msssim_model):
        assert model_objective(model, dim, dim_noisy, 16, 0.25, 2.0) == pytest.approx(
            model_objective(model, x, x_noisy, 8, 0.25, 2.0), rel=1e-5)
