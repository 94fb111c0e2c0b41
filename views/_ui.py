"""Streamlit glue shared by the pages: where the database is, cached loads, the locked/missing-database
messages, the filter sidebar (with the held-out checkbox) and cached codecs.  Computation lives in
:mod:`core.dashboard`."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from core.dashboard import compare, data, imaging, live
from core.store import StoreLockedError


def db_path() -> Path:
    """``streamlit run app.py -- --db PATH``, else $BIOCODEC_DB, else results.duckdb in the repo root."""
    return data.resolve_db_path(sys.argv[1:])


def data_root() -> str:
    """``-- --data-root DIR``, else $BIOCODEC_DATA_ROOT, else ../shared/data beside the repository."""
    return str(data.resolve_data_root(sys.argv[1:]))


def _mtime(path: Path) -> float:
    """Newest modification time of the database and its write-ahead log (cache key: reload after writes)."""
    times = [p.stat().st_mtime for p in (path, Path(str(path) + ".wal")) if p.exists()]
    return max(times) if times else 0.0


@st.cache_data(show_spinner="Reading the results database…", max_entries=4)
def _snapshot(path: str, mtime: float) -> data.Snapshot:
    return data.load_snapshot(path)


def snapshot() -> data.Snapshot:
    """The database's tables, or stop the page with a clear message (missing / locked)."""
    path = db_path()
    if not path.is_file():
        st.info(data.missing_db_message(path))
        st.stop()
    try:
        return _snapshot(str(path), _mtime(path))
    except StoreLockedError as exc:
        st.error(f"The results database is busy: the runner is writing to it. {exc}")
        if st.button("Retry", key="retry_locked"):
            st.rerun()
        st.stop()
    except Exception as exc:  # corrupt file, old schema: say so, never crash
        st.error(f"Cannot read `{path}`: {type(exc).__name__}: {exc}")
        if st.button("Retry", key="retry_error"):
            st.rerun()
        st.stop()


@st.cache_resource(show_spinner="Loading codec…")
def codec(name: str):
    """One codec object per name for the whole server (learned models load once)."""
    from core.codecs import get_codec

    return get_codec(name)


def include_training_checkbox(key: str, where=None) -> bool:
    """The "include images seen in training" checkbox (unticked: held-out rows only)."""
    return (where or st).checkbox(
        data.INCLUDE_TRAINING_LABEL, value=False, key=key,
        help="Unticked, every number uses only images no model involved (learned codec, segmenter) was "
             "trained, validated or tuned on. Tick to add the rows of those images.")


def sidebar_filters(results, key: str, errors_option: bool = False, opening: bool = False) -> data.Filters:
    """The held-out checkbox and multiselect filters (empty = all) in the sidebar; ``key`` keeps pages apart.
    ``opening``: preselect :func:`core.dashboard.data.default_selection` (one dataset of held-out EM, stage 2;
    the learned codec, JPEG 2000 and AVIF)."""
    options = data.filter_options(results)
    sb = st.sidebar
    include_training = include_training_checkbox(f"{key}_training", sb)
    sb.subheader("Filters (empty = all)")
    start = data.default_selection(data.apply_filters(results, data.Filters())) if opening else {}
    stage_default = [start["stage"]] if start.get("stage") is not None else []
    dataset_default = [start["dataset"]] if start.get("dataset") is not None else []
    f = data.Filters(
        stages=sb.multiselect("Stage", options["stages"], default=stage_default, key=f"{key}_stage"),
        datasets=sb.multiselect("Dataset", options["datasets"], default=dataset_default, key=f"{key}_dataset",
                                help="Curves of different image sets are not comparable: one dataset at a time"),
        bit_depths=sb.multiselect("Bit depth", options["bit_depths"], key=f"{key}_depth"),
        colours=sb.multiselect("Gray / colour", options["colours"], key=f"{key}_colour"),
        codecs=sb.multiselect("Codecs", options["codecs"], default=start.get("codecs", []), key=f"{key}_codecs"),
        colour_modes=sb.multiselect("Colour mode", options["colour_modes"], key=f"{key}_modes",
                                    help="joint: the codec sees all channels; per_channel: each RGB channel "
                                         "coded as gray"),
        include_training=include_training,
    )
    if errors_option:
        f.include_errors = sb.checkbox("Include failed rows", value=False, key=f"{key}_errors")
    return f


def only(values: list):
    """The single selected value, or None when zero or several are selected."""
    return values[0] if len(values) == 1 else None


@st.cache_data(show_spinner=False, max_entries=8)
def reencode_stored(stage: int, dataset: str, image_id: str, codec_name: str, colour_mode: str, setting: str,
                    root: str | None) -> dict:
    """Reload a stored row's original and code it again (:func:`core.dashboard.live.reencode_stored`)."""
    ref = data.find_ref(stage, dataset, image_id, root)
    return live.reencode_stored(ref, codec(codec_name), colour_mode, setting)


@st.cache_data(show_spinner=False, max_entries=4)
def segment_pair(ref, original, bit_depth: int, reconstruction) -> dict:
    """Cached :func:`core.dashboard.live.segment_pair`."""
    return live.segment_pair(ref, original, bit_depth, reconstruction)


def knob(codec_name: str) -> str:
    """What a codec's setting means (for help texts); tolerant of codecs no longer registered."""
    try:
        return codec(codec_name).knob or "lossless: no setting"
    except Exception:
        return f"{codec_name} is not registered in this version"


# --------------------------------------------------------------------------- coding now: cache and progress


@st.cache_resource(show_spinner=False)
def result_cache() -> live.ResultCache:
    """The server's one cache of coding results and derived views (keyed by upload hash / stored row,
    codec, colour mode and setting or target), so a widget change recomputes only what changed."""
    return live.ResultCache()


@st.cache_resource(show_spinner="Reading the upload…", max_entries=4)
def read_upload(key: str, name: str, bit_depth: int | None, page: int, _data: bytes):
    """:func:`core.dashboard.live.read_upload`, once per upload hash (``key``), name, bit depth and page."""
    return live.read_upload(_data, name, bit_depth, page)


def run_jobs(jobs: list[dict], where=None) -> dict:
    """Run coding jobs with a progress bar: per job the codec, the trial, elapsed time and an estimate.

    Each job is ``{"name", "key", "expected", "make"}``: ``make(on_trial)`` computes the result (calling
    ``on_trial(setting, evaluation)`` after each encode → decode → metrics); results already in
    :func:`result_cache` under ``key`` are not computed again.  Classical codecs run before learned ones
    (:func:`core.dashboard.live.run_order`).  Returns name → result or ``{"error"}``, in the jobs' order.
    """
    cache = result_cache()
    where = where or st
    order = {name: i for i, name in enumerate(live.run_order([j["name"] for j in jobs]))}
    todo = sorted((j for j in jobs if j["key"] not in cache), key=lambda j: order[j["name"]])
    progress = live.Progress([(j["name"], j["expected"]) for j in todo])
    bar = where.progress(0.0, text=progress.text()) if todo else None
    out = {}
    for job in sorted(jobs, key=lambda j: order[j["name"]]):  # classical first: learned trials timed on their own
        if job["key"] in cache:
            out[job["name"]] = cache.get(job["key"])
            continue

        def on_trial(setting, evaluation):
            progress.trial(setting, evaluation.metrics["bpp"])
            bar.progress(progress.fraction(), text=progress.text())

        bar.progress(progress.fraction(), text=progress.text())
        try:
            out[job["name"]] = cache.put(job["key"], job["make"](on_trial))
        except Exception as exc:  # one codec failing must not hide the others
            out[job["name"]] = {"error": f"{type(exc).__name__}: {exc}"}
        progress.next_job()
    out = {j["name"]: out[j["name"]] for j in jobs}  # the caller's order
    if bar is not None:
        bar.empty()
        where.caption(progress.text())  # "Done: N codec(s) in T s"
    return out


def window(original_key: tuple, original):
    """The display window (low, high) of deep data, computed once per original; None for 8-bit data."""
    if original.dtype == "uint8":
        return None
    return result_cache().get_or_make(original_key + ("window",), lambda: imaging.window_bounds(original))


def display_note(original_key: tuple, original, bit_depth: int) -> str:
    """How the original and its reconstructions are shown (8-bit as stored, or the window of deep data)."""
    bounds = window(original_key, original)
    if bounds is None:
        return "8-bit, shown as stored (no windowing)."
    return imaging.window_note(bit_depth, *bounds)


def original_preview(original_key: tuple, original, bit_depth: int, name: str) -> None:
    """The original alone at 1:1 (the whole image, or its centre region when larger than the display limit)."""
    bounds = window(original_key, original)
    view = result_cache().get_or_make(original_key + ("view8",),
                                      lambda: imaging.window_to_8bit(original, bit_depth, bounds=bounds)[0])
    side = compare.default_region_side(original.shape)
    reg = compare.region(original.shape, side, *compare.centred_corner(original.shape, side))
    st.html(compare.panels_html([(f"{name}: {reg.describe(original.shape)}, 1:1",
                                  _region_uri(original_key + ("view8",), (reg.y0, reg.x0, reg.y1, reg.x1), view),
                                  reg.width, reg.height)], test_id="original-preview"))
    st.caption(display_note(original_key, original, bit_depth))


@st.cache_data(show_spinner=False, max_entries=128)
def _region_uri(key: tuple, reg: tuple, _view) -> str:
    """Lossless data URI of a region of a cached 8-bit view (``key`` names the view's content)."""
    return compare.region_uri(_view, compare.Region(*reg))


def comparison(prefix: str, original_key: tuple, original, bit_depth: int, recons: dict, note: str) -> None:
    """The pixel-exact comparison block: a region and zoom selector, a split view with a draggable divider
    between any two of the original and the reconstructions, the images side by side at the same region
    and scale, and their difference maps on one colour scale.

    ``recons``: label → (cache key, reconstruction array).  Views and difference maps are cached under
    the keys, so a widget change only re-crops.
    """
    cache = result_cache()
    bounds = window(original_key, original)
    views = {"original": cache.get_or_make(original_key + ("view8",),
                                           lambda: imaging.window_to_8bit(original, bit_depth, bounds=bounds)[0])}
    diffs = {}
    for label, (key, recon) in recons.items():
        views[label] = cache.get_or_make(key + ("view8",),
                                         lambda r=recon: imaging.window_to_8bit(r, bit_depth, bounds=bounds)[0])
        diffs[label] = cache.get_or_make(key + ("diff",), lambda r=recon: compare.difference(original, r))
    keys = {"original": original_key, **{label: key for label, (key, _) in recons.items()}}
    labels = list(views)
    shape = original.shape

    st.subheader("Compare pixels")
    c = st.columns([3, 3, 2, 2, 2, 2])
    left = c[0].selectbox("Split view: left", labels, index=0, key=f"{prefix}_left")
    right = c[1].selectbox("Split view: right", labels, index=min(1, len(labels) - 1), key=f"{prefix}_right")
    sides = ([None] if compare.default_region_side(shape) is None else []) + sorted(compare.region_sides(shape),
                                                                                     reverse=True)
    shape_key = f"{shape[1]}x{shape[0]}"
    side = c[2].selectbox("Region", sides, key=f"{prefix}_side_{shape_key}",
                          index=sides.index(compare.default_region_side(shape)),
                          format_func=lambda s: "whole image" if s is None else f"{s}×{s} px",
                          help=f"Images larger than {compare.MAX_REGION} px on a side are shown as a region "
                               "(cropped, never resampled)")
    cx, cy = compare.centred_corner(shape, side)
    h, w = shape[:2]
    x0 = c[3].number_input("Region left (px)", 0, w - 1, cx, step=16, key=f"{prefix}_x_{shape_key}_{side}",
                           disabled=side is None)
    y0 = c[4].number_input("Region top (px)", 0, h - 1, cy, step=16, key=f"{prefix}_y_{shape_key}_{side}",
                           disabled=side is None)
    factor = c[5].selectbox("Zoom", compare.ZOOMS, key=f"{prefix}_zoom",
                            format_func=lambda z: "1:1" if z == 1 else f"{z}× nearest neighbour")
    reg = compare.region(shape, side, int(x0), int(y0))
    if not compare.panel_fits(reg, factor):
        fits = max(z for z in compare.ZOOMS if compare.panel_fits(reg, z))
        st.caption(f"{factor}× of a {reg.width}×{reg.height} px region exceeds {compare.MAX_PANEL} px: shown {fits}×; "
                   "choose a smaller region to enlarge more.")
        factor = fits
    region_t = (reg.y0, reg.x0, reg.y1, reg.x1)
    uris = {label: _region_uri(keys[label] + ("view8",), region_t, views[label]) for label in labels}
    st.caption(f"Showing {reg.describe(shape)}. {compare.scale_note(factor)} {note}")

    if left == right:
        st.info("Choose two different images for the split view.")
    else:
        height = reg.height * factor
        st.iframe(compare.split_view_html(uris[left], uris[right], reg.width * factor, height, left, right,
                                          element_id=f"{prefix}split"),
                  height=compare.split_view_height(height))
    st.html(compare.panels_html([(label, uris[label], reg.width * factor, reg.height * factor) for label in labels],
                                test_id=f"{prefix}-panels"))

    if diffs:
        st.markdown("**Difference maps** (same colour scale for every reconstruction)")
        scale = st.radio("Full scale of the colour map at", compare.SCALE_CHOICES, horizontal=True,
                         key=f"{prefix}_diffscale", help="The largest difference, or a percentile of the differences "
                                                         "(larger values drawn at full scale): shows small errors")
        vmax = compare.shared_scale([cache.get_or_make(keys[label] + ("diffscale", scale),
                                                       lambda d=d: compare.scale_value(d, scale))
                                     for label, d in diffs.items()])
        heat_uris = []
        for label, d in diffs.items():
            hk = keys[label] + ("heat", vmax)
            hv = cache.get_or_make(hk, lambda d=d: compare.heat(d, vmax))
            heat_uris.append((f"|original − {label}|: mean {d.mean():.3g}, max {int(d.max())}",
                              _region_uri(hk, region_t, hv), reg.width * factor, reg.height * factor))
        st.html(compare.panels_html(heat_uris, test_id=f"{prefix}-diffs"))
        st.html(compare.colour_scale_html(vmax, f"intensity units of the {bit_depth}-bit original"))
