"""Streamlit glue shared by the pages: where the database is, cached loads, the
locked/missing-database messages and the filter sidebar.  Computation lives in
:mod:`core.dashboard`."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from core import dashboard as dash
from core.store import StoreLockedError


def db_path() -> Path:
    """``streamlit run app.py -- --db PATH``, else $BIOCODEC_DB, else results.duckdb in the repo root."""
    return dash.resolve_db_path(sys.argv[1:])


def data_root() -> str | None:
    """``-- --data-root DIR``, else $BIOCODEC_DATA_ROOT, else None (core.stages' default ../shared/data)."""
    root = dash.resolve_data_root(sys.argv[1:])
    return None if root is None else str(root)


def _mtime(path: Path) -> float:
    """Newest modification time of the database and its write-ahead log (cache key: reload after writes)."""
    times = [p.stat().st_mtime for p in (path, Path(str(path) + ".wal")) if p.exists()]
    return max(times) if times else 0.0


@st.cache_data(show_spinner="Reading the results database…", max_entries=4)
def _snapshot(path: str, mtime: float) -> dash.Snapshot:
    return dash.load_snapshot(path)


def snapshot() -> dash.Snapshot:
    """The database's tables, or stop the page with a clear message (missing / locked)."""
    path = db_path()
    if not path.is_file():
        st.info(dash.missing_db_message(path))
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


def sidebar_filters(results, key: str, errors_option: bool = False) -> dash.Filters:
    """Multiselect filters (empty = all) in the sidebar; ``key`` keeps pages' widgets apart."""
    options = dash.filter_options(results)
    sb = st.sidebar
    sb.subheader("Filters (empty = all)")
    f = dash.Filters(
        stages=sb.multiselect("Stage", options["stages"], key=f"{key}_stage"),
        datasets=sb.multiselect("Dataset", options["datasets"], key=f"{key}_dataset"),
        bit_depths=sb.multiselect("Bit depth", options["bit_depths"], key=f"{key}_depth"),
        colours=sb.multiselect("Gray / colour", options["colours"], key=f"{key}_colour"),
        codecs=sb.multiselect("Codecs", options["codecs"], key=f"{key}_codecs"),
        colour_modes=sb.multiselect("Colour mode", options["colour_modes"], key=f"{key}_modes",
                                    help="joint: the codec sees all channels; per_channel: each RGB channel "
                                         "coded as gray"),
    )
    if errors_option:
        f.include_errors = sb.checkbox("Include failed rows", value=False, key=f"{key}_errors")
    return f


def only(values: list):
    """The single selected value, or None when zero or several are selected."""
    return values[0] if len(values) == 1 else None


@st.cache_data(show_spinner=False, max_entries=8)
def evaluate_stored(stage: int, dataset: str, image_id: str, codec_name: str, colour_mode: str, setting: str,
                    root: str | None) -> dict:
    """Reload a stored row's original (via its ImageRef) and re-encode it; arrays + metrics."""
    from core.datasets import load_ref
    from core.evaluate import codec_for_mode, evaluate

    ref = dash.find_ref(stage, dataset, image_id, root)
    image = load_ref(ref)
    base = codec(codec_name)
    result = evaluate(image, codec_for_mode(base, colour_mode, image.channels), dash.parse_setting(setting, base))
    return {"ref": ref, "original": image.pixels, "bit_depth": image.bit_depth,
            "reconstruction": result.reconstruction, "metrics": result.metrics}


@st.cache_data(show_spinner=False, max_entries=4)
def segment_pair(ref, original, bit_depth: int, reconstruction) -> dict:
    """Downstream comparison (and label images when the evaluator offers ``segment``) of one pair."""
    from core.io import BioImage

    try:
        from core.segmentation import downstream_for
    except ImportError as exc:
        return {"notice": f"core.segmentation is not available ({exc})."}
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


@st.cache_data(show_spinner=False, max_entries=32)
def _bd_rate(path: str, mtime: float, metric: str, anchor: str, stage, dataset, codecs: tuple):
    return dash.bd_rate(path, metric=metric, anchor=anchor, stage=stage, dataset=dataset, codecs=codecs)


def bd_rate(metric: str, anchor: str, stage=None, dataset=None, codecs=()):
    """Cached :func:`core.dashboard.bd_rate` for the current database (recomputed after it changes)."""
    path = db_path()
    return _bd_rate(str(path), _mtime(path), metric, anchor, stage, dataset, tuple(codecs))


@st.cache_data(show_spinner=False, max_entries=16)
def _dice_safe(path: str, mtime: float, threshold: float):
    return dash.dice_safe_points(path, threshold)


def dice_safe(threshold: float):
    """Cached :func:`core.dashboard.dice_safe_points` for the current database."""
    path = db_path()
    return _dice_safe(str(path), _mtime(path), float(threshold))


def knob(codec_name: str) -> str:
    """What a codec's setting means (for help texts); tolerant of codecs no longer registered."""
    try:
        return codec(codec_name).knob or "lossless: no setting"
    except Exception:
        return f"{codec_name} is not registered in this version"
