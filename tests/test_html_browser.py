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
