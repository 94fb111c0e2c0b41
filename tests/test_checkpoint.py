"""Checkpoint storage (core.models.checkpoint): 8-bit convolution weights for chosen modules, expanded on load to
exactly the network the writer kept in memory, and a repacked checkpoint still codes and decodes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.codecs.learned import LearnedModel
from core.models import build_model
from core.models.checkpoint import (INT8, INT8_SCALE, dequantize, int8_modules, int8_slices, pack_int8,
                                    read_state_dict, repack, unpack_int8)
from core.train import save_checkpoint


def test_int8_slices_scale_per_first_dim_and_bound_the_error():
    w = torch.tensor([[[[0.5, -0.25]], [[0.125, 1e-3]]],
                      [[[0.0, 0.0]], [[0.0, 0.0]]],
                      [[[-2.0, 1.0]], [[0.3, -0.7]]]])  # (3, 2, 1, 2): slice 1 all zero
    q, scale = int8_slices(w)
    assert q.dtype == torch.int8 and scale.shape == (3, 1, 1, 1)
    assert scale.flatten().tolist() == pytest.approx([0.5 / 127, 1.0, 2.0 / 127])
    assert q[0, 0, 0, 0] == 127 and q[2, 0, 0, 0] == -127 and not q[1].any()
    back = dequantize(q, scale)
    assert back.dtype == torch.float32
    assert ((back - w).abs() <= scale / 2 + 1e-9).all()  # at most half a step per weight
    assert back[0, 0, 0, 1] == pytest.approx(-0.25, abs=0.5 / 254)


def test_pack_stores_only_the_named_modules_convolutions_and_unpack_restores_the_keys():
    torch.manual_seed(1)
    state = {"h_s.0.weight": torch.randn(8, 4, 3, 3).half(), "h_s.0.bias": torch.randn(8).half(),
             "g_s.0.weight": torch.randn(4, 8, 3, 3).half(), "h_sx.0.weight": torch.randn(2, 2, 1, 1)}
    packed = pack_int8(state, ("h_s",))
    assert set(packed) == {"h_s.0.weight" + INT8, "h_s.0.weight" + INT8_SCALE, "h_s.0.bias", "g_s.0.weight",
                           "h_sx.0.weight"}  # a bias and a module whose name only starts alike stay as they are
    assert int8_modules(packed) == ["h_s"]
    restored = unpack_int8(packed)
    assert set(restored) == set(state)
    assert torch.equal(restored["g_s.0.weight"], state["g_s.0.weight"])
    err = (restored["h_s.0.weight"] - state["h_s.0.weight"].float()).abs().max()
    assert 0 < err <= state["h_s.0.weight"].float().abs().max() / 254 + 1e-6
    with pytest.raises(ValueError, match="no convolution weight"):
        pack_int8(state, ("h_a",))
    with pytest.raises(ValueError, match="int8_scale"):
        unpack_int8({"h_s.0.weight" + INT8: packed["h_s.0.weight" + INT8]})


def test_save_checkpoint_int8_reloads_exactly_what_the_writer_kept(tmp_path):
    torch.manual_seed(0)
    model = build_model("gained-mean-scale", 1, 16, 32, levels=4)
    half = save_checkpoint(model, tmp_path / "half")
    small = save_checkpoint(model, tmp_path / "small", int8=("h_s",))
    raw = torch.load(small, weights_only=True)
    assert int8_modules(raw) == ["h_s"] and "h_s.0.weight" not in raw
    assert raw["h_s.0.weight" + INT8].dtype == torch.int8 and raw["g_s.0.weight"].dtype == torch.float16
    assert small.stat().st_size < half.stat().st_size
    fresh = build_model("gained-mean-scale", 1, 16, 32, levels=4)
    fresh.load_state_dict(read_state_dict(small))
    for (name, p), (_, q) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(p, q), name  # the writer's model was set in place to the 8-bit values
    # the entropy tables do not depend on h_s: the same as the float16 file's
    assert torch.equal(raw["gaussian_conditional._quantized_cdf"],
                       torch.load(half, weights_only=True)["gaussian_conditional._quantized_cdf"])


def test_repacked_checkpoint_codes_and_decodes_and_says_how_it_is_stored(tmp_path):
    torch.manual_seed(2)
    model = build_model("gained-mean-scale", 1, 16, 32, levels=4)
    save_checkpoint(model, tmp_path / "src")
    meta = {"model_id": "src", "codec": "tiny", "quality": None, "arch": "gained-mean-scale", "channels": 1,
            "N": 16, "M": 32, "levels": 4, "weights_sha256": "old", "validation": {"bpp": 1.0}}
    (tmp_path / "src.json").write_text(json.dumps(meta))
    new = repack(tmp_path / "src.pt", tmp_path / "out", ("h_s",))
    on_disk = json.loads((tmp_path / "out.json").read_text())
    assert on_disk == new and new["repacked_from"]["sha256"] == "old" and "int8" in new["weights_storage"]
    assert new["validation"]["stale"] and new["weights_sha256"] != "old"
    yy, xx = np.mgrid[0:48, 0:40]
    pixels = np.rint(127 + 100 * np.sin(xx / 5) * np.cos(yy / 7)).astype(np.uint8)
    recs = {}
    for stem in ("src", "out"):
        lm = LearnedModel(tmp_path / f"{stem}.pt", {**meta, "model_id": stem})
        data = lm.encode(pixels, 8, setting=8)
        recs[stem] = lm.decode(data)  # raises if the decoder's pixels differ from the encoder's (stream hash)
        assert recs[stem].shape == pixels.shape and recs[stem].dtype == np.uint8
    # the 8-bit hyper-synthesis only moves the latents' means by a little: the images agree within a level or two
    assert np.abs(recs["src"].astype(int) - recs["out"]).mean() <= 2


def test_train_cli_int8_writes_8_bit_hyper_synthesis_and_says_so(tmp_path):
    from core import train
    from core.io import as_bioimage, write_image

    yy, xx = np.mgrid[0:64, 0:64]
    write_image(tmp_path / "im.png", as_bioimage(np.rint(127 + 90 * np.sin(xx / 6 + yy / 9)).astype(np.uint8)))
    meta = train.main(["--arch", "gained-mean-scale", "--levels", "2", "--lmbda-range", "1", "4", "--channels", "1",
                       "--N", "8", "--M", "8", "--loss", "mse", "--train", str(tmp_path / "im.png"), "--steps", "1",
                       "--batch", "1", "--crop", "64", "--int8", "h_s", "--skip-validation", "--no-progress",
                       "--out", str(tmp_path / "m")])
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert int8_modules(raw) == ["h_s"] and "int8" in meta["weights_storage"]
    assert json.loads((tmp_path / "m.json").read_text())["weights_storage"] == meta["weights_storage"]
