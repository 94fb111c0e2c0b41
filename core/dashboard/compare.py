"""Pixel-exact comparison of an original and its reconstructions: the display region, lossless data URIs,
the self-contained split view (a draggable divider, no network), 1:1 panels, the difference map's colour
scale, and the matched-bpp checks.

Everything here is plain Python returning arrays or HTML strings (no Streamlit), so it is testable
without a browser; the pages put the HTML in ``st.iframe`` (the split view: it needs
JavaScript) or ``st.html`` (static panels).

Display rules (stated on the pages):

* a panel shows image pixels at **1:1** (one image pixel = one CSS pixel) inside a scrollable box; it is
  never scaled to fit its column;
* an image larger than :data:`MAX_REGION` pixels on a side is shown as a **region** (a crop, not
  resampled) that the user places;
* enlargement is by an integer factor with **nearest-neighbour** upscaling (the PNG holds the region at its
  pixel size; the browser draws it ``factor`` times larger with ``image-rendering: pixelated``, which
  repeats pixels and never interpolates), and every enlarged panel says so.
"""
from __future__ import annotations

import base64
import html
import itertools
import json
import math
from dataclasses import dataclass

import numpy as np

#: Largest region side shown at once (images larger than this are shown as a chosen region).
MAX_REGION = 1024
#: The region side a larger image opens on (its centre): what a widget change redraws quickly.
LARGE_IMAGE_REGION = 512
#: Region sides offered by the region selector (px); the whole image is offered as well when it fits.
REGION_SIDES = (32, 64, 128, 256, 512, 1024)
#: Integer enlargement factors offered (nearest neighbour).
ZOOMS = (1, 2, 4, 8, 16)
#: Largest enlarged panel side (px); larger products of region × zoom are refused with a note (a panel
#: box shows at most about 560 px; five 2048 px panels took 3–4 s to draw in headless Chromium).
MAX_PANEL = 1024
#: Two rates further apart than this (relative to the lower one) are not "at matched bpp".
MATCH_TOLERANCE = 0.05
#: Colour map of the difference maps.
DIFF_CMAP = "inferno"

_counter = itertools.count()


# --------------------------------------------------------------------------- the region shown


@dataclass(frozen=True)
class Region:
    """A rectangle of the image, rows ``y0:y1``, columns ``x0:x1`` (pixels)."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def is_whole(self, shape) -> bool:
        return (self.y0, self.x0, self.y1, self.x1) == (0, 0, shape[0], shape[1])

    def describe(self, shape) -> str:
        """The sentence a page shows about the region."""
        h, w = shape[:2]
        if self.is_whole(shape):
            return f"the whole image ({w}×{h} px)"
        return (f"region columns {self.x0}–{self.x1 - 1}, rows {self.y0}–{self.y1 - 1} ({self.width}×{self.height} "
                f"px) of the {w}×{h} px image, cropped, not resampled")


def region_sides(shape) -> list[int]:
    """Region sides the selector offers for an image of ``shape`` (those smaller than its larger side)."""
    h, w = shape[:2]
    return [s for s in REGION_SIDES if s < max(h, w)]


def default_region_side(shape) -> int | None:
    """``None`` (the whole image) when it fits in :data:`MAX_REGION`, else :data:`LARGE_IMAGE_REGION`."""
    h, w = shape[:2]
    return None if max(h, w) <= MAX_REGION else LARGE_IMAGE_REGION


def region(shape, side: int | None, left: int = 0, top: int = 0) -> Region:
    """The region of ``side`` × ``side`` px (None = the whole image, only when it fits :data:`MAX_REGION`)
    with its top-left corner at (``left``, ``top``), moved inside the image and clipped to it."""
    h, w = shape[:2]
    if side is None:
        if max(h, w) > MAX_REGION:
            raise ValueError(f"a {w}×{h} image is larger than {MAX_REGION} px: choose a region side")
        return Region(0, 0, h, w)
    side = int(side)
    if side < 1:
        raise ValueError(f"region side must be >= 1, got {side}")
    rh, rw = min(side, h), min(side, w)
    y0 = int(min(max(0, top), h - rh))
    x0 = int(min(max(0, left), w - rw))
    return Region(y0, x0, y0 + rh, x0 + rw)


def centred_corner(shape, side: int | None) -> tuple[int, int]:
    """(left, top) that centres a ``side`` region in the image (0, 0 for the whole image)."""
    if side is None:
        return 0, 0
    h, w = shape[:2]
    return max(0, (w - side) // 2), max(0, (h - side) // 2)


def panel_fits(reg: Region, factor: int) -> bool:
    """True when the enlarged region stays within :data:`MAX_PANEL` px on a side."""
    return max(reg.height, reg.width) * int(factor) <= MAX_PANEL


def scale_note(factor: int) -> str:
    """What the panels' scale is, in one sentence."""
    if int(factor) == 1:
        return "Shown at 1:1: one image pixel = one screen (CSS) pixel, never resampled; scroll inside a panel."
    return (f"Enlarged {int(factor)}× with nearest-neighbour upscaling (CSS image-rendering: pixelated — each image "
            f"pixel is a {int(factor)}×{int(factor)} block, no interpolation); scroll inside a panel.")


# --------------------------------------------------------------------------- lossless data URIs


def png_data_uri(view8: np.ndarray) -> str:
    """A ``data:image/png;base64,…`` URI of an 8-bit gray or RGB array (lossless; zlib level 1 for speed)."""
    from core.io import encode_png

    if view8.dtype != np.uint8:
        raise ValueError(f"display arrays are uint8, got {view8.dtype}")
    data = encode_png(np.ascontiguousarray(view8), level=1)
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def region_uri(view8: np.ndarray, reg: Region) -> str:
    """:func:`png_data_uri` of ``reg`` of ``view8`` (at its pixel size: panels enlarge it in the browser)."""
    return png_data_uri(view8[reg.slices()])


# --------------------------------------------------------------------------- the split view


def split_view_html(left_uri: str, right_uri: str, width: int, height: int, left_label: str, right_label: str,
                    max_height: int = 640, start: float = 0.5, element_id: str | None = None) -> str:
    """A self-contained HTML page (no network): ``left_uri`` and ``right_uri`` drawn at ``width`` ×
    ``height`` CSS px (their pixel size times the zoom, nearest neighbour) exactly on top of each other in
    a scrollable box, the right one clipped left of a **draggable divider** (pointer or arrow keys), as
    Squoosh does.

    The divider's position in image columns is written to the stage's ``data-split`` attribute and the
    right layer's ``clip-path`` (browser tests read both).
    """
    sid = element_id or f"bcsplit{next(_counter)}"
    start = min(max(float(start), 0.0), 1.0)
    x = round(width * start)
    labels = json.dumps([left_label, right_label]).replace("</", "<\\/")  # inside <script>
    return f"""<!doctype html><html><head><meta charset="utf-8"><style>
html,body{{margin:0;padding:0;font:13px/1.35 system-ui,sans-serif;color:#222;background:transparent}}
.box{{position:relative;overflow:auto;max-width:100%;max-height:{int(max_height)}px;border:1px solid #bbb;
      background:repeating-conic-gradient(#ddd 0 25%,#fff 0 50%) 0 0/16px 16px}}
.stage{{position:relative;width:{int(width)}px;height:{int(height)}px;touch-action:none}}
.stage img{{position:absolute;left:0;top:0;width:{int(width)}px;height:{int(height)}px;max-width:none;
      image-rendering:pixelated;user-select:none;-webkit-user-drag:none;pointer-events:none}}
.divider{{position:absolute;top:0;bottom:0;width:17px;margin-left:-8px;cursor:ew-resize;z-index:3;outline:none}}
.divider::before{{content:"";position:absolute;left:7px;top:0;bottom:0;width:3px;background:#fff;
      box-shadow:0 0 0 1px #000}}
.divider:focus::before{{background:#ff0}}
.grip{{position:sticky;top:40%;left:0;width:17px;height:34px;border-radius:8px;background:#fff;border:1px solid #000;
      display:flex;align-items:center;justify-content:center;font-size:11px}}
.lab{{position:sticky;top:0;z-index:2;display:flex;justify-content:space-between;pointer-events:none;height:0}}
.lab span{{background:rgba(0,0,0,.65);color:#fff;padding:2px 6px;margin:4px;border-radius:3px;height:fit-content;
      white-space:nowrap}}
.read{{margin-top:4px;color:#444}}
</style></head><body>
<div class="box" id="{sid}-box"><div class="lab"><span id="{sid}-l"></span><span id="{sid}-r"></span></div>
<div class="stage" id="{sid}" data-split="{x}" data-width="{int(width)}">
<img id="{sid}-left" alt="left" src="{left_uri}">
<img id="{sid}-right" alt="right" src="{right_uri}" style="clip-path:inset(0 0 0 {x}px)">
<div class="divider" id="{sid}-divider" role="slider" tabindex="0" aria-label="split position"
     aria-valuemin="0" aria-valuemax="{int(width)}" aria-valuenow="{x}" style="left:{x}px"><div class="grip">⇔</div></div>
</div></div>
<div class="read" id="{sid}-read"></div>
<script>
(function(){{
  const W={int(width)}, stage=document.getElementById("{sid}"), right=document.getElementById("{sid}-right"),
        div=document.getElementById("{sid}-divider"), read=document.getElementById("{sid}-read"),
        labels={labels};
  document.getElementById("{sid}-l").textContent="◀ "+labels[0];
  document.getElementById("{sid}-r").textContent=labels[1]+" ▶";
  function set(x){{
    x=Math.max(0,Math.min(W,Math.round(x)));
    right.style.clipPath="inset(0 0 0 "+x+"px)"; div.style.left=x+"px";
    stage.dataset.split=x; div.setAttribute("aria-valuenow",x);
    read.textContent="Divider at x = "+x+" of "+W+" px: left of it "+labels[0]+", right of it "+labels[1]+
                     ". Drag the divider (or focus it and use ← →).";
  }}
  let drag=false;
  function at(e){{ const r=stage.getBoundingClientRect(); set(e.clientX-r.left); }}
  div.addEventListener("pointerdown",e=>{{drag=true;div.setPointerCapture(e.pointerId);at(e);e.preventDefault();}});
  div.addEventListener("pointermove",e=>{{if(drag)at(e);}});
  div.addEventListener("pointerup",e=>{{drag=false;}});
  div.addEventListener("keydown",e=>{{const s=e.shiftKey?10:1, x=+stage.dataset.split;
    if(e.key==="ArrowLeft"){{set(x-s);e.preventDefault();}} if(e.key==="ArrowRight"){{set(x+s);e.preventDefault();}}}});
  set({x});
}})();
</script></body></html>"""


def split_view_height(height: int, max_height: int = 640) -> int:
    """Height (px) of the component that holds a :func:`split_view_html` of ``height`` px content."""
    return min(int(height), int(max_height)) + 2 + 18 + 40  # border, scrollbar, read-out line


# --------------------------------------------------------------------------- static 1:1 panels


def panels_html(panels: list[tuple[str, str, int, int]], max_height: int = 560, test_id: str = "bc-panels") -> str:
    """Side-by-side panels (``(caption, data URI, width, height)``: the display size in CSS px, the image's
    pixel size times the zoom), each in its own scrollable box, never shrunk to fit; boxes wrap onto new
    lines rather than overlap."""
    figures = []
    for caption, uri, w, h in panels:
        figures.append(
            f'<figure class="bc-panel" style="flex:1 1 320px;min-width:0;max-width:100%;margin:0">'
            f'<div style="overflow:auto;max-width:100%;max-height:{int(max_height)}px;border:1px solid #bbb">'
            f'<img class="bc-native" src="{uri}" alt="{html.escape(caption)}" width="{int(w)}" height="{int(h)}" '
            f'style="display:block;width:{int(w)}px;height:{int(h)}px;max-width:none;image-rendering:pixelated">'
            f'</div><figcaption style="font-size:0.85em;color:#555;margin-top:2px">{html.escape(caption)}'
            f'</figcaption></figure>')
    return (f'<div data-testid="{html.escape(test_id)}" style="display:flex;flex-wrap:wrap;gap:12px;'
            f'align-items:flex-start;width:100%">' + "".join(figures) + "</div>")


# --------------------------------------------------------------------------- difference maps


def difference(original: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
    """|original − reconstruction| in intensity units of the original's bit depth (max over channels)."""
    diff = np.abs(original.astype(np.int32) - reconstruction.astype(np.int32))
    return diff.max(axis=2) if diff.ndim == 3 else diff


def heat(diff: np.ndarray, vmax: float) -> np.ndarray:
    """RGB uint8 :data:`DIFF_CMAP` rendering of ``diff`` with 0 → black and ``vmax`` (and above) → full scale."""
    from matplotlib import colormaps

    lut = (colormaps[DIFF_CMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    if vmax <= 0:
        return lut[np.zeros(diff.shape, np.intp)]
    index = np.clip(np.rint(diff.astype(np.float64) * (255.0 / vmax)), 0, 255).astype(np.intp)
    return lut[index]


#: Where a difference map's colour scale ends: the largest difference or a high percentile of them.
SCALE_CHOICES = ("maximum", "99.9th percentile", "99th percentile")


def scale_value(diff: np.ndarray, choice: str = "maximum") -> float:
    """The value of ``diff`` named by ``choice`` (:data:`SCALE_CHOICES`)."""
    if choice == "maximum":
        return float(diff.max()) if diff.size else 0.0
    if choice not in SCALE_CHOICES:
        raise ValueError(f"scale must be one of {SCALE_CHOICES}, got {choice!r}")
    return float(np.percentile(diff, float(choice.split("th")[0])))


def shared_scale(values) -> float:
    """One full-scale value for several difference maps (arrays: their maxima; or numbers: per-map scale
    values), the largest and at least 1, so that the same colour means the same error in each."""
    return float(max([1.0] + [float(v.max()) if isinstance(v, np.ndarray) else float(v)
                              for v in values if not isinstance(v, np.ndarray) or v.size]))


def colour_scale_html(vmax: float, unit: str = "intensity units", stops: int = 11) -> str:
    """A horizontal colour bar of :data:`DIFF_CMAP` from 0 to ``vmax`` with five labelled ticks."""
    from matplotlib import colormaps

    cmap = colormaps[DIFF_CMAP]
    colours = ", ".join("rgb({},{},{}) {:.0f}%".format(*(round(255 * c) for c in cmap(i / (stops - 1))[:3]),
                                                       100 * i / (stops - 1)) for i in range(stops))
    ticks = "".join(f'<span style="position:absolute;left:{25 * i}%;transform:translateX(-{25 * i}%)">'
                    f"{vmax * i / 4:.4g}</span>" for i in range(5))
    return (f'<div data-testid="bc-colour-scale" style="max-width:420px;font-size:0.85em">'
            f'<div style="height:14px;border:1px solid #888;background:linear-gradient(to right, {colours})"></div>'
            f'<div style="position:relative;height:1.3em">{ticks}</div>'
            f'<div style="color:#555">|original − reconstruction| in {html.escape(unit)} '
            f"(max over channels); values ≥ {vmax:.4g} are drawn at full scale</div></div>")


# --------------------------------------------------------------------------- rates: target and matched bpp


def deviation_pct(achieved: float, target: float) -> float:
    """(achieved − target) / target in percent."""
    return 100.0 * (float(achieved) / float(target) - 1.0)


def deviation_text(achieved: float, target: float) -> str:
    """e.g. ``"0.512 bpp (+2.4 % vs target 0.500 bpp)"``."""
    return f"{achieved:.3f} bpp ({deviation_pct(achieved, target):+.1f} % vs target {target:.3f} bpp)"


def rate_gap(a: float, b: float) -> float:
    """How far apart two rates are, relative to the lower one (0.05 = 5 %)."""
    low, high = sorted((float(a), float(b)))
    if low <= 0:
        return math.inf if high > 0 else 0.0
    return high / low - 1.0


def unmatched_pairs(bpps: dict[str, float], tolerance: float = MATCH_TOLERANCE) -> list[tuple[str, str, float]]:
    """Every pair of ``bpps`` (name → bpp) more than ``tolerance`` apart (:func:`rate_gap`), with the gap."""
    names = list(bpps)
    out = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            gap = rate_gap(bpps[a], bpps[b])
            if gap > tolerance:
                out.append((a, b, gap))
    return out


def unmatched_warning(bpps: dict[str, float], tolerance: float = MATCH_TOLERANCE) -> str | None:
    """The warning a page shows when results compared "at matched bpp" are not (None when all match)."""
    pairs = unmatched_pairs(bpps, tolerance)
    if not pairs:
        return None
    listed = "; ".join(f"{a} {bpps[a]:.3f} vs {b} {bpps[b]:.3f} bpp ({100 * g:.1f} % apart)" for a, b, g in pairs)
    return (f"Not at matched bpp (more than {100 * tolerance:.0f} % apart): {listed}. Quality differences "
            "between these include a rate difference.")
