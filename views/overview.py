"""Overview: what the results database holds, and where it came from."""
import streamlit as st

from core import dashboard as dash
from views import _ui

st.title("BioCodec Bench — overview")
snap = _ui.snapshot()
counts = dash.overview_counts(snap.results)

cols = st.columns(8)
for col, (label, key) in zip(cols, [("Stages", "stages"), ("Datasets", "datasets"), ("Images", "images"),
                                     ("Codecs", "codecs"), ("Codec settings", "settings"), ("Rows", "rows"),
                                     ("Successful rows", "ok_rows"), ("Errors", "errors")]):
    col.metric(label, counts[key])

st.subheader("By stage and dataset")
st.dataframe(dash.overview_by_dataset(snap.results), hide_index=True, key="ov_datasets")
st.subheader("By codec")
st.dataframe(dash.overview_by_codec(snap.results), hide_index=True, key="ov_codecs")

st.subheader("Errors")
errors = dash.error_rows(snap.results)
if errors.empty:
    st.success("No failed rows.")
else:
    st.dataframe(errors, hide_index=True, key="ov_errors")

st.subheader("Provenance of the runs")
st.caption("One row per `python -m core.runner` invocation (times in UTC).")
st.dataframe(dash.provenance(snap.runs), hide_index=True, key="ov_runs")
