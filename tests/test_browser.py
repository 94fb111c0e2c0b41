"""End-to-end: the dashboard served by `streamlit run` on 127.0.0.1, driven in Debian's headless
Chromium (/usr/bin/chromium) by Python playwright.  No test tool downloads a browser: playwright is
pointed at the system executable.  A screenshot of each page (1400 px wide) is kept under
artifacts/screenshots/ (git-ignored), or under $BIOCODEC_SCREENSHOTS when set."""
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
SHOTS = Path(os.environ.get("BIOCODEC_SCREENSHOTS") or ROOT / "artifacts" / "screenshots")
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


def _pick(page, label: str, option: str) -> None:
    """Choose ``option`` in the Streamlit selectbox labelled ``label`` and wait for the rerun."""
    page.get_by_role("combobox", name=label, exact=True).first.click()
    page.get_by_role("option", name=option, exact=True).first.click()
    _settle(page)


def _boxes_disjoint(boxes: list[dict]) -> bool:
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            if (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
                    and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"]):
                return False
    return True


def _native_panels(page, test_id: str) -> list[dict]:
    """Each 1:1 panel of ``test_id``: its box and its image's natural and drawn size."""
    return page.locator(f'[data-testid="{test_id}"] figure.bc-panel').evaluate_all("""els => els.map(f => {
        const img = f.querySelector('img.bc-native'), r = f.getBoundingClientRect(), i = img.getBoundingClientRect();
        return {box: {x: r.x, y: r.y, width: r.width, height: r.height},
                natural: [img.naturalWidth, img.naturalHeight], drawn: [i.width, i.height], alt: img.alt,
                right: r.right};
    })""")


def _drag_divider(page, prefix: str, dx: float) -> tuple[int, int, str]:
    """Drag the split view's divider by ``dx`` px; (split before, after, the right layer's clip-path)."""
    frame = page.frame_locator("iframe").first
    stage = frame.locator(f"#{prefix}split")
    before = int(stage.get_attribute("data-split"))
    divider = frame.locator(f"#{prefix}split-divider")
    divider.scroll_into_view_if_needed()
    box = divider.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + min(box["height"] / 2, 40)
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx, y, steps=6)
    page.mouse.up()
    after = int(stage.get_attribute("data-split"))
    return before, after, frame.locator(f"#{prefix}split-right").get_attribute("style")


def test_every_page_in_chromium(server, browser_page, results_db, gray_png_bytes, tmp_path):
    page = browser_page

    # Streamlit's running indicator shows while a script runs (config.toml: toolbarMode "viewer";
    # "minimal" hid it): the first page of a fresh server takes seconds to import
    page.goto(f"{server}/rate_distortion")
    page.locator('[data-testid="stStatusWidget"]').first.wait_for(state="visible", timeout=60_000)

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

    # opens on one stage-2 dataset: the RD chart beside the Dice-vs-bpp chart
    _open(page, f"{server}/rate_distortion", "Rate–distortion", "02_rate_distortion", ".js-plotly-plot")
    page.locator(".js-plotly-plot").nth(1).wait_for(timeout=60_000)
    plots = [page.locator(".js-plotly-plot").nth(i).bounding_box() for i in range(2)]
    assert abs(plots[0]["y"] - plots[1]["y"]) < 5 and _boxes_disjoint(plots)  # side by side, not overlapping

    # side by side: two stored codecs of the embedded camera at matched bpp, compared pixel for pixel
    _open(page, f"{server}/side_by_side", "Side by side", "03_side_by_side_opening", '[data-testid="stSelectbox"]')
    _pick(page, "Stage", "0")
    _pick(page, "Image", "camera")
    _pick(page, "Codec A", "jpeg")
    _pick(page, "Codec B", "jpeg2000")
    page.locator('[data-testid="sbs-panels"]').wait_for(timeout=60_000)
    _settle(page)
    page.screenshot(path=str(SHOTS / "03_side_by_side.png"), full_page=True)
    panels = _native_panels(page, "sbs-panels")
    assert [p["natural"] for p in panels] == [[512, 512]] * 3
    assert all(p["drawn"] == [512, 512] for p in panels)  # 1:1, never shrunk to the column
    assert _boxes_disjoint([p["box"] for p in panels])
    body = page.inner_text("body")
    assert "vs target" in body and ("compared at matched bpp" in body or "Not at matched bpp" in body)
    before, after, clip = _drag_divider(page, "sbs", -100)
    assert before == 256 and after < before - 50 and clip.replace(" ", "") == f"clip-path:inset(0px0px0px{after}px);"
    assert page.locator('[data-testid="stException"]').count() == 0

    _open(page, f"{server}/downstream", "Downstream segmentation fidelity", "04_downstream", ".js-plotly-plot")
    assert page.locator(".js-plotly-plot").count() >= 1

    # live: upload, two classical codecs at a target bpp (the learned codec, preselected, is taken out: slow)
    _open(page, f"{server}/live", "Live comparison", "05_live_empty", '[data-testid="stFileUploader"]')
    upload = tmp_path / "crop.png"
    upload.write_bytes(gray_png_bytes)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(upload))
    page.get_by_role("button", name="Compress").wait_for(timeout=60_000)
    _settle(page)
    codecs = page.locator('[data-testid="stMultiSelect"]').filter(has_text="Codecs").first
    tags = codecs.locator('.react-aria-ComboBox [data-tag]')
    assert [tags.nth(i).get_attribute("aria-label") for i in range(tags.count())] == \
        ["learned-msssim", "jpeg2000", "avif"]  # preselected: learned vs JPEG 2000 vs AVIF
    codecs.locator('.react-aria-ComboBox').get_by_role("button", name="Remove learned-msssim").click()
    _settle(page)
    page.get_by_role("button", name="Compress").click()
    page.get_by_text("Results", exact=True).wait_for(timeout=120_000)
    _settle(page)
    page.locator('[data-testid="live-panels"]').wait_for(timeout=60_000)
    from core.dashboard.live import search_setting
    from core.codecs import get_codec
    from core.io import read_image_bytes

    image = read_image_bytes(gray_png_bytes, "crop.png")
    body = page.inner_text("body")
    for name in ("jpeg2000", "avif"):
        found = search_setting(image, get_codec(name), 0.5)
        bpp = found.evaluation.metrics["bpp"]
        assert f"{name} @ {found.setting}: achieved {bpp:.3f} bpp ({100 * (bpp / 0.5 - 1):+.1f} % vs target 0.500 bpp)" \
            in body
    assert "Done: 2 codec(s) in" in body
    panels = _native_panels(page, "live-panels")
    assert len(panels) == 3 and panels[0]["alt"] == "original"
    assert all(p["natural"] == [192, 192] and p["drawn"] == [192, 192] for p in panels)  # native size
    assert _boxes_disjoint([p["box"] for p in panels])  # the result images do not overlap
    main = page.locator('[data-testid="stMain"]').bounding_box()
    assert all(p["right"] <= main["x"] + main["width"] for p in panels)  # nothing runs off the right edge
    before, after, clip = _drag_divider(page, "live", -60)
    assert before == 96 and after < before - 30 and f"{after}px" in clip
    page.screenshot(path=str(SHOTS / "06_live_results.png"), full_page=True)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.get_by_role("button", name="Download jpeg2000 reconstruction (PNG)").count() == 1

    _open(page, f"{server}/export", "Export", "07_export", '[data-testid="stDownloadButton"]')
    assert page.get_by_role("button", name="Download CSV").count() == 1
    assert page.get_by_role("button", name="Download Parquet").count() == 1
