"""bench/grain_probe.py: Dice of noisy reconstructions vs the original's segmentation, with a texture-keyed segmenter."""
import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from bench.grain_probe import probe
from core.catalog import ImageRef
from core.io import as_bioimage, write_image


class TextureSegmenter:
    """Foreground = where the local standard deviation (9 × 9) exceeds 6 grey levels: keys on texture only."""

    def labels(self, pixels):
        a = pixels.astype(float)
        local = np.sqrt(np.maximum(uniform_filter(a * a, 9) - uniform_filter(a, 9) ** 2, 0))
        return (local > 6).astype(np.int32)


@pytest.fixture()
def textured(tmp_path):
    rng = np.random.default_rng(3)
    pixels = np.full((96, 128), 120.0)
    pixels[:, :64] += rng.normal(0, 12, (96, 64))  # textured left half, flat right half
    write_image(tmp_path / "t.png", as_bioimage(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)))
    return ImageRef(stage=2, dataset="t", image_id="t", source=str(tmp_path / "t.png"), split="test")


def test_probe_lossless_is_exact_and_noise_restores_a_smoothed_texture(textured):
    results = probe([textured], [("png", None), ("jpeg", 20)], [0.0, 5.0, 10.0], TextureSegmenter(), seed=1)
    dices = {key: row["dice"] for key, row in results.items()}
    assert set(dices) == {("original", None, 5.0), ("original", None, 10.0),  # no σ-0 control: 1 by definition
                          ("png", None, 0.0), ("png", None, 5.0), ("png", None, 10.0),
                          ("jpeg", 20, 0.0), ("jpeg", 20, 5.0), ("jpeg", 20, 10.0)}
    assert dices[("png", None, 0.0)] == [1.0]  # lossless: the runner's seg_dice at σ 0
    assert dices[("original", None, 5.0)][0] > 0.95  # σ 5 leaves the flat half flat (local std < 6)
    assert dices[("original", None, 10.0)][0] < 0.7  # σ 10 floods it: Dice → 2·½ / (½ + 1)
    smooth, grain = dices[("jpeg", 20, 0.0)][0], dices[("jpeg", 20, 5.0)][0]
    assert smooth < 0.8 and grain > 0.95  # JPEG q20 flattens part of the texture; σ 5 brings it back
    assert results[("png", None, 0.0)]["psnr"] == [float("inf")]  # lossless
    jpeg0, jpeg5 = results[("jpeg", 20, 0.0)], results[("jpeg", 20, 5.0)]
    assert jpeg5["psnr"][0] < jpeg0["psnr"][0]  # the noise costs PSNR
    assert jpeg0["factor"] == jpeg5["factor"] and jpeg0["factor"][0] > 1  # same stream, raw / coded bytes
    assert np.isnan(results[("original", None, 5.0)]["factor"][0])


def test_probe_refuses_other_than_8_bit_gray(tmp_path):
    write_image(tmp_path / "c.png", as_bioimage(np.zeros((16, 16, 3), np.uint8)))
    ref = ImageRef(stage=2, dataset="t", image_id="c", source=str(tmp_path / "c.png"), split="test")
    with pytest.raises(ValueError, match="8-bit gray"):
        probe([ref], [("png", None)], [0.0], TextureSegmenter())


class TextureEvaluator:
    """The runner's evaluator interface around :class:`TextureSegmenter` (no ground truth)."""

    def prepare(self, image, ref):
        return {"original": TextureSegmenter().labels(image.pixels) > 0}

    def compare(self, state, pixels):
        from core.segmentation.metrics import dice

        return {"seg_dice": dice(state["original"], TextureSegmenter().labels(pixels) > 0),
                "seg_dice_gt_reconstruction": None, "seg_dice_gt_original": None}


@pytest.fixture()
def grainy(tmp_path):
    """Texture everywhere (σ 9 noise on a slow ramp): JPEG q20 flattens parts of it."""
    rng = np.random.default_rng(4)
    pixels = np.linspace(90, 150, 128)[None, :] + rng.normal(0, 9, (96, 128))
    write_image(tmp_path / "g.png", as_bioimage(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)))
    return ImageRef(stage=2, dataset="t", image_id="g", source=str(tmp_path / "g.png"), split="test")


def test_grain_scale_measures_the_real_grain_codec(grainy):
    """One σ per image: it restores texture that covers the image (on the half-flat image above it would
    flood the flat half — the limit of a single grain strength)."""
    from bench.grain_scale import measure

    results = measure([grainy], [("jpeg", 20)], [0.0, 1.0], lambda dataset: TextureEvaluator(), seeds=3)
    plain, grain = results[("t", "jpeg", 20, 0.0, 0)], results[("t", "jpeg", 20, 1.0, 0)]
    assert plain["dice"][0] < 0.8 and grain["dice"][0] > 0.95  # the residual's RMS restores the texture
    assert plain["psnr"][0] - grain["psnr"][0] == pytest.approx(3.0, abs=0.4)  # twice the squared error
    assert plain["factor"] == grain["factor"]  # the same stream + the same 11-byte header
    from core.codecs import get_codec
    from core.codecs.grain import GrainCodec
    from core.datasets import load_ref
    from core.metrics import psnr

    pixels = load_ref(grainy).pixels
    codec = GrainCodec(get_codec("jpeg"), 1.0)
    assert grain["psnr"][0] == psnr(pixels, codec.decode(codec.encode(pixels, 20)), 8)  # draw 0 = what decode gives
    assert np.isnan(plain["gt_delta"][0])
    redrawn = [results[("t", "jpeg", 20, 1.0, k)] for k in (1, 2)]
    assert all(r["factor"] == grain["factor"] and r["dice"][0] > 0.95 for r in redrawn)  # another draw, same verdict
    assert len({grain["psnr"][0], *(r["psnr"][0] for r in redrawn)}) == 3  # ... of different noise
    assert results[("t", "jpeg", 20, 0.0, 1)]["psnr"] == plain["psnr"]  # scale 0: nothing to redraw
