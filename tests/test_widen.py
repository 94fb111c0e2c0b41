"""core.models.widen: a wider-transform model started from a narrow checkpoint computes the same function, and
its new channels can learn (their outgoing weights get a gradient)."""
import json

import pytest
import torch

from core import train
from core.models import build_from_meta, build_model
from core.models.widen import load_widened, widen_state


def _trained_like(model, seed):
    """Perturb every parameter so that no slice is at its initial value (a widened copy must carry real values)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_widened_transforms_compute_the_narrow_function_and_their_new_channels_learn(tmp_path):
    narrow = _trained_like(build_model("gained-mean-scale", 1, 16, 24, levels=4), 0).eval()
    path = tmp_path / "narrow.pt"
    torch.save(narrow.state_dict(), path)
    torch.manual_seed(1)
    wide = build_model("gained-mean-scale", 1, 16, 24, levels=4, transform_N=40)
    assert wide.g_a[0].weight.shape == (40, 1, 5, 5) and wide.h_a[0].weight.shape == (16, 24, 3, 3)
    grown = load_widened(wide, path)["widened"]
    assert "g_a.0.weight" in grown and "g_s.6.weight" in grown and not any(k.startswith("h_") for k in grown)
    wide.eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        y_n, y_w = narrow.g_a(x), wide.g_a(x)
        assert torch.allclose(y_w, y_n, atol=1e-5), float((y_w - y_n).abs().max())
        for rate in (0.0, 1.5, 3.0):
            out_n, out_w = narrow(x, rate=rate)["x_hat"], wide(x, rate=rate)["x_hat"]
            assert torch.allclose(out_w, out_n, atol=1e-5), float((out_w - out_n).abs().max())
    # the new channels are not dead: the zero weights that read them get a gradient
    wide.train()
    loss = ((wide(x, rate=3.0)["x_hat"] - x) ** 2).mean()
    loss.backward()
    assert float(wide.g_s[6].weight.grad[16:].abs().sum()) > 0  # ConvTranspose2d [in, out, k, k]: new inputs
    assert float(wide.g_a[2].weight.grad[:16, 16:].abs().sum()) > 0  # Conv2d [out, in, k, k]: old outputs, new inputs
    assert torch.all(wide.g_a[2].weight[:16, 16:] == 0) and torch.all(wide.g_s[6].weight[16:] == 0)


def test_widening_refuses_a_checkpoint_that_does_not_embed(tmp_path):
    wide = build_model("gained-mean-scale", 1, 16, 24, levels=4, transform_N=40)
    with pytest.raises(ValueError, match="cannot widen"):  # a wider latent (48 > 24) does not embed
        widen_state(wide, {**wide.state_dict(), "g_a.6.weight": torch.zeros(48, 16, 5, 5)})
    with pytest.raises(ValueError, match="lacks"):
        widen_state(wide, {"g_a.0.weight": torch.zeros(16, 1, 5, 5)})
    for arch in ("mean-scale", "checkerboard"):
        with pytest.raises(ValueError, match="gained-mean-scale"):
            build_model(arch, 1, 16, 24 if arch != "checkerboard" else None, transform_N=40)


def test_core_train_widens_records_the_width_and_the_codec_rebuilds_it(tmp_path):
    """core.train --init-widen --transform-N: the checkpoint's JSON says transform_N, and build_from_meta (what the
    codec and the repacker use) rebuilds that model so the weights load."""
    narrow = build_model("gained-mean-scale", 1, 16, 24, levels=4)
    stem = tmp_path / "narrow"
    train.save_checkpoint(narrow, stem)
    (tmp_path / "narrow.json").write_text(json.dumps({"arch": "gained-mean-scale", "channels": 1, "N": 16, "M": 24,
                                                      "levels": 4, "steps": {"total": 7}}))
    img = tmp_path / "img.png"
    import numpy as np
    from PIL import Image
    yy, xx = np.mgrid[0:96, 0:96]
    Image.fromarray(((np.sin(xx / 5) * np.cos(yy / 7) + 1) * 120).astype(np.uint8)).save(img)
    meta = train.main(["--arch", "gained-mean-scale", "--levels", "4", "--channels", "1", "--N", "16", "--M", "24",
                       "--transform-N", "40", "--loss", "mse", "--lmbda-range", "0.001", "0.01", "--train", str(img),
                       "--steps", "2", "--batch", "2", "--crop", "64", "--init", str(stem) + ".pt", "--init-widen",
                       "--skip-validation", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "wide")])
    assert meta["transform_N"] == 40 and meta["N"] == 16 and "widened" in meta["base"]["note"]
    assert meta["steps"] == {"base": 7, "this_run": 2, "total": 9}
    model = build_from_meta(meta)
    model.load_state_dict(train.read_state_dict(tmp_path / "wide.pt"))
    assert model.g_s[0].weight.shape == (24, 40, 5, 5)
