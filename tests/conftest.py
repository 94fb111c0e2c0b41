"""Generic fixtures shared by test files: a small results database and small images."""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest

#: Rows added to the test database by hand: stage 2 downstream metrics of one image (known values).
DOWNSTREAM_ROWS = [
    # setting, bytes, seg_dice, seg_iou, contour_bf1
    ("10", 8192, 0.80, 0.67, 0.55),
    ("50", 16384, 0.93, 0.87, 0.81),
    ("90", 32768, 0.98, 0.96, 0.95),
]


def _downstream_row(setting: str, nbytes: int, dice: float, iou: float, bf1: float) -> dict:
    h = w = 512
    raw = h * w
    return {"stage": 2, "dataset": "isbi2012_em", "image_id": "train-volume-00", "codec": "jpeg",
            "setting": setting, "colour_mode": "joint", "run_id": "fixture", "width": w, "height": h,
            "channels": 1, "bit_depth": 8, "setting_value": float(setting), "bytes": nbytes, "raw_bytes": raw,
            "ratio": nbytes / raw, "factor": raw / nbytes, "bpp": 8 * nbytes / raw, "psnr": 30.0 + int(setting) / 10,
            "ssim": 0.9, "ms_ssim": 0.95, "seg_dice": dice, "seg_iou": iou, "contour_bf1": bf1,
            "created_at": datetime(2026, 11, 25)}


@pytest.fixture(scope="session")
def results_db(tmp_path_factory):
    """A DuckDB results file: the runner on 2 embedded images (camera, coins) × jpeg, jpeg2000 and png at
    their default settings (2 × (6 + 6 + 1) = 26 rows),
    plus 3 hand-made stage-2 rows with downstream metrics and 1 failed row."""
    from core import runner, store

    path = tmp_path_factory.mktemp("db") / "results.duckdb"
    assert runner.main(["--db", str(path), "--codecs", "jpeg,jpeg2000,png", "--limit", "2", "--quiet"]) == 0
    con = store.open_writer(path)
    try:
        rows = [_downstream_row(*r) for r in DOWNSTREAM_ROWS]
        rows.append({"stage": 2, "dataset": "isbi2012_em", "image_id": "train-volume-01", "codec": "jpeg",
                     "setting": "10", "colour_mode": "joint", "run_id": "fixture",
                     "error": "load: ImageReadError: fixture failure", "created_at": datetime(2026, 11, 25)})
        store.upsert_results(con, rows)
    finally:
        con.close()
    return path


@pytest.fixture(scope="session")
def gray_png_bytes() -> bytes:
    """A 192×192 8-bit grayscale PNG (a crop of scikit-image's camera) as file bytes."""
    import imagecodecs
    from skimage import data

    return bytes(imagecodecs.png_encode(np.ascontiguousarray(data.camera()[100:292, 150:342])))


@pytest.fixture(scope="session")
def rgb16_pixels() -> np.ndarray:
    """A 200×180 16-bit RGB test array (seeded smooth gradient + noise)."""
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:200, 0:180]
    base = np.stack([yy * 300.0, xx * 300.0, (yy + xx) * 150.0], axis=-1) + 1000
    return np.clip(base + rng.normal(0, 200, base.shape), 0, 65535).astype(np.uint16)
