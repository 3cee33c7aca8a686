"""The exported HTML page in a real headless Chromium: labels, picking and the lens, checked in
its screenshot (Debian's chromium + chromium-driver; scripts/test.sh installs them)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from layerscan.geometry.scene.export import export_html
from layerscan.geometry.scene.style import token_colors
from tests.synthetic_scan import make_scan

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
BACKGROUND = np.array([0x0E, 0x11, 0x17])

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None or DRIVER is None,
        reason="chromium or chromedriver not installed (scripts/test.sh installs them)",
    ),
]


@pytest.fixture(scope="module")
def browser():
    selenium = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")
    options.binary_location = CHROMIUM
    driver = selenium.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver) -> np.ndarray:
    import io

    import imageio.v3 as iio

    return iio.imread(io.BytesIO(driver.get_screenshot_as_png()))[..., :3]  # (h, w, 3)


def test_page_shows_labels_picks_and_the_lens(browser, tmp_path):
    scan = make_scan(n_layers=4, n_particles=256, n_tokens=8, seed=1)
    page = export_html(scan, tmp_path / "scan.html")
    browser.get(page.resolve().as_uri())
    browser.execute_script("window.layerscan.show(2)")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    labels = browser.execute_script(
        "return window.layerscan.panels[0].labels.map(l => [l.token, l.text, ...l.box])"
    )
    assert sorted(label[0] for label in labels) == list(range(8))  # every token labelled
    boxes = np.array([label[2:] for label in labels])
    for i, a in enumerate(boxes):  # no two labels overlap
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    image = screenshot(browser)
    h, w = image.shape[:2]
    canvas = image[: h - 64]
    assert (np.abs(canvas.astype(int) - BACKGROUND).sum(-1) > 60).mean() > 0.01  # not blank
    colors = np.round(token_colors(8) * 255)
    for token, _text, x0, y0, _x1, y1 in labels:  # each label is drawn in its token's colour
        pixel = image[int(round((y0 + y1) / 2)), int(round(x0)) + 2]
        assert np.abs(pixel - colors[token]).max() <= 3, (token, pixel)
    # picking a token shows its name and its logit lens, and frames its chip
    browser.execute_script("window.layerscan.pick(0, 3)")
    lens = browser.find_element("css selector", ".lens").text
    head = browser.find_element("css selector", ".head").text
    assert "logit lens after “␣fox”" in lens and "token 3 “␣fox”" in head
    assert "token trust:" in head  # the caption explains the figures
    chip = browser.find_element("css selector", '.tok[data-i="3"]')
    assert "focus" in chip.get_attribute("class")


def test_page_draws_the_arcs_and_the_strip(browser, tmp_path):
    from layerscan.geometry.attention_summary import select_arcs
    from layerscan.geometry.scene.component_strip import ATTENTION_COLOR, MLP_COLOR
    from tests.synthetic_scan import make_activity_scan

    scan = make_activity_scan(n_layers=3, n_tokens=7, n_particles=210)
    page = export_html(scan, tmp_path / "scan.html")
    browser.get(page.resolve().as_uri())
    browser.execute_script("window.layerscan.show(2)")
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    arcs = select_arcs(scan.attention, 1, None, 7)
    drawn = browser.execute_script("return window.layerscan.panels[0].arcs.arcs")
    assert [(q, k) for q, k, _ in drawn] == list(zip(arcs.queries, arcs.keys, strict=True))
    head = browser.find_element("css selector", ".head").text
    assert f"arcs show {100 * arcs.coverage:.0f}% of attention" in head
    assert f"holds {100 * arcs.sink_share:.0f}% (halo)" in head
    image = screenshot(browser).astype(int)
    strip = browser.find_element("css selector", ".strip").rect
    x0, y0 = int(strip["x"]), int(strip["y"])
    inside = image[y0 : y0 + int(strip["height"]), x0 : x0 + int(strip["width"])]
    cloud = image[:, : x0 - 10]
    for rgb, where in ((ATTENTION_COLOR, inside), (MLP_COLOR, inside)):
        close = np.abs(where - np.round(np.asarray(rgb) * 255)).max(-1) <= 6
        assert close.sum() > 200, rgb  # the bars are drawn in the strip
    arc = np.abs(cloud - np.array([255, 190, 90])).max(-1) <= 40
    assert arc.sum() > 50  # arcs on the canvas
    title = browser.execute_script("return window.layerscan.panels[0].stripToken")
    assert title == 6  # the last token, when nothing is picked
    browser.execute_script("window.layerscan.pick(0, 3)")
    assert browser.execute_script("return window.layerscan.panels[0].stripToken") == 3
    picked = browser.execute_script("return window.layerscan.panels[0].arcs.arcs")
    assert picked and all(3 in (q, k) for q, k, _ in picked)
    browser.find_element("id", "arcs").click()
    browser.execute_script("window.layerscan.show(2)")
    assert browser.execute_script("return window.layerscan.panels[0].arcs") is None
    assert "arcs show" not in browser.find_element("css selector", ".head").text
