"""bench.unet_tta: the D4 test-time average of a U-Net (measured and not used by the runner)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.unet_tta import d4_average, dihedral_views, from_view, to_view, with_tta  # noqa: E402
from core.segmentation import DownstreamEvaluator  # noqa: E402
from core.segmentation import unet as U  # noqa: E402


def tiny(seed=0):
    torch.manual_seed(seed)
    return U.build_unet(base=4, max_channels=8).eval()


def test_the_eight_views_are_distinct_and_map_back_exactly():
    x = np.arange(6 * 10, dtype=np.float32).reshape(1, 6, 10)
    seen = set()
    for k, t in dihedral_views():
        v = to_view(x, k, t)
        seen.add(v.tobytes() + bytes(v.shape))
        assert np.array_equal(from_view(v, k, t), x)
        assert torch.equal(from_view(to_view(torch.from_numpy(x), k, t), k, t), torch.from_numpy(x))
        assert np.array_equal(to_view(torch.from_numpy(x), k, t).numpy(), v)  # numpy and torch agree
    assert len(seen) == 8


def test_d4_average_is_the_mean_probability_of_the_views_and_orientation_free():
    torch.set_num_threads(1)
    model = tiny(2)
    x = torch.rand(1, 1, 64, 80, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        averaged = torch.sigmoid(d4_average(model)(x))
        by_hand = torch.stack([from_view(torch.sigmoid(model(to_view(x, k, t).contiguous())), k, t)
                               for k, t in dihedral_views()]).mean(0)
        assert torch.allclose(averaged, by_hand, atol=1e-6)
        turned = torch.rot90(x, 1, (-2, -1))
        d4_error = (torch.sigmoid(d4_average(model)(turned)) - torch.rot90(averaged, 1, (-2, -1))).abs().max()
        plain_error = (torch.sigmoid(model(turned)) - torch.rot90(torch.sigmoid(model(x)), 1, (-2, -1))).abs().max()
    assert d4_error < 1e-6 and plain_error > 100 * d4_error  # one view depends on orientation, the average not


def test_with_tta_wraps_only_the_unets_and_leaves_the_loaded_ones_alone():
    det = U.TrainedUNet(tiny(1), 0.5, 1, "m")
    evaluator = DownstreamEvaluator("isbi2012_em", None, det)
    assert with_tta(evaluator, "none") is evaluator
    wrapped = with_tta(evaluator, "d4")
    assert wrapped.membranes.model.inner is det.model and evaluator.membranes.model is det.model
    assert (wrapped.membranes.threshold, wrapped.membranes.min_size) == (0.5, 1)
    img = np.random.default_rng(0).integers(0, 256, (48, 64)).astype(np.uint8)
    assert wrapped.segment(img)["contours"].shape == img.shape
    assert (wrapped.membranes.phases, det.phases) == (1, 1)
    averaged = with_tta(evaluator, "phase-average")
    assert averaged.membranes.model is det.model and (averaged.membranes.phases, det.phases) == (2, 1)
    shipped_like = U.TrainedUNet(tiny(1), 0.5, 1, "m", {"phase_average": 2})
    assert with_tta(DownstreamEvaluator("isbi2012_em", None, shipped_like), "one-pass").membranes.phases == 1
    with pytest.raises(ValueError, match="tta"):
        with_tta(evaluator, "flips")
