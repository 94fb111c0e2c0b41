"""Coding images now: uploads (live comparison) and stored rows (side by side).

Every codec is built by :func:`core.pipeline.build_encoder` (colour mode → tiling → codec) and every
measurement made by :func:`core.evaluate.evaluate`, exactly as the runner does; uploads are read by
:func:`core.io.read_image_bytes` within stated limits.
"""
from __future__ import annotations

import hashlib
import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from core.io import SUPPORTED_SUFFIXES
from core.metrics import ms_ssim_db
from core.pipeline import build_encoder, effective_colour_mode
from core.rate_search import SearchResult, search_setting  # noqa: F401  (the one target-bpp rule)

#: Live-comparison limits (stated in the page): file size in bytes and image side in pixels.
MAX_UPLOAD_BYTES = 50 * 1024 * 1024
MAX_UPLOAD_SIDE = 4096
#: File types the uploader takes: core.io's one suffix list.
UPLOAD_TYPES = tuple(s.lstrip(".") for s in SUPPORTED_SUFFIXES)


class UploadError(ValueError):
    """An uploaded file is unsupported or over the stated limits."""


def read_upload(data: bytes, name: str, bit_depth: int | None = None, page: int | None = None):
    """Read an uploaded file into a BioImage, enforcing :data:`MAX_UPLOAD_BYTES` and :data:`MAX_UPLOAD_SIDE`
    (the side from the file's header, before decoding); messages name the user's file ``name``."""
    from core.io import ImageReadError, read_image_bytes

    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix not in UPLOAD_TYPES:
        raise UploadError(f"{name}: unsupported file type '.{suffix}' (use {', '.join(UPLOAD_TYPES)})")
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadError(f"{name}: {len(data) / 2**20:.1f} MB exceeds the live-comparison limit of "
                          f"{MAX_UPLOAD_BYTES // 2**20} MB")
    try:
        image = read_image_bytes(data, name, bit_depth=bit_depth, page=page, max_side=MAX_UPLOAD_SIDE)
    except ImageReadError as exc:
        raise UploadError(user_message(str(exc), name)) from exc
    if max(image.height, image.width) > MAX_UPLOAD_SIDE:
        raise UploadError(f"{name}: {image.width}×{image.height} exceeds the live-comparison limit of "
                          f"{MAX_UPLOAD_SIDE}×{MAX_UPLOAD_SIDE} pixels")
    return image


def user_message(message: str, name: str) -> str:
    """``message`` with the server's temporary copy of an upload (``…/upload.png``, made by
    :func:`core.io.read_image_bytes`) replaced by the user's file ``name``."""
    suffix = re.escape(Path(name).suffix.lower())
    return re.sub(r"(?:[A-Za-z]:)?[/\\][^\s:'\"]*[/\\]upload" + suffix, lambda _: name, message)


def upload_key(data: bytes) -> str:
    """The cache key of an upload: SHA-256 of its bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def codecs_for_image(bit_depth: int, channels: int, colour_mode: str = "joint",
                     names: Iterable[str] | None = None) -> list[str]:
    """Registered codecs that can code an image of this depth and channel count in ``colour_mode``."""
    from core.codecs import available_codecs, get_codec

    coded_channels = 1 if effective_colour_mode(colour_mode, channels) == "per_channel" else channels
    out = []
    for name in names if names is not None else available_codecs():
        try:
            if get_codec(name).supports(bit_depth, coded_channels):
                out.append(name)
        except Exception:  # a codec whose models cannot load is not offered
            continue
    return out


#: Codecs preselected for a comparison, in order: the learned codec, the anchor (JPEG 2000) and AVIF.
DEFAULT_COMPARISON = ("learned-msssim", "jpeg2000", "avif")


def default_codecs(names: Iterable[str], preferred: Iterable[str] = DEFAULT_COMPARISON) -> list[str]:
    """The preselected codecs among ``names``: :data:`DEFAULT_COMPARISON` where present (when the preferred
    learned codec is missing, the first learned-family name, ``learned-*``, takes its place)."""
    names = list(names)
    out = [n for n in preferred if n in names]
    if not any(n.startswith("learned") for n in out):
        learned = [n for n in names if n.startswith("learned")]
        out = learned[:1] + out
    return out or names[:1]


# --------------------------------------------------------------------------- live compression


@dataclass
class LiveResult:
    """One codec's live result: the evaluation (metrics, encoded bytes, reconstruction) and a note."""

    evaluation: object  # core.evaluate.Evaluation
    note: str = ""
    target_bpp: float | None = None  # the target of a bpp search (None: a setting was given)
    trials: int = 1  # encode → decode → metrics runs it took

    @property
    def nbytes(self) -> int:
        """Memory held (reconstruction + encoded bytes), for the result cache's budget."""
        return int(self.evaluation.reconstruction.nbytes) + len(self.evaluation.encoded)


def live_encoder(image, codec, colour_mode: str = "joint"):
    """The codec that codes ``image`` (:func:`core.pipeline.build_encoder` with the image's size, so a large
    upload is coded tile by tile by :class:`core.tiling.TiledCodec`, as the runner codes large images)."""
    return build_encoder(codec, colour_mode, image.channels, image.height, image.width)


def tiling_note(coder) -> str:
    """How ``coder`` (from :func:`live_encoder`) codes the image: ``""`` when whole, else the tiling."""
    from core.tiling import TiledCodec

    while coder is not None:
        if isinstance(coder, TiledCodec):
            return (f"coded tile by tile ({coder.tile} px tiles" + (f", {coder.overlap} px overlap" if coder.overlap
                                                                     else "") + "; every tile's bytes counted)")
        coder = getattr(coder, "inner", None)
    return ""


def live_compress(image, codec, colour_mode: str = "joint", setting=None, target_bpp: float | None = None,
                  on_trial: Callable | None = None) -> LiveResult:
    """Compress an uploaded image with ``codec`` in ``colour_mode`` at ``setting``, or at the setting whose
    rate is closest to ``target_bpp`` (bits per pixel; :func:`search_setting`) when that is given.

    The codec is :func:`live_encoder`'s for this image (a grayscale image's per-channel coding is its
    joint coding; large images are tiled as in the runner).  ``on_trial(setting, evaluation)`` is called
    after every encode → decode → metrics (the target-bpp search makes several).
    """
    from core.evaluate import evaluate

    runner = live_encoder(image, codec, colour_mode)
    tiled = tiling_note(runner)

    def trial(img, coder, s):
        result = evaluate(img, coder, s)
        if on_trial is not None:
            on_trial(s, result)
        return result

    if target_bpp is None:
        return LiveResult(trial(image, runner, None if runner.lossless else setting), tiled,
                          trials=1)
    found = search_setting(image, runner, target_bpp, evaluate_fn=trial)
    note = f"searched {len(found.trials)} settings: " + ", ".join(f"{s} → {b:.3f} bpp" for s, b in found.trials)
    note += f". {found.note}" if found.note else ""
    return LiveResult(found.evaluation, "; ".join(n for n in (note, tiled) if n), target_bpp=target_bpp,
                      trials=len(found.trials))


def reencode_stored(ref, codec, colour_mode: str, setting_text: str) -> dict:
    """Load a stored row's original (its :class:`~core.catalog.ImageRef`) and code it again as the runner
    did: ``{"ref", "original", "bit_depth", "reconstruction", "metrics"}``."""
    from core.datasets import load_ref
    from core.evaluate import evaluate
    from core.setting_text import parse_setting

    image = load_ref(ref)
    runner = build_encoder(codec, colour_mode, image.channels, image.height, image.width)
    result = evaluate(image, runner, parse_setting(setting_text))
    return {"ref": ref, "original": image.pixels, "bit_depth": image.bit_depth,
            "reconstruction": result.reconstruction, "metrics": result.metrics}


def segment_pair(ref, original: np.ndarray, bit_depth: int, reconstruction: np.ndarray) -> dict:
    """Downstream comparison of an original and its reconstruction (``{"metrics", "original",
    "reconstruction"}``; the last two are label images / contour masks when the evaluator can segment),
    or ``{"notice"}`` when the dataset has no downstream task."""
    from core.io import BioImage
    from core.segmentation import downstream_for

    evaluator = downstream_for(ref)
    if evaluator is None:
        return {"notice": f"Dataset {ref.dataset} has no downstream segmentation task."}
    image = BioImage(original, bit_depth, ref.image_id)
    state = evaluator.prepare(image, ref)
    out = {"metrics": evaluator.compare(state, reconstruction)}
    if hasattr(evaluator, "segment"):  # label images / contour masks to overlay
        out["original"] = state.get("original") or evaluator.segment(original)
        out["reconstruction"] = evaluator.segment(reconstruction)
    return out


def encoded_suffix(codec_name: str) -> str:
    """File extension for a download of the encoded bytes of ``codec_name``."""
    suffixes = {"jpeg": ".jpg", "jpeg2000": ".jp2", "jpeg2000-lossless": ".jp2", "png": ".png", "jpegxl": ".jxl",
                "jpegxl-lossless": ".jxl", "avif": ".avif", "webp": ".webp", "webp-lossless": ".webp",
                "jpegls": ".jls", "jpegls-near": ".jls"}
    return suffixes.get(codec_name, ".bin")


def _round(value, digits: int):
    if value is None:
        return None
    value = float(value)
    return value if not math.isfinite(value) else round(value, digits)


def live_row(codec_name: str, colour_mode: str, evaluation, target_bpp: float | None = None) -> dict:
    """The table row shown for one live evaluation, rounded, units in the column names (bytes, bpp, dB,
    seconds); with a target bpp, the target and the achieved rate's deviation from it (%)."""
    m = evaluation.metrics
    row = {"codec": codec_name, "colour mode": colour_mode, "setting": m["setting"], "bytes": int(m["bytes"]),
           "bpp (bits/pixel)": _round(m["bpp"], 4)}
    if target_bpp is not None:
        row["target bpp"] = _round(target_bpp, 4)
        row["deviation %"] = _round(100.0 * (m["bpp"] / target_bpp - 1.0), 1)
    row.update({"factor (raw/coded)": _round(m["factor"], 2), "PSNR (dB)": _round(m["psnr"], 2),
                "SSIM": _round(m["ssim"], 4),
                "MS-SSIM": None if m["ms_ssim"] is None else _round(m["ms_ssim"], 4),
                "MS-SSIM (dB)": None if m["ms_ssim"] is None else _round(ms_ssim_db(m["ms_ssim"]), 2),
                "encode (s)": _round(m["encode_s"], 3), "decode (s)": _round(m["decode_s"], 3)})
    return row


# --------------------------------------------------------------------------- cache of results


class ResultCache:
    """A thread-safe least-recently-used cache with a memory budget (bytes), for results of coding an
    upload keyed by (upload hash, bit depth, page, codec, colour mode, setting or target) and for what the
    pages derive from them (8-bit views, difference maps).  One instance lives for the whole server
    (``st.cache_resource``); values are treated as read-only."""

    def __init__(self, max_bytes: int = 3 * 2**30, max_entries: int = 256):
        self.max_bytes, self.max_entries = int(max_bytes), int(max_entries)
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def size_of(value) -> int:
        if hasattr(value, "nbytes"):
            return int(value.nbytes)
        if hasattr(value, "pixels"):  # a BioImage
            return int(value.pixels.nbytes)
        if isinstance(value, (bytes, str)):
            return len(value)
        if isinstance(value, tuple):
            return sum(ResultCache.size_of(v) for v in value)
        return 1024

    def get(self, key, default=None):
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            self.misses += 1
            return default

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._items

    def put(self, key, value):
        size = self.size_of(value)
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (value, size)
            while len(self._items) > 1 and (len(self._items) > self.max_entries or self.total_bytes > self.max_bytes):
                self._items.popitem(last=False)
        return value

    def get_or_make(self, key, make: Callable):
        """The cached value of ``key``, or ``make()`` stored under it."""
        sentinel = object()
        value = self.get(key, sentinel)
        return self.put(key, make()) if value is sentinel else value

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self._items.values())

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------- progress of long work


def expected_trials(codec, target_bpp: float | None, max_evals: int = 14) -> int:
    """How many encode → decode → metrics runs a job is expected to take (for the time estimate): 1 at a
    given setting or for a lossless codec; for a target-bpp search the two ends of the knob plus the
    bisection steps (integer knob: log2 of its span; continuous knob: until 3 %, about 5 more)."""
    from core.rate_search import _continuous_knob

    settings = list(getattr(codec, "default_settings", ()) or ())
    if target_bpp is None or codec.lossless or settings in ([], [None]):
        return 1
    span = abs(float(settings[-1]) - float(settings[0]))
    steps = math.ceil(math.log2(span)) if span > 1 else 1
    if _continuous_knob(codec):
        steps = max(steps, 5)
    return int(min(max_evals, 2 + steps))


@dataclass
class Progress:
    """Where a batch of coding jobs stands; :meth:`text` is what the progress bar says.

    The estimate of the time left: the current codec's remaining expected trials at its own mean time per
    trial so far, plus the later codecs' expected trials at the mean time per trial of everything so far
    (pages run classical codecs before learned ones, so the slow learned trials are timed on their own)."""

    jobs: list[tuple[str, int]]  # (codec name, expected trials) in order
    started: float = field(default_factory=time.monotonic)
    job: int = 0  # index of the current job
    trials_done: int = 0  # in the current job
    finished_trials: int = 0  # trials of finished jobs
    last: str = ""  # the last trial, e.g. "setting 40 → 0.512 bpp"
    job_started: float | None = None  # when the current job began (None: at ``started``)
    last_at: float | None = None  # when the last trial ended

    def trial(self, setting, bpp: float, now: float | None = None) -> None:
        from core.setting_text import format_setting

        self.trials_done += 1
        self.last = f"setting {format_setting(setting)} → {bpp:.3f} bpp"
        self.last_at = time.monotonic() if now is None else now

    def next_job(self, now: float | None = None) -> None:
        self.finished_trials += self.trials_done
        self.trials_done = 0
        self.last = ""
        self.job += 1
        self.job_started = time.monotonic() if now is None else now

    def expected_now(self) -> int:
        """Expected trials of the current job (never fewer than those already made + 1 while running)."""
        return max(self.jobs[self.job][1], self.trials_done + 1) if self.job < len(self.jobs) else 0

    def fraction(self) -> float:
        done = self.finished_trials + self.trials_done
        total = self.finished_trials + self.expected_now() + sum(n for _, n in self.jobs[self.job + 1:])
        return 1.0 if total == 0 else min(1.0, done / total)

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left (None before the first trial); see the class docstring."""
        done = self.finished_trials + self.trials_done
        if done == 0 or self.last_at is None:
            return None
        overall = (self.last_at - self.started) / done
        start = self.started if self.job_started is None else self.job_started
        current = (self.last_at - start) / self.trials_done if self.trials_done else overall
        later = sum(n for _, n in self.jobs[self.job + 1:])
        return max(self.expected_now() - self.trials_done, 0) * current + later * overall

    def text(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        if self.job >= len(self.jobs):
            return f"Done: {len(self.jobs)} codec(s) in {elapsed:.1f} s"
        name, _ = self.jobs[self.job]
        expected = self.expected_now()
        trial = f"trial {self.trials_done + 1}" + (f" of ~{expected}" if expected > 1 else "")
        eta = self.eta_s(now)
        clock = time.strftime("%H:%M:%S", time.localtime(time.time() - elapsed))
        return (f"{name} ({self.job + 1}/{len(self.jobs)}): {trial}"
                + (f" (last: {self.last})" if self.last else "")
                + f" · started {clock}, elapsed {elapsed:.1f} s · "
                + ("estimating time left…" if eta is None else f"about {eta:.0f} s left (estimate)"))


def run_order(names: Iterable[str]) -> list[str]:
    """``names`` with classical codecs first and learned ones last (order otherwise kept), so that the
    time estimate of the slow learned trials is made from their own timing."""
    names = list(names)
    return [n for n in names if not n.startswith("learned")] + [n for n in names if n.startswith("learned")]


#: Downstream columns: label with unit (core.segmentation's DownstreamEvaluator.compare keys).
SEGMENTATION_LABELS = {
    "seg_dice": "Dice vs original's segmentation",
    "seg_iou": "IoU vs original's segmentation",
    "seg_f1": "object F1 (IoU 0.5) vs original's",
    "seg_dice_gt_original": "Dice of original vs ground truth",
    "seg_dice_gt_reconstruction": "Dice vs ground truth",
    "seg_f1_gt_original": "object F1 of original vs ground truth",
    "seg_f1_gt_reconstruction": "object F1 vs ground truth",
    "contour_bf1": "boundary F1 (2 px)",
    "contour_hd95": "contour HD95 (px)",
    "contour_msd": "contour mean surface distance (px)",
}


def segmentation_row(codec_name: str, metrics: dict, digits: int = 3) -> dict:
    """One table row of downstream metrics, labelled with units (:data:`SEGMENTATION_LABELS`) and rounded."""
    row = {"codec": codec_name}
    for key, value in metrics.items():
        row[SEGMENTATION_LABELS.get(key, key)] = None if value is None else _round(value, digits)
    return row
