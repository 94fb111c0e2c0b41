"""Streamlit glue shared by the pages: where the database is, cached loads, the locked/missing-database
messages, the filter sidebar (with the held-out checkbox) and cached codecs.  Computation lives in
:mod:`core.dashboard`."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

from core.dashboard import data, live
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


def sidebar_filters(results, key: str, errors_option: bool = False) -> data.Filters:
    """The held-out checkbox and multiselect filters (empty = all) in the sidebar; ``key`` keeps pages apart."""
    options = data.filter_options(results)
    sb = st.sidebar
    include_training = include_training_checkbox(f"{key}_training", sb)
    sb.subheader("Filters (empty = all)")
    f = data.Filters(
        stages=sb.multiselect("Stage", options["stages"], key=f"{key}_stage"),
        datasets=sb.multiselect("Dataset", options["datasets"], key=f"{key}_dataset"),
        bit_depths=sb.multiselect("Bit depth", options["bit_depths"], key=f"{key}_depth"),
        colours=sb.multiselect("Gray / colour", options["colours"], key=f"{key}_colour"),
        codecs=sb.multiselect("Codecs", options["codecs"], key=f"{key}_codecs"),
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
