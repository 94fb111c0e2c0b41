"""Training / evaluation data of the project's segmenters, read by path from the shared data root.

* MoNuSeg H&E nuclei: ``monuseg/<split>/images/*.tif`` (RGB uint8) with
  ``monuseg/<split>/instance_masks/<stem>.png`` (uint16 instance labels).
* EPFL hippocampus FIB-SEM mitochondria: ``epfl_hippocampus_fibsem/train/slices/*.png``
  with ``.../mitochondrion/<stem>.png``; masks carry anti-aliased edges, so they are
  thresholded at 128 and connected components become instances.  The last
  :data:`EPFL_TEST_SLICES` slices (sorted by name) are held out as the test split
  (the learned-codec training holds out the same ones).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

EPFL = "epfl_hippocampus_fibsem"
EPFL_TEST_SLICES = 4
DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def read_array(path: str | Path) -> np.ndarray:
    """Pixels of an image or label file as stored (uint8/uint16; RGBA/LA reduced to RGB/L)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "P", "CMYK"):
                im = im.convert("RGB")
            elif im.mode == "LA":
                im = im.convert("L")
            arr = np.asarray(im)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def mask_to_instances(mask: np.ndarray) -> np.ndarray:
    """Binary (0/255, anti-aliased) mask → int32 labels of 8-connected components (threshold 128)."""
    from skimage.measure import label

    return label(np.asarray(mask) >= 128, connectivity=2).astype(np.int32)


def monuseg_pairs(split: str = "train", data_root: str | Path | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(stem, RGB uint8 image, int32 instance labels)] of a MoNuSeg split ('train' or 'test')."""
    root = Path(data_root or DEFAULT_DATA_ROOT) / "monuseg" / split
    images = sorted((root / "images").glob("*.tif"))
    if not images:
        raise FileNotFoundError(f"no MoNuSeg images under {root / 'images'}")
    out = []
    for p in images:
        labels = read_array(root / "instance_masks" / f"{p.stem}.png").astype(np.int32)
        out.append((p.stem, read_array(p), labels))
    return out


def epfl_stems(split: str, data_root: str | Path | None = None) -> list[str]:
    """Slice stems of the EPFL 'train' (all but the last 4), 'test' (last 4) or 'all' split."""
    folder = Path(data_root or DEFAULT_DATA_ROOT) / EPFL / "train" / "slices"
    stems = sorted(p.stem for p in folder.glob("*.png"))
    if not stems:
        raise FileNotFoundError(f"no EPFL slices under {folder}")
    if split == "train":
        return stems[:-EPFL_TEST_SLICES]
    if split == "test":
        return stems[-EPFL_TEST_SLICES:]
    if split == "all":
        return stems
    raise ValueError(f"unknown split {split!r} (train, test, all)")


def epfl_pairs(split: str = "train", data_root: str | Path | None = None,
               target: str = "mitochondrion") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(stem, uint8 slice, int32 instance labels of ``target`` mask)] of an EPFL split."""
    root = Path(data_root or DEFAULT_DATA_ROOT) / EPFL / "train"
    return [(s, read_array(root / "slices" / f"{s}.png"), mask_to_instances(read_array(root / target / f"{s}.png")))
            for s in epfl_stems(split, data_root)]


def normalize(image: np.ndarray, low: float = 1.0, high: float = 99.8) -> np.ndarray:
    """float32 image scaled so its ``low``/``high`` percentiles (all channels jointly) map to 0/1."""
    from csbdeep.utils import normalize as csb_normalize

    return csb_normalize(np.asarray(image), low, high, axis=None).astype(np.float32)
