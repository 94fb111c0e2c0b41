"""Downstream: segmentation fidelity vs compression factor, and each codec's Dice-safe operating point."""
import streamlit as st

from core.dashboard import data, figures, rd
from views import _ui

st.title("Downstream segmentation fidelity")
snap = _ui.snapshot()
filters = _ui.sidebar_filters(snap.results, "ds")
rows = data.apply_filters(snap.results, filters)
present = [m for m in rd.DOWNSTREAM_METRICS if m in rows and rows[m].notna().any()]
if not present:
    st.info("No downstream metrics in this selection. Stages 2 (EM) and 3 (H&E nuclei) compute them: "
            "`python -m core.runner --stage 2 --data-root ../shared/data`. "
            f"Selection: {data.selection_note(snap.results, filters)}.")
    st.stop()

c1, c2 = st.columns([2, 1])
metric = c1.selectbox("Metric (y)", present, format_func=rd.DOWNSTREAM_METRICS.get, key="ds_metric")
threshold = c2.number_input("Dice-safe threshold", min_value=0.0, max_value=1.0, value=0.95, step=0.01,
                            key="ds_threshold", help="Smallest acceptable mean Dice (reconstruction vs original)")

with_metric = rows[rows[metric].notna()]
points = rd.downstream_points(rows, metric)
safe, notice = rd.dice_safe_points(rows, threshold)
markers = rd.safe_point_markers(safe, points) if metric == "seg_dice" else None
fig = figures.rd_figure(points, metric, x="factor", x_label="compression factor (raw bytes / encoded bytes)",
                        y_label=rd.DOWNSTREAM_METRICS[metric], markers=markers)
fig.update_xaxes(type="log")
st.plotly_chart(fig, key="ds_plot")
st.caption(f"Means over the images of each dataset, {data.rows_note(len(with_metric), filters.include_training)} "
           f"with {metric}; learned codecs solid, classical dashed"
           + ("; ★ = Dice-safe operating point." if markers is not None and len(markers) else "."))

st.subheader(f"Dice-safe operating points (mean Dice ≥ {threshold:g})")
if notice:
    st.warning(notice)
else:
    st.dataframe(safe, hide_index=True, key="ds_safe")
    st.caption(f"From {data.selection_note(snap.results, filters)}: the largest mean compression factor whose "
               "mean Dice (and that of every weaker setting) meets the threshold.")

with st.expander("Plotted points"):
    st.dataframe(points, hide_index=True, key="ds_points")
