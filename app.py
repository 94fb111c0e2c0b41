"""BioCodec Bench dashboard.

    streamlit run app.py                       # results.duckdb in the repo root
    streamlit run app.py -- --db other.duckdb  # or BIOCODEC_DB=other.duckdb
    streamlit run app.py -- --data-root ../shared/data   # where stage images live (side by side)

Every page uses held-out rows (images no model involved has seen) unless its checkbox "include images
seen in training" is ticked; computations live in the core.dashboard package.
"""
import streamlit as st

st.set_page_config(page_title="BioCodec Bench", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", default=True),
    st.Page("views/rate_distortion.py", title="Rate–distortion"),
    st.Page("views/side_by_side.py", title="Side by side"),
    st.Page("views/downstream.py", title="Downstream"),
    st.Page("views/live.py", title="Live comparison"),
    st.Page("views/export.py", title="Export"),
]

page = st.navigation(PAGES)  # before any heavy import, so the menu appears at once

from views import _ui  # noqa: E402

with st.sidebar:
    st.caption(f"Database: `{_ui.db_path()}`")
    if st.button("Reload data", key="reload_data", help="Read the database again (after a runner wrote to it)"):
        st.cache_data.clear()
page.run()
