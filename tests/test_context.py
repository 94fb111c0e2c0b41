"""The variable-rate checkerboard context model (core/models/context.py) and its exact codec path."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core import train
from core.codecs.bitstream import unpack as unpack_stream
from core.codecs.learned import LearnedModel, verifying
from core.models import build_model
from core.models.context import SCALE_FLOOR, anchor_mask, pack_anchors, pack_non_anchors, unpack


def _textured(h=128, w=160, seed=0) -> np.ndarray:
    """Blobs whose texture strength varies in space (neighbouring latents share a size, not a sign)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    envelope = 0.5 + 0.5 * np.sin(xx / 23.0) * np.cos(yy / 17.0)
    img = 128 + 40 * np.sin(xx / 9.0 + yy / 13.0) + 60 * envelope * rng.standard_normal((h, w))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _save(model, stem: Path, meta: dict) -> LearnedModel:
    train.save_checkpoint(model, stem)
    meta = {"model_id": stem.name, "codec": "ctx", "channels": model.channels, "N": 16, "M": 16, "levels": 4, **meta}
    stem.with_name(stem.name + ".json").write_text(json.dumps(meta))
    return LearnedModel(stem.with_name(stem.name + ".pt"), meta)


def _pair(folder: Path, channels: int = 1, trained_context: bool = False, context_bound: float | None = None):
    """A small gained mean-scale model and the checkerboard model started from it (as ``--init-matching`` does);
    ``trained_context``: the context's weights set to random values, as after training; ``context_bound``: the
    bound on the context's input, recorded in the checkpoint's JSON as ``core.train`` records it."""
    torch.manual_seed(7 + channels)
    base = build_model("gained-mean-scale", channels, 16, 16, levels=4)
    with torch.no_grad():  # spread the gains so the rate rises visibly with the level (an untrained y is tiny)
        base.log_gain.copy_(torch.linspace(1.0, 5.0, 4)[:, None].repeat(1, 16))
    hyper = _save(base, folder / f"hyper{channels}", {"arch": "gained-mean-scale"})
    ctx_model = build_model("gained-checkerboard", channels, 16, 16, levels=4, context_bound=context_bound)
    report = train.load_matching(ctx_model, hyper.weights)
    assert all(k.startswith(("context_prediction.", "entropy_parameters.", "entropy_bottleneck._",
                             "gaussian_conditional.")) for k in report["kept_fresh"]), report
    if trained_context:
        torch.manual_seed(3)
        with torch.no_grad():
            for p in ctx_model.entropy_parameters.parameters():
                p.normal_(0, 0.05)
    bound = {} if context_bound is None else {"context_bound": context_bound}
    return hyper, _save(ctx_model, folder / f"ctx{channels}{'t' if trained_context else ''}{context_bound or ''}",
                        {"arch": "gained-checkerboard", **bound})


def test_anchor_packing_round_trips_and_matches_the_checkerboard_mask():
    t = torch.arange(2 * 3 * 6 * 8, dtype=torch.float32).view(2, 3, 6, 8)
    a, n = pack_anchors(t), pack_non_anchors(t)
    assert a.shape == n.shape == (2, 3, 6, 4)
    assert torch.equal(unpack(a, n, 6, 8), t)
    mask = anchor_mask(6, 8)
    assert torch.equal(unpack(a, None, 6, 8), torch.where(mask, t, torch.zeros_like(t)))
    # the masked convolution at a non-anchor sees anchors only: changing non-anchors changes nothing there
    model = build_model("gained-checkerboard", 1, 16, 16, levels=2)
    conv = model.context_prediction
    x = torch.randn(1, 32, 8, 8)
    noise = torch.where(anchor_mask(8, 8), torch.zeros_like(x), torch.randn_like(x))
    with torch.no_grad():
        same = conv(x + noise) - conv(x)
    assert float(same[:, :, ~anchor_mask(8, 8)[0, 0]].abs().max()) < 1e-5
    assert float(same[:, :, anchor_mask(8, 8)[0, 0]].abs().max()) > 1e-3  # (anchors do see non-anchors)


def test_the_checkerboard_mask_is_a_constant_not_stored():
    model = build_model("gained-checkerboard", 1, 16, 16, levels=2)
    assert "context_prediction.mask" not in model.state_dict()
    fresh = build_model("gained-checkerboard", 1, 16, 16, levels=2)
    fresh.load_state_dict(model.state_dict())  # strict: every stored tensor, nothing missing
    assert torch.equal(fresh.context_prediction.mask, model.context_prediction.mask)
    assert float(fresh.context_prediction.mask.mean()) == pytest.approx(12 / 25)  # the checkerboard taps


@pytest.mark.parametrize("channels", [1, 3])
def test_an_untrained_context_model_is_exactly_its_hyperprior(tmp_path, channels):
    hyper, ctx = _pair(tmp_path, channels)
    img = _textured() if channels == 1 else np.stack([_textured(seed=s) for s in range(3)], -1)
    for setting in (1, 8.5, 16):
        a, b = hyper.encode(img, 8, setting), ctx.encode(img, 8, setting)
        assert len(unpack_stream(b)[1]) == 3  # anchors, non-anchors, hyper-latent
        assert np.array_equal(hyper.decode(a), ctx.decode(b))
        coded = [sum(map(len, unpack_stream(s)[1])) for s in (a, b)]
        assert 0 <= coded[1] - coded[0] <= 8  # the same symbols in one more rANS string: its flush


def test_a_trained_context_changes_the_bits_not_the_pixels_and_decodes_exactly(tmp_path):
    hyper, ctx = _pair(tmp_path, 1, trained_context=True)
    img = _textured()
    data = ctx.encode(img, 8, 12)
    with verifying() as checks:
        out = ctx.decode(data)
    assert checks and all(expected == got for _, expected, got in checks)  # the encoder's reconstruction
    assert np.array_equal(out, hyper.decode(hyper.encode(img, 8, 12)))  # frozen transforms: the same pixels
    assert len(data) != len(hyper.encode(img, 8, 12))
    # the integer path equals its int64-only reference (no float anywhere), table by table
    fast, ref = {}, {}
    ctx.decode_parsed(*unpack_stream(data), trace=fast)
    reference = LearnedModel(ctx.weights, ctx.meta)
    reference.exact_reference = True
    reference.decode_parsed(*unpack_stream(data), trace=ref)
    assert fast["indexes"].shape[0] == 2  # the anchor pass's and the non-anchor pass's
    assert torch.equal(fast["indexes"], ref["indexes"]) and torch.equal(fast["means"], ref["means"])


@pytest.mark.parametrize("bound", [None, 1.5])
def test_the_integer_context_path_tracks_the_float_model(tmp_path, bound):
    _, ctx = _pair(tmp_path, 1, trained_context=True, context_bound=bound)
    model = ctx.model
    assert model.context_bound == bound  # read back from the checkpoint's JSON
    torch.manual_seed(0)
    scales = torch.rand(1, 16, 8, 8) * 4 + 0.05
    means = torch.randn(1, 16, 8, 8)
    symbols = torch.where(anchor_mask(8, 8), torch.randint(-6, 7, (1, 16, 8, 8)), torch.zeros(1, 16, 8, 8).long())
    from core.models.exact import FRAC

    hyper_q = torch.round(torch.cat((scales, means), 1).double() * 2 ** FRAC).long()
    exact = ctx.context_fixed(hyper_q, symbols).double() / 2 ** FRAC
    with torch.no_grad():
        normalised = symbols.float() / scales.clamp(min=SCALE_FLOOR)
        if bound is not None:
            normalised = normalised.clamp(-bound, bound)
        d_scale, d_mean = model.corrections(normalised)
    float_scales, float_means = scales * (1 + d_scale), means + scales * d_mean
    non = ~anchor_mask(8, 8).expand(1, 16, 8, 8)
    got_s, got_m = exact.float().chunk(2, 1)
    assert float((got_s - float_scales)[non].abs().max()) < 2e-3
    assert float((got_m - float_means)[non].abs().max()) < 2e-3
    assert torch.equal(ctx.context_fixed(hyper_q, None), hyper_q)  # anchors: the hyperprior's own


def test_a_bounded_context_sees_at_most_its_bound_and_codes_exactly(tmp_path, monkeypatch):
    """``context_bound``: a residual of ±6 where σ is at its floor is u = ±55; the context sees ±bound."""
    _, bounded = _pair(tmp_path, 1, trained_context=True, context_bound=1.5)
    _, free = _pair(tmp_path, 1, trained_context=True)
    seen = []
    model = bounded.model
    original = type(model).corrections
    monkeypatch.setattr(type(model), "corrections", lambda self, u: (seen.append(u), original(self, u))[1])
    scales = torch.full((1, 16, 8, 8), 0.05)
    means = torch.zeros(1, 16, 8, 8)
    y = torch.randint(-6, 7, (1, 16, 8, 8)).float()
    with torch.no_grad():
        s_bounded, _ = model.context_parameters_of(y, scales, means)
        s_free, _ = free.model.context_parameters_of(y, scales, means)
    assert float(seen[0].abs().max()) == pytest.approx(1.5) and float(seen[1].abs().max()) > 50
    assert not torch.equal(s_bounded, s_free)  # the bound changes what the context predicts
    monkeypatch.undo()
    img = _textured()
    data = bounded.encode(img, 8, 12)
    with verifying() as checks:
        bounded.decode(data)
    assert checks and all(expected == got for _, expected, got in checks)
    with pytest.raises(ValueError, match="needs gained-checkerboard"):
        build_model("gained-mean-scale", 1, 16, 16, levels=4, context_bound=3.0)
    with pytest.raises(ValueError, match="positive"):
        build_model("gained-checkerboard", 1, 16, 16, levels=4, context_bound=0.0)


def test_entropy_only_training_lowers_the_bits_and_leaves_everything_else_alone(tmp_path):
    hyper, _ = _pair(tmp_path, 1)
    model = build_model("gained-checkerboard", 1, 16, 16, levels=4)
    train.load_matching(model, hyper.weights)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = train.freeze_all_but_context(model)
    assert trainable and all(n.startswith(("context_prediction.", "entropy_parameters.")) for n in trainable)
    opt, aux = train.make_optimizers(model, 3e-3)
    assert aux is None  # the entropy bottleneck's quantiles are frozen too
    plane = torch.from_numpy(_textured(256, 256).astype(np.float32) / 255)[None]
    sampler = train.CropSampler([plane], crop=128, seed=0)
    torch.manual_seed(0)
    losses = train.train_steps(model, sampler, opt, aux, 60, kind="msssim", lmbda=[1.0] * 4, batch=4,
                               progress=False, entropy_only=True)
    assert losses[0] == pytest.approx(1.0, abs=1e-6)  # the start is the hyperprior: ratio 1
    assert np.mean(losses[-10:]) < 0.995
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed and all(k.startswith(("context_prediction.", "entropy_parameters.")) for k in changed)


def test_entropy_only_needs_the_context_architecture_and_the_starts_ladder(tmp_path):
    common = ["--levels", "4", "--channels", "1", "--N", "16", "--M", "16", "--train", str(tmp_path),
              "--out", str(tmp_path / "out"), "--entropy-only", "--steps", "1"]
    with pytest.raises(SystemExit):
        train.parse_args(["--arch", "gained-mean-scale", "--lmbda-range", "1", "4", *common])
    hyper, _ = _pair(tmp_path, 1)
    hyper.weights.with_name(hyper.weights.stem + ".json").write_text(json.dumps(
        {**hyper.meta, "lmbda": [1.0, 2.0, 3.0, 4.0], "loss": "msssim"}))
    from core.io import as_bioimage, write_image

    write_image(tmp_path / "a.png", as_bioimage(_textured(160, 160)))
    with pytest.raises(SystemExit, match="--lmbda-range"):
        train.main(["--arch", "gained-checkerboard", "--lmbda-range", "1", "8", "--loss", "msssim",
                    "--init", str(hyper.weights), "--init-matching", "--crop", "128", *common])


def test_latent_refinement_works_through_the_context_model(tmp_path):
    _, ctx = _pair(tmp_path, 1, trained_context=True)
    ctx.meta.update(lmbda=[1.0, 4.0, 16.0, 64.0], loss="msssim")
    img = _textured()
    history: list = []
    import torch.nn.functional as F

    x = F.pad(torch.from_numpy(img.astype(np.float32) / 255)[None, None], (0, 32, 0, 64), mode="replicate")
    ctx.refine_latent(x, 12000, 4, 128, 160, history=history)
    assert len(history) == 5 and all(np.isfinite(h[2]) for h in history)
    data = ctx.encode(img, 8, 12, refine_steps=4)
    with verifying() as checks:
        out = ctx.decode(data)
    assert out.shape == img.shape and checks and checks[0][1] == checks[0][2]


def test_the_context_bound_enters_the_codec_version_so_rows_made_with_another_bound_are_recomputed(tmp_path):
    """``context_bound`` lives in the JSON beside the weights, not in them: the same weights file decoded with
    another bound gives other bits, so the bound is part of the rows' ``codec_version`` (only where set: a
    checkpoint without one keeps the version it had)."""
    from core.codecs.learned import LearnedCodec

    _, ctx = _pair(tmp_path, 1, trained_context=True)
    versions = {bound: LearnedCodec("ctx", [LearnedModel(ctx.weights, {**ctx.meta, "context_bound": bound})]).version
                for bound in (None, 1.5, 3.0)}
    assert len(set(versions.values())) == 3
    plain = LearnedCodec("ctx", [ctx]).version
    assert "context_bound" not in ctx.meta and versions[None] == plain
    assert versions[3.0] == LearnedCodec("ctx", [LearnedModel(ctx.weights, {**ctx.meta, "context_bound": 3})]).version
