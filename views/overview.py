"""Overview: what the results database holds, and where it came from."""
import streamlit as st

from core.dashboard import data
from views import _ui

st.title("BioCodec Bench — overview")
snap = _ui.snapshot()


def show_live_runs(runs) -> bool:
    """Progress of runs without ``finished_at`` (rows so far, rows left); True if one is still writing."""
    writing = False
    for run in data.live_runs(runs).to_dict("records"):
        counts = f"{run['rows written']:,} of {run['rows planned']:,} rows"
        if run["status"] == "running":
            writing = True
            st.progress(min(run["done %"] / 100.0, 1.0), text=f"Run `{run['run_id']}` is writing: {counts}, "
                        f"{run['rows left']:,} left (last batch {run['last write (s ago)']} s ago)")
        else:
            st.warning(f"Run `{run['run_id']}` stopped at {counts} (no write for {run['last write (s ago)']} s): "
                       f"run the same command again to compute the {run['rows left']:,} rows left.")
    return writing


@st.fragment(run_every="5s")
def live_run_progress() -> None:
    """Refreshes every 5 s while a run writes; when it has finished, the whole page reloads once."""
    if not show_live_runs(_ui.snapshot().runs):
        st.rerun()


if (data.live_runs(snap.runs)["status"] == "running").any():
    live_run_progress()
else:
    show_live_runs(snap.runs)
include_training = _ui.include_training_checkbox("ov_training")
results = data.select_rows(snap.results, include_training)
counts = data.overview_counts(results)
st.caption(data.rows_note(len(results), include_training, len(snap.results) - len(results)))

cols = st.columns(8)
for col, (label, key) in zip(cols, [("Stages", "stages"), ("Datasets", "datasets"), ("Images", "images"),
                                     ("Codecs", "codecs"), ("Codec settings", "settings"), ("Rows", "rows"),
                                     ("Successful rows", "ok_rows"), ("Errors", "errors")]):
    col.metric(label, counts[key])

st.subheader("By stage and dataset")
st.dataframe(data.overview_by_dataset(results), hide_index=True, key="ov_datasets")
st.subheader("By codec")
st.dataframe(data.overview_by_codec(results), hide_index=True, key="ov_codecs")

st.subheader("Errors")
errors = data.error_rows(results)
if errors.empty:
    st.success("No failed rows.")
else:
    st.dataframe(errors, hide_index=True, key="ov_errors")

st.subheader("Provenance of the runs")
st.caption("One row per `python -m core.runner` invocation (times in UTC).")
st.dataframe(data.provenance(snap.runs), hide_index=True, key="ov_runs")
