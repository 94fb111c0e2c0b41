"""Training: losses (incl. the Zhao mix at α = 0.84 against an independent computation), a few steps
lower the loss, and the CLI writes a loadable checkpoint + metadata and resumes."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from core import train
from core.io import as_bioimage, write_image
from core.models import build_model


def _smooth_images(n: int, size: int, channels: int, seed: int) -> list[torch.Tensor]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        planes = [0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.uniform(0.5, 2) * yy + rng.uniform()))
                  for _ in range(channels)]
        out.append(torch.tensor(np.stack(planes), dtype=torch.float32))
    return out


def test_mix_loss_matches_independent_computation():
    from pytorch_msssim import ms_ssim
    from scipy.signal.windows import gaussian

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 96, 112, generator=g)
    y = (x + 0.1 * torch.randn(2, 1, 96, 112, generator=g)).clamp(0, 1)
    # MS-SSIM: 5 scales, the window rule of core.metrics: largest odd w with (w-1)*16 < 96 -> 5
    msssim = float(ms_ssim(y, x, data_range=1.0, win_size=5, win_sigma=1.5 * 5 / 11))
    # G·L1: |x-y| filtered by the normalised Gaussian of sigma 8 (largest of 0.5..8), truncated at 4 sigma, valid
    k1 = gaussian(65, 8.0)
    k = np.outer(k1, k1) / np.outer(k1, k1).sum()
    diff = (x - y).abs().numpy().astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(diff, (65, 65), axis=(2, 3))
    gl1 = float((windows * k).sum(axis=(-2, -1)).mean())
    expected = 0.84 * (1 - msssim) + 0.16 * gl1
    got = float(train.distortion("mix", x, y))  # alpha defaults to 0.84
    assert got == pytest.approx(expected, rel=1e-5)
    # and the full loss adds the rate: R + λ·mix
    assert 0 < gl1 < 0.2 and 0.3 < msssim < 1


def test_mix_and_msssim_of_identical_images_are_zero():
    x = torch.rand(1, 3, 80, 80, generator=torch.Generator().manual_seed(0))
    assert float(train.distortion("mix", x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(train.distortion("msssim", x, x.clone())) == pytest.approx(0.0, abs=1e-6)
    assert float(train.distortion("mse", x, x + 1 / 255)) == pytest.approx(1.0, rel=1e-4)


def test_unknown_loss_is_rejected():
    x = torch.zeros(1, 1, 64, 64)
    with pytest.raises(ValueError, match="unknown loss"):
        train.distortion("l2", x, x)


def test_a_few_training_steps_lower_the_loss():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = build_model("factorized", 1, 8, 8)
        sampler = train.CropSampler(_smooth_images(4, 96, 1, seed=1), crop=64, seed=0)
        opt, aux = train.make_optimizers(model, lr=1e-3)
        losses = train.train_steps(model, sampler, opt, aux, 40, kind="mse", lmbda=0.01, batch=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert len(losses) == 40 and all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])


def test_crop_sampler_rejects_too_small_images():
    with pytest.raises(ValueError, match="larger than"):
        train.CropSampler([torch.zeros(1, 32, 32)], crop=64, seed=0)


def test_cli_writes_checkpoint_metadata_and_resumes(tmp_path):
    rng = np.random.default_rng(0)
    imgs = _smooth_images(3, 80, 1, seed=2)
    for i, im in enumerate(imgs):
        pixels = np.clip(im[0].numpy() * 255 + rng.normal(0, 3, (80, 80)), 0, 255).astype(np.uint8)
        write_image(tmp_path / f"im{i}.png", as_bioimage(pixels))
    out = tmp_path / "w" / "tiny-l4.0"  # a dotted stem (λ in the name) must survive: tiny-l4.0.pt, not tiny-l4.pt
    pt, js, resume = (out.with_name(out.name + s) for s in (".pt", ".json", ".resume.pt"))
    common = ["--arch", "factorized", "--channels", "1", "--N", "8", "--M", "8", "--loss", "mix",
              "--lmbda", "4", "--batch", "2", "--crop", "80", "--train", str(tmp_path / "im0.png"),
              str(tmp_path / "im1.png"), "--val", str(tmp_path / "im2.png"), "--out", str(out),
              "--codec", "tiny", "--quality", "1", "--no-progress", "--save-every", "2"]
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    meta = train.main(common + ["--steps", "2"])
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers  # restored once training ends
    assert pt.exists() and resume.exists() and not (tmp_path / "w" / "tiny-l4.pt").exists()
    on_disk = json.loads(js.read_text())
    assert on_disk["loss"] == "mix" and on_disk["alpha"] == 0.84 and on_disk["lmbda"] == 4.0
    assert on_disk["channels"] == 1 and on_disk["steps"]["total"] == 2
    assert on_disk["training_data"] == [str(tmp_path / "im0.png"), str(tmp_path / "im1.png")]
    v = on_disk["validation"]
    assert v["bpp"] > 0 and np.isfinite(v["psnr"]) and 0 < v["ms_ssim"] <= 1
    assert v["images"][0]["bytes"] * 8 / (80 * 80) == pytest.approx(v["bpp"])
    state = torch.load(pt, weights_only=True)
    assert any(k.startswith("g_a.") for k in state)
    # --init reads the base's metadata next to a dotted-stem checkpoint
    meta = train.main(["--arch", "factorized", "--channels", "1", "--N", "8", "--M", "8", "--lmbda", "4",
                       "--batch", "2", "--crop", "80", "--train", str(tmp_path / "im0.png"), "--steps", "1",
                       "--out", str(tmp_path / "w" / "ft"), "--init", str(pt), "--no-progress"])
    assert meta["base"]["checkpoint"] == "tiny-l4.0.pt" and meta["steps"] == {"base": 2, "this_run": 1, "total": 3}
    # resume: continues from step 2 to 4
    meta = train.main(common + ["--steps", "4", "--resume"])
    assert meta["steps"]["this_run"] == 4
    assert torch.load(resume, weights_only=True)["step"] == 4
    # --minutes: a wall-time budget ends the run after the step in flight (checkpoint and snapshot written)
    meta = train.main(common + ["--steps", "1000", "--resume", "--minutes", "0"])
    assert meta["steps"]["this_run"] == 5 and torch.load(resume, weights_only=True)["step"] == 5
    # --skip-validation writes the checkpoint unmeasured (a GPU machine's run); --validate-only measures it later
    meta = train.main(common + ["--steps", "6", "--resume", "--skip-validation"])
    assert "validation" not in json.loads(js.read_text()) and meta["steps"]["this_run"] == 6
    # as a catalog run with --skip-validation writes it (no val image listed: the machine may not hold them)
    unlisted = json.loads(js.read_text())
    unlisted["validation_data"] = []
    unlisted["training_images"] = [i for i in unlisted["training_images"] if i != str(tmp_path / "im2.png")]
    js.write_text(json.dumps(unlisted))
    meta = train.main(["--channels", "1", "--train", str(tmp_path / "im0.png"), "--val", str(tmp_path / "im2.png"),
                       "--out", str(out), "--validate-only"])  # no λ needed: the JSON holds it
    assert json.loads(js.read_text())["validation"]["bpp"] == meta["validation"]["bpp"] > 0
    assert meta["validation_data"] == [str(tmp_path / "im2.png")]  # validated on it now: recorded as seen
    assert json.loads(js.read_text())["training_images"].count(str(tmp_path / "im2.png")) == 1


def test_checkpoint_stores_half_precision_parameters_that_reload_exactly(tmp_path):
    torch.manual_seed(0)
    model = build_model("mean-scale", 1, 16, 16)
    path = train.save_checkpoint(model, tmp_path / "m")
    state = torch.load(path, weights_only=True)
    params = dict(model.named_parameters())
    assert params and all(state[k].dtype == torch.float16 for k in params)
    assert state["gaussian_conditional.scale_table"].dtype == torch.float32  # buffers keep their dtype
    assert state["entropy_bottleneck._quantized_cdf"].dtype == torch.int32
    fresh = build_model("mean-scale", 1, 16, 16)
    fresh.load_state_dict(state)
    fresh.eval()
    for k, p in fresh.named_parameters():  # the saved model was rounded in place: reloading is exact
        assert p.dtype == torch.float32 and torch.equal(p, params[k]), k
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        a, b = model.compress(x), fresh.compress(x)
    assert a["strings"] == b["strings"]


def test_validation_images_must_not_be_training_images(tmp_path):
    write_image(tmp_path / "a.png", as_bioimage(np.zeros((80, 80), np.uint8)))
    with pytest.raises(ValueError, match="also training"):
        train.main(["--channels", "1", "--lmbda", "1", "--train", str(tmp_path), "--val", str(tmp_path / "a.png"),
                    "--out", str(tmp_path / "x"), "--steps", "1", "--no-progress"])


def test_a_fixed_rate_checkpoint_starts_a_variable_rate_model_at_its_own_lambda(tmp_path):
    """Warm start: transforms and entropy models load; at the rate where the ladder crosses the checkpoint's λ the
    gains are 1, so the variable-rate model computes exactly what the fixed one does there."""
    from core.models.variable_rate import lambda_ladder

    torch.manual_seed(0)
    fixed = build_model("mean-scale", 3, 16, 24)
    path = tmp_path / "fixed.pt"
    torch.save(fixed.state_dict(), path)
    (tmp_path / "fixed.json").write_text(json.dumps({"lmbda": 40.0}))
    ladder = lambda_ladder(0.4, 4000, 8)  # log-spaced: λ 40 lies at level 3.5
    gained = build_model("gained-mean-scale", 3, 16, 24, levels=8)
    assert train.load_state(gained, path, ladder) == 40.0
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    fixed.eval(), gained.eval()
    with torch.no_grad():
        assert torch.allclose(gained(x, rate=3.5)["x_hat"], fixed(x)["x_hat"], atol=1e-6)
        assert not torch.allclose(gained(x, rate=7)["x_hat"], fixed(x)["x_hat"], atol=1e-3)  # finer at the top
    g = gained.log_gain.detach()[:, 0]
    assert float(g[0]) < 0 < float(g[-1]) and torch.equal(gained.log_inv_gain, -gained.log_gain)
    (tmp_path / "fixed.json").write_text(json.dumps({"lmbda": None}))
    with pytest.raises(ValueError, match="numeric 'lmbda'"):
        train.load_state(build_model("gained-mean-scale", 3, 16, 24, levels=8), path, ladder)


def test_a_narrower_checkpoint_warm_starts_a_wider_latent_where_shapes_match(tmp_path):
    """--init-matching: a gained model with latent width M = 24 starts one with M = 40 — every tensor of equal name
    and shape is copied bit for bit (the N-wide layers, the hyper-latent's entropy bottleneck), every M-wide one keeps
    its fresh initialisation; a checkpoint with nothing in common is an error."""
    torch.manual_seed(0)
    narrow = build_model("gained-mean-scale", 1, 16, 24, levels=8)
    path = tmp_path / "narrow.pt"
    torch.save(narrow.state_dict(), path)
    torch.manual_seed(1)
    wide = build_model("gained-mean-scale", 1, 16, 40, levels=8)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    report = train.load_matching(wide, path)
    after, source = wide.state_dict(), narrow.state_dict()
    copied = [k for k in after if k in source and source[k].shape == after[k].shape]
    assert report["loaded"] == len(copied) and sorted(set(after) - set(copied)) == report["kept_fresh"]
    assert all(torch.equal(after[k], source[k]) for k in copied)
    assert all(torch.equal(after[k], before[k]) for k in report["kept_fresh"])
    assert "g_a.0.weight" in copied and "log_gain" in report["kept_fresh"]  # N-wide first conv; M-wide gains
    assert any(k.startswith("g_a.") for k in report["kept_fresh"])  # the layer that outputs the latent
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="no tensor fits"):
        train.load_matching(wide, tmp_path / "other.pt")


def test_a_resumed_run_records_when_bf16_autocast_or_the_crop_changed(tmp_path):
    """bf16 autocast (whether it pays depends on the host CPU) and the crop size can differ between the stretches
    of one resumed run: the metadata keeps a (from step, value) history of each, not just the last invocation's."""
    for i, im in enumerate(_smooth_images(2, 128, 1, seed=3)):
        write_image(tmp_path / f"im{i}.png", as_bioimage((im[0].numpy() * 255).astype(np.uint8)))
    common = ["--arch", "gained-mean-scale", "--levels", "2", "--lmbda-range", "0.01", "0.1", "--channels", "1",
              "--N", "8", "--M", "8", "--loss", "mse", "--batch", "1", "--crop", "64", "--train",
              str(tmp_path / "im0.png"), "--out", str(tmp_path / "vr"), "--codec", "tiny", "--no-progress",
              "--resume", "--skip-validation"]
    meta = train.main(common + ["--steps", "1"])
    assert meta["bf16_history"] == [[0, False]] and meta["bf16_autocast"] is False
    meta = train.main(common + ["--steps", "3", "--bf16"])
    assert meta["bf16_history"] == [[0, False], [1, True]] and meta["bf16_autocast"] is True
    meta = train.main(common + ["--steps", "4", "--bf16"])  # unchanged flag: no new entry
    assert meta["bf16_history"] == [[0, False], [1, True]] and meta["steps"]["this_run"] == 4
    assert meta["crop_history"] == [[0, 64]]
    meta = train.main([*common, "--steps", "5", "--bf16", "--crop", "128"])  # larger crops from step 4 on
    assert meta["crop_history"] == [[0, 64], [4, 128]] and meta["crop"] == 128


def test_a_resume_refuses_a_snapshot_that_began_from_another_init(tmp_path):
    """The snapshot records the --init it began from. Resuming with that same file continues the run and keeps its
    base (steps counted once); once --init names a different file (say the run's own result, shipped in its
    place) the resume stops with a message instead of loading mismatched entropy tables or double-counting steps."""
    for i, im in enumerate(_smooth_images(2, 96, 1, seed=4)):
        write_image(tmp_path / f"im{i}.png", as_bioimage((im[0].numpy() * 255).astype(np.uint8)))
    base_args = ["--arch", "gained-mean-scale", "--levels", "2", "--lmbda-range", "0.01", "0.1", "--channels", "1",
                 "--N", "8", "--M", "8", "--loss", "mse", "--batch", "1", "--crop", "64", "--train",
                 str(tmp_path / "im0.png"), "--codec", "tiny", "--no-progress", "--skip-validation"]
    train.main(base_args + ["--steps", "2", "--out", str(tmp_path / "start")])
    start = tmp_path / "start.pt"
    tune = base_args + ["--out", str(tmp_path / "tune"), "--init", str(start), "--resume"]
    meta = train.main(tune + ["--steps", "1"])
    assert meta["steps"] == {"base": 2, "this_run": 1, "total": 3}
    assert torch.load(tmp_path / "tune.resume.pt", weights_only=True)["base"]["sha256"] == meta["base"]["sha256"]
    meta = train.main(tune + ["--steps", "2"])  # same --init: continues
    assert meta["steps"] == {"base": 2, "this_run": 2, "total": 4}
    (tmp_path / "tune.pt").replace(start)  # the result now sits where the start was
    (tmp_path / "tune.json").replace(tmp_path / "start.json")
    with pytest.raises(SystemExit, match="move tune.resume.pt away"):
        train.main(tune + ["--steps", "3"])


def test_a_run_that_skips_validation_needs_only_the_train_split(tmp_path):
    """scripts/gpu_train.sh packs the train split alone for a colour run (the 64 MiB a device call carries): with
    --skip-validation the catalog's val images need not be there; a measuring run still asks for them."""
    import argparse

    from PIL import Image

    from core.catalog import CatalogError

    folder = tmp_path / "isbi2012_em" / "train"
    for sub in ("image", "label"):
        (folder / sub).mkdir(parents=True)
    for i in range(18):  # the train slices 0-17 only: val 18-19 and test 20-29 stay behind
        for sub in ("image", "label"):
            Image.fromarray(np.full((8, 8), 255, np.uint8)).save(folder / sub / f"{i}.png")
    args = argparse.Namespace(datasets="isbi2012_em", data_root=str(tmp_path), skip_validation=True,
                              validate_only=False)
    training, validation = train.training_sources(args)
    assert len(training) == 18 and validation == []
    for measuring in ({"skip_validation": False}, {"validate_only": True}):
        with pytest.raises(CatalogError, match=r"do not exist: \['18', '19'\]"):
            train.training_sources(argparse.Namespace(**{**vars(args), **measuring}))
