"""Rate–distortion: quality vs bits per pixel beside segmentation Dice vs bits per pixel, with the BD-rate
table below.  Opens on one held-out EM dataset (stage 2) with the learned codec, JPEG 2000 and AVIF."""
import dataclasses

import streamlit as st

from core.dashboard import data, figures, rd
from views import _ui

st.title("Rate–distortion")
snap = _ui.snapshot()
filters = _ui.sidebar_filters(snap.results, "rd", opening=True)
rows = data.apply_filters(snap.results, filters)
rows_note = data.selection_note(snap.results, filters)

c1, c2, c3 = st.columns([2, 1, 1])
metric = c1.selectbox("Quality metric (y)", list(rd.RD_METRICS), format_func=rd.RD_METRICS.get, index=0,
                      key="rd_metric")
view = c2.radio("View", ["mean", "per_image"], format_func={"mean": "dataset mean",
                                                          "per_image": "per image"}.get, key="rd_view",
                horizontal=True)
codecs = data.filter_options(snap.results)["codecs"]  # every codec (stable options: the anchor stays put)
anchor_default = codecs.index("jpeg2000") if "jpeg2000" in codecs else 0
anchor = c3.selectbox("BD-rate anchor", codecs or ["jpeg2000"], index=anchor_default, key="rd_anchor")

points, dropped = rd.rd_points(rows, metric, view)
if len(filters.datasets) != 1:
    st.caption("Tip: pick one dataset in the sidebar — curves of different image sets are not comparable.")
left, right = st.columns(2)
if points.empty:
    left.info(f"No rows with a finite {rd.RD_METRICS[metric]} for this selection.")
else:
    left.plotly_chart(figures.rd_figure(points, metric, per_image=view == "per_image", height=460), key="rd_plot",
                      width="stretch")
left.caption(f"{len(points)} points from {rows_note}. Learned codecs solid, classical dashed. "
             + (f"{dropped} rows without a finite value (e.g. exact lossless reconstructions, PSNR = ∞, "
                "or a metric this stage does not compute) are not drawn." if dropped else ""))
note = data.grain_note(rows["codec"].unique())
if note:
    st.info(note)
dice = rd.downstream_points(rows, "seg_dice")
if dice.empty:
    right.info("No segmentation Dice in this selection: stages 2 (EM) and 3 (H&E nuclei) compute it.")
else:
    right.plotly_chart(figures.rd_figure(dice, "seg_dice", y_label=rd.DOWNSTREAM_METRICS["seg_dice"], height=460),
                       key="rd_dice_plot", width="stretch")
    right.caption(f"Mean Dice of the reconstruction's segmentation vs the original's (1 = same analysis) per "
                  f"setting, {len(dice)} points; the Downstream page has the Dice-safe points.")

st.subheader(f"BD-rate vs {anchor}")
# the anchor's rows stay in (every filter but the codec list); the table then keeps the chosen codecs
bd_rows = data.apply_filters(snap.results, dataclasses.replace(filters, codecs=[]))
with st.spinner("Computing BD-rates…"):
    table, notice = rd.bd_rate(bd_rows, metric, anchor, filters.codecs)
if notice:
    st.warning(notice)
else:
    table = rd.overlap_points(bd_rows, table, metric, anchor)
    st.dataframe(rd.bd_rate_display(table), hide_index=True, key="rd_bdrate")
    few = rd.few_points_note(table)
    if few:
        st.warning(few)
st.caption(f"Metric {metric}; {data.rows_note(len(bd_rows), filters.include_training)}, per stage and dataset. "
           f"{rd.BD_RULE} *points in overlap*: the fewer, of the two curves, of points inside the quality range both "
           "cover. Negative BD-rate = fewer bits than the anchor at equal quality.")

with st.expander("Plotted points"):
    st.dataframe(points, hide_index=True, key="rd_points")
