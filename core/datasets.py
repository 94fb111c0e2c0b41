"""Where images come from: the embedded default set, folders of files, and (via
:mod:`core.stages`) the benchmark datasets under a data root.

Every image the runner touches is described by a :class:`~core.catalog.ImageRef` — a
small, picklable record (worker processes load the pixels themselves) — and loaded by
:func:`load_ref`, the one way benchmark and training code reads an image.

Embedded default data (works offline on a fresh install; nothing is fetched):

=================  =====================================  ===========  ====
id                 origin                                 depth        ch
=================  =====================================  ===========  ====
camera             scikit-image wheel (camera.png)        8            1
coins              scikit-image wheel (coins.png)         8            1
astronaut          scikit-image wheel (astronaut.png)     8            3
ihc                scikit-image wheel (ihc.png, IHC)      8            3
histo_he           StarDist wheel (data/images/histo.jpg) 8            3
synth_em16         generated (seeded): EM-like texture    16           1
synth_fluo12       generated (seeded): nuclei, 12-bit     12 (uint16)  1
synth_rgb16        generated (seeded): smooth RGB         16           3
=================  =====================================  ===========  ====

StarDist's ``img2d.tif`` is uint16 but holds only values 0–235, so it is not
used as a 16-bit example; no real 16-bit image ships in a wheel, hence the
generated ones.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.catalog import ImageRef
from core.io import SUPPORTED_SUFFIXES, BioImage, as_bioimage, read_image

EMBEDDED_PREFIX = "embedded:"


def load_ref(ref: ImageRef) -> BioImage:
    """Read the pixels of ``ref`` (applying its page, declared bit depth and crop)."""
    if ref.source.startswith(EMBEDDED_PREFIX):
        name = ref.source[len(EMBEDDED_PREFIX):]
        pixels, depth = _EMBEDDED[name]()
        image = as_bioimage(pixels, depth, name=name)
    else:
        image = read_image(ref.source, bit_depth=ref.bit_depth, page=ref.page)
    if ref.crop is not None:
        y0, x0, y1, x1 = ref.crop
        image = BioImage(np.ascontiguousarray(image.pixels[y0:y1, x0:x1]), image.bit_depth, image.name)
    return image


# --------------------------------------------------------------------------- embedded


def _skimage(name: str):
    def load():
        from skimage import data

        return getattr(data, name)(), 8

    return load


def _stardist_histo():
    import stardist
    from PIL import Image

    with Image.open(Path(stardist.__file__).parent / "data" / "images" / "histo.jpg") as im:
        return np.asarray(im.convert("RGB")), 8


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal(shape), sigma)
    return (field - field.min()) / (np.ptp(field) + 1e-12)


def _synth_em16():
    """512×512 16-bit EM-like section: smooth cell interiors, dark membranes, shot noise."""
    from skimage.segmentation import find_boundaries, watershed

    rng = np.random.default_rng(20261125)
    texture = _smooth_noise(rng, (512, 512), 3.0)
    seeds = np.zeros((512, 512), np.int32)
    points = rng.integers(0, 512, size=(60, 2))
    seeds[points[:, 0], points[:, 1]] = np.arange(1, 61)
    cells = watershed(_smooth_noise(rng, (512, 512), 12.0), seeds)
    membranes = find_boundaries(cells, mode="thick")
    signal = 30000 + 12000 * texture - 22000 * membranes
    noisy = rng.normal(signal, 900.0)
    return np.clip(noisy, 0, 65535).astype(np.uint16), 16


def _synth_fluo12():
    """384×384 12-bit (in uint16) fluorescence-like image: Gaussian nuclei on a dim background."""
    rng = np.random.default_rng(12)
    yy, xx = np.mgrid[0:384, 0:384]
    image = np.full((384, 384), 180.0)
    for cy, cx, r, amp in zip(rng.uniform(0, 384, 40), rng.uniform(0, 384, 40),
                              rng.uniform(6, 14, 40), rng.uniform(800, 3500, 40)):
        image += amp * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
    noisy = rng.poisson(np.clip(image, 0, None)).astype(np.float64)
    return np.clip(noisy, 0, 4095).astype(np.uint16), 12


def _synth_rgb16():
    """256×320 16-bit RGB: smooth colour fields with edges and mild noise."""
    rng = np.random.default_rng(16)
    channels = [_smooth_noise(rng, (256, 320), s) for s in (6.0, 10.0, 16.0)]
    rgb = np.stack(channels, axis=-1) * 60000 + 2000
    rgb[96:160, 120:200] *= 0.5
    rgb += rng.normal(0, 300, rgb.shape)
    return np.clip(rgb, 0, 65535).astype(np.uint16), 16


_EMBEDDED = {
    "camera": _skimage("camera"),
    "coins": _skimage("coins"),
    "astronaut": _skimage("astronaut"),
    "ihc": _skimage("immunohistochemistry"),
    "histo_he": _stardist_histo,
    "synth_em16": _synth_em16,
    "synth_fluo12": _synth_fluo12,
    "synth_rgb16": _synth_rgb16,
}


def embedded_refs() -> list[ImageRef]:
    """The embedded default set (stage 0, dataset ``embedded``)."""
    return [ImageRef(0, "embedded", name, EMBEDDED_PREFIX + name) for name in _EMBEDDED]


def folder_refs(folder: str | Path, stage: int = 0, dataset: str | None = None,
                bit_depth: int | None = None) -> list[ImageRef]:
    """Every supported image file directly in ``folder`` (sorted by name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{folder} holds no images ({', '.join(SUPPORTED_SUFFIXES)})")
    name = dataset or folder.name
    return [ImageRef(stage, name, p.stem, str(p), bit_depth=bit_depth) for p in files]


if __name__ == "__main__":  # python -m core.datasets fetch NAME | list | verify NAME  (see core/fetch.py)
    from core.fetch import main as _fetch_main

    raise SystemExit(_fetch_main())
