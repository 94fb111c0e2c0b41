"""Downstream: segmentation fidelity vs compression factor, and each codec's Dice-safe operating point."""
import streamlit as st

from core.dashboard import data, figures, rd
from views import _ui

st.title("Downstream segmentation fidelity")
snap = _ui.snapshot()
filters = _ui.sidebar_filters(snap.results, "ds", opening=True)
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
floors = rd.noise_floor()
ceiling = rd.noise_floor_lines(floors, metric, points["dataset"].unique())
fig = figures.rd_figure(points, metric, x="factor", x_label="compression factor (raw bytes / encoded bytes)",
                        y_label=rd.DOWNSTREAM_METRICS[metric], markers=markers)
rd.add_noise_floor(fig, ceiling)
fig.update_xaxes(type="log")
st.plotly_chart(fig, key="ds_plot")
st.caption(f"Means over the images of each dataset, {data.rows_note(len(with_metric), filters.include_training)} "
           f"with {metric}; learned codecs solid, classical dashed"
           + ("; ★ = Dice-safe operating point" if markers is not None and len(markers) else "")
           + ("; dotted line per dataset = segmenter noise floor: the segmenter's mean agreement with itself when "
              "the original gets σ=0.5 grey-level noise (grey band: up to its value under a 1-px shift; "
              "data/models/noise_floor.json). A codec near the line changes the analysis no more than that."
              if len(ceiling) else "."))

note = data.grain_note(with_metric["codec"].unique())
if note:
    st.info(note)

st.subheader(f"Dice-safe operating points (mean Dice ≥ {threshold:g})")
if notice:
    st.warning(notice)
else:
    st.dataframe(safe, hide_index=True, key="ds_safe")
    st.caption(f"From {data.selection_note(snap.results, filters)}: the largest mean compression factor whose "
               "mean Dice (and that of every weaker setting) meets the threshold.")

st.subheader("Dice-safe point judged two ways: agreement and ground truth")
two_way, two_way_notice = rd.dice_safe_two_way_points(rows, floors)
if two_way_notice:
    st.warning(two_way_notice)
else:
    st.dataframe(two_way, hide_index=True, key="ds_two_way")
    st.caption(rd.two_way_rule() + f" From {data.selection_note(snap.results, filters)}.")

if floors:
    with st.expander("Segmenter noise floor (σ=0.5 noise / 1-px shift)"):
        st.dataframe(rd.noise_floor_table(floors), hide_index=True, key="ds_noise_floor")

with st.expander("Plotted points"):
    st.dataframe(points, hide_index=True, key="ds_points")
