"""Queries and computations behind the Streamlit dashboard (``app.py`` + ``views/``), one module per
concern, all plain Python (pandas, numpy, plotly) so they are testable without a browser; the pages
only lay out widgets and call these functions.

=============================  ===========================================================================
:mod:`core.dashboard.data`     locating the database / data root, read-only snapshots, filters, the
                               held-out row selection, overview tables, a stored row's image reference
:mod:`core.dashboard.rd`       rate–distortion / downstream points (core.bdrate's mean curve), BD-rate
                               tables (core.bdrate), Dice-safe points (core.downstream)
:mod:`core.dashboard.figures`  Plotly figures
:mod:`core.dashboard.imaging`  windowing, zoom, difference heat maps, segmentation overlays, PNG bytes
:mod:`core.dashboard.live`     uploads, codecs for an image, target-bpp search, live compression and
                               re-encoding of stored rows (core.pipeline + core.evaluate)
:mod:`core.dashboard.export`   CSV / Parquet bytes
=============================  ===========================================================================

Every view uses **held-out rows** (no model involved saw the image) unless its checkbox
"include images seen in training" is ticked, and states how many rows it uses.
"""
