"""End-to-end: the dashboard served by `streamlit run` on 127.0.0.1, driven in Debian's headless
Chromium (/usr/bin/chromium) by Python playwright.  No test tool downloads a browser: playwright is
pointed at the system executable.  A screenshot of each page is kept under artifacts/screenshots/
(git-ignored)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason="Debian chromium not installed at /usr/bin/chromium "
                                       "(bash scripts/install.sh installs it)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(results_db, tmp_path_factory):
    """`streamlit run app.py ... -- --db TEST_DB` (the CLI way of choosing the database); yields the base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "BIOCODEC_DB"}
    env["OMP_NUM_THREADS"] = "1"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false", "--", "--db", str(results_db)], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    sync_api = pytest.importorskip("playwright.sync_api", reason="python playwright not installed")
    profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 2400})
        try:
            yield context.new_page()
        finally:
            context.close()


def _open(page, url: str, title: str, shot: str, ready: str) -> None:
    """Go to ``url``, wait for its script to finish and the element ``ready`` (a CSS selector) to render,
    check that it raised nothing, and screenshot it."""
    page.goto(url)
    page.get_by_role("heading", name=title).first.wait_for(timeout=90_000)
    _settle(page)
    page.locator(ready).first.wait_for(timeout=60_000)  # lazily loaded components (plots, grids) drawn
    page.wait_for_timeout(500)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{shot}.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0, page.inner_text("body")[:2000]


def _settle(page) -> None:
    """Wait until Streamlit reports no script running (the status widget disappears)."""
    page.wait_for_timeout(500)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)
    page.wait_for_timeout(500)


def _sql(db, query):
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(query).fetchall()
    finally:
        con.close()


def test_every_page_in_chromium(server, browser_page, results_db, gray_png_bytes, tmp_path):
    page = browser_page

    # a deep link as the very first request to a fresh server must still go through app.py's router
    # (a folder named pages/ would be served as an unrouted second app: regression check)
    _open(page, f"{server}/rate_distortion", "Rate–distortion", "00_deep_link", ".js-plotly-plot")
    first_nav = page.locator('[data-testid="stSidebarNav"]').inner_text().split("\n")
    assert "Rate–distortion" in first_nav and "ui" not in first_nav and "app" not in first_nav, first_nav

    _open(page, server, "BioCodec Bench — overview", "01_overview", '[data-testid="stDataFrame"]')
    assert str(results_db) in page.locator('[data-testid="stSidebar"]').inner_text()  # -- --db was used
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    for title in ("Overview", "Rate–distortion", "Side by side", "Downstream", "Live comparison", "Export"):
        assert title in nav
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert values[5] == str(_sql(results_db, "SELECT count(*) FROM results")[0][0])  # "Rows"

    _open(page, f"{server}/rate_distortion", "Rate–distortion", "02_rate_distortion", ".js-plotly-plot")
    assert page.locator(".js-plotly-plot").count() >= 1

    _open(page, f"{server}/side_by_side", "Side by side", "03_side_by_side", '[data-testid="stImage"] img')
    # defaults: first image and codec by name, joint mode, the middle setting by rate
    sizes = [b for (b,) in _sql(results_db, """
        SELECT bytes FROM results WHERE stage = 0 AND image_id = 'camera' AND codec = 'jpeg'
          AND colour_mode = 'joint' AND error IS NULL ORDER BY bpp""")]
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text() == f"{sizes[len(sizes) // 2]:,}"
    assert page.locator('[data-testid="stImage"] img').count() >= 6  # 2 full, 3 crops, 1 heat map
    assert "8-bit, shown as stored" in page.inner_text("body")

    _open(page, f"{server}/downstream", "Downstream segmentation fidelity", "04_downstream", ".js-plotly-plot")
    assert page.locator(".js-plotly-plot").count() >= 1

    _open(page, f"{server}/live", "Live comparison", "05_live_empty", '[data-testid="stFileUploader"]')
    upload = tmp_path / "crop.png"
    upload.write_bytes(gray_png_bytes)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(upload))
    page.get_by_role("button", name="Compress").wait_for(timeout=60_000)
    _settle(page)
    page.get_by_role("button", name="Compress").click()
    page.get_by_text("Results", exact=True).wait_for(timeout=120_000)
    _settle(page)
    page.locator('[data-testid="stDownloadButton"]').first.wait_for(timeout=60_000)
    from core.codecs import get_codec
    from core.evaluate import evaluate
    from core.io import read_image_bytes

    jpeg2000 = get_codec("jpeg2000")
    middle = jpeg2000.default_settings[len(jpeg2000.default_settings) // 2]
    m = evaluate(read_image_bytes(gray_png_bytes, "crop.png"), jpeg2000, middle).metrics
    body = page.inner_text("body")
    assert f"jpeg2000 @ {middle}: {m['bpp']:.3f} bpp, PSNR {m['psnr']:.2f} dB" in body
    assert "jpegxl @ " in body and f"Download jpeg2000 file ({m['bytes']:,} bytes)" in body
    assert page.locator('[data-testid="stImage"] img').count() >= 3  # original + 2 reconstructions
    page.screenshot(path=str(SHOTS / "06_live_results.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0

    _open(page, f"{server}/export", "Export", "07_export", '[data-testid="stDownloadButton"]')
    assert page.get_by_role("button", name="Download CSV").count() == 1
    assert page.get_by_role("button", name="Download Parquet").count() == 1
