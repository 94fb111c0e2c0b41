"""Rate–distortion: quality vs bits per pixel, with the BD-rate table beside the plot."""
import streamlit as st

from core import dashboard as dash
from views import _ui

st.title("Rate–distortion")
snap = _ui.snapshot()
filters = _ui.sidebar_filters(snap.results, "rd")
rows = dash.apply_filters(snap.results, filters)

c1, c2, c3 = st.columns([2, 1, 1])
metric = c1.selectbox("Quality metric (y)", list(dash.RD_METRICS), format_func=dash.RD_METRICS.get, index=0,
                      key="rd_metric")
view = c2.radio("View", ["mean", "per_image"], format_func={"mean": "dataset mean",
                                                          "per_image": "per image"}.get, key="rd_view",
                horizontal=True)
codecs = sorted(rows["codec"].unique())
anchor_default = codecs.index("jpeg2000") if "jpeg2000" in codecs else 0
anchor = c3.selectbox("BD-rate anchor", codecs or ["jpeg2000"], index=anchor_default, key="rd_anchor")

points, dropped = dash.rd_points(rows, metric, view)
st.caption("Tip: pick one dataset in the sidebar — curves of different image sets are not comparable.")
plot_col, table_col = st.container(), st.container()  # plot full width, BD-rate table below it
with plot_col:
    if points.empty:
        st.info(f"No rows with a finite {dash.RD_METRICS[metric]} for this selection.")
    else:
        st.plotly_chart(dash.rd_figure(points, metric, per_image=view == "per_image"), key="rd_plot",
                        width="stretch")
    st.caption(f"{len(points)} points from {len(rows)} rows. Learned codecs solid, classical dashed. "
               + (f"{dropped} rows without a finite value (e.g. exact lossless reconstructions, PSNR = ∞, "
                  "or a metric this stage does not compute) are not drawn." if dropped else ""))
with table_col:
    st.subheader(f"BD-rate vs {anchor}")
    stage, dataset = _ui.only(filters.stages), _ui.only(filters.datasets)
    with st.spinner("Computing BD-rates…"):
        table, notice = _ui.bd_rate(metric, anchor, stage, dataset, filters.codecs)
    if notice:
        st.warning(notice)
    else:
        st.dataframe(dash.bd_rate_display(table), hide_index=True, key="rd_bdrate")
    st.caption(f"Metric {metric}; stage {stage if stage is not None else 'all'}, dataset "
               f"{dataset if dataset is not None else 'all'} (pick exactly one in the sidebar to narrow). "
               "Negative BD-rate = fewer bits than the anchor at equal quality.")

with st.expander("Plotted points"):
    st.dataframe(points, hide_index=True, key="rd_points")
