"""Plotly figures of the dashboard: rate–distortion and downstream curves."""
from __future__ import annotations

import numpy as np
import pandas as pd

from core.dashboard.rd import RD_METRICS


def rd_figure(points: pd.DataFrame, metric: str, x: str = "bpp", x_label: str = "bits per pixel (bpp)",
              y_label: str | None = None, per_image: bool = False, markers: pd.DataFrame | None = None,
              height: int = 520):
    """Plotly figure: one line per codec (and dataset / image); learned solid, classical dashed.

    Hover shows codec, setting and image.  ``markers`` (columns ``curve``, ``x``, ``y``, ``label``)
    are drawn as large symbols on top (e.g. Dice-safe operating points).
    """
    import plotly.graph_objects as go

    fig = go.Figure()
    datasets = points["dataset"].nunique() if "dataset" in points else 1
    group_cols = ["curve", "dataset"] + (["image_id"] if per_image else [])
    colours = palette(sorted(points["curve"].unique()) if len(points) else [])
    shown: set = set()
    for keys, part in points.groupby(group_cols, sort=True):
        curve, dataset = keys[0], keys[1]
        name = curve if datasets == 1 else f"{curve} · {dataset}"
        learned = (part["family"] == "learned").any()
        part = part.sort_values(x)
        fig.add_trace(go.Scatter(
            x=part[x], y=part["y"], mode="lines+markers", name=name,
            line=dict(dash="solid" if learned else "dash", color=colours[curve], width=1 if per_image else 2),
            marker=dict(size=5 if per_image else 7),
            customdata=np.stack([part["codec"], part["setting"], part["image_id"], part["dataset"]], axis=-1),
            hovertemplate=("codec %{customdata[0]}<br>setting %{customdata[1]}<br>image %{customdata[2]}"
                           "<br>dataset %{customdata[3]}<br>" + x + " %{x:.4g}<br>" + metric
                           + " %{y:.4g}<extra></extra>"),
            legendgroup=curve, showlegend=not per_image or curve not in shown,
        ))
        shown.add(curve)
    if markers is not None and len(markers):
        fig.add_trace(go.Scatter(x=markers["x"], y=markers["y"], mode="markers", name="Dice-safe point",
                                 marker=dict(symbol="star", size=16, color="black"),
                                 text=markers["label"], hovertemplate="%{text}<extra></extra>"))
    fig.update_layout(xaxis_title=x_label, yaxis_title=y_label or RD_METRICS.get(metric, metric),
                      legend_title="codec (solid = learned, dashed = classical)", height=height,
                      legend=dict(orientation="h", yanchor="top", y=-0.18, x=0),
                      margin=dict(l=10, r=10, t=30, b=10))
    return fig


def palette(names: list[str]) -> dict[str, str]:
    """A fixed colour per curve name (Plotly's qualitative palettes, in order)."""
    import plotly.express as px

    colours = px.colors.qualitative.Plotly + px.colors.qualitative.Dark24
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}
