"""Rate–distortion: quality vs bits per pixel, with the BD-rate table below the plot."""
import dataclasses

import streamlit as st

from core.dashboard import data, figures, rd
from views import _ui

st.title("Rate–distortion")
snap = _ui.snapshot()
filters = _ui.sidebar_filters(snap.results, "rd")
rows = data.apply_filters(snap.results, filters)
rows_note = data.selection_note(snap.results, filters)

c1, c2, c3 = st.columns([2, 1, 1])
metric = c1.selectbox("Quality metric (y)", list(rd.RD_METRICS), format_func=rd.RD_METRICS.get, index=0,
                      key="rd_metric")
view = c2.radio("View", ["mean", "per_image"], format_func={"mean": "dataset mean",
                                                          "per_image": "per image"}.get, key="rd_view",
                horizontal=True)
codecs = sorted(rows["codec"].unique())
anchor_default = codecs.index("jpeg2000") if "jpeg2000" in codecs else 0
anchor = c3.selectbox("BD-rate anchor", codecs or ["jpeg2000"], index=anchor_default, key="rd_anchor")

points, dropped = rd.rd_points(rows, metric, view)
st.caption("Tip: pick one dataset in the sidebar — curves of different image sets are not comparable.")
if points.empty:
    st.info(f"No rows with a finite {rd.RD_METRICS[metric]} for this selection.")
else:
    st.plotly_chart(figures.rd_figure(points, metric, per_image=view == "per_image"), key="rd_plot",
                    width="stretch")
st.caption(f"{len(points)} points from {rows_note}. Learned codecs solid, classical dashed. "
           + (f"{dropped} rows without a finite value (e.g. exact lossless reconstructions, PSNR = ∞, "
              "or a metric this stage does not compute) are not drawn." if dropped else ""))

st.subheader(f"BD-rate vs {anchor}")
# the anchor's rows stay in (every filter but the codec list); the table then keeps the chosen codecs
bd_rows = data.apply_filters(snap.results, dataclasses.replace(filters, codecs=[]))
with st.spinner("Computing BD-rates…"):
    table, notice = rd.bd_rate(bd_rows, metric, anchor, filters.codecs)
if notice:
    st.warning(notice)
else:
    st.dataframe(rd.bd_rate_display(table), hide_index=True, key="rd_bdrate")
st.caption(f"Metric {metric}; {data.rows_note(len(bd_rows), filters.include_training)}, per stage and dataset. "
           f"{rd.BD_RULE} Negative BD-rate = fewer bits than the anchor at equal quality.")

with st.expander("Plotted points"):
    st.dataframe(points, hide_index=True, key="rd_points")
