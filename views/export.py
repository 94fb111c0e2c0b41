"""Export: the filtered results as CSV and Parquet."""
import streamlit as st

from core.dashboard import data, export
from views import _ui

st.title("Export")
snap = _ui.snapshot()
filters = _ui.sidebar_filters(snap.results, "ex", errors_option=True)
rows = data.apply_filters(snap.results, filters)

st.metric("Rows selected", len(rows))
st.caption(data.selection_note(snap.results, filters))
c1, c2 = st.columns(2)
c1.download_button("Download CSV", lambda: export.to_csv_bytes(rows), file_name="biocodec_results.csv", mime="text/csv",
                   key="ex_csv", on_click="ignore")
c2.download_button("Download Parquet", lambda: export.to_parquet_bytes(rows), file_name="biocodec_results.parquet",
                   mime="application/vnd.apache.parquet", key="ex_parquet", on_click="ignore")
st.caption("Columns and units are those of the `results` table (core/store.py RESULT_COLUMNS), plus "
           "ms_ssim_db (dB), family, colour and held_out (no model involved saw the image) added by the dashboard.")
st.dataframe(rows, hide_index=True, key="ex_rows")
