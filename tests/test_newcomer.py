"""A newcomer's frames: the README's prompt and a 40-token prompt through the embedded model,
checked from the frame itself (its pixels) and the scene's own label list.

Every token is labelled or pickable, the label colours are told apart when colour is the key,
the cloud fills at least half the frame's height at every layer shown, and a caption explains
the figures.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from layerscan.cli.common import DEFAULT_PROMPT
from layerscan.geometry.scene.scene import Scene, SceneOptions
from layerscan.geometry.scene.style import colors_by_position

LONG_PROMPT = (
    "In the early morning the old fisherman rowed his small wooden boat out past the harbour "
    "lights, hoping that the cold grey sea would finally give him the big catch he had dreamed "
    "of for many years."
)
SIZE = (1280, 720)
BACKGROUND = np.array([0x0E, 0x11, 0x17])
JUST_NOTICEABLE = 10.0
"""CIEDE2000 distance two label colours must keep: a just-noticeable difference is about 2
for large patches side by side; small boxes scattered over a dark picture need several."""

pytestmark = pytest.mark.slow  # the embedded model, twice


@pytest.fixture(scope="module", params=[DEFAULT_PROMPT, LONG_PROMPT], ids=["readme", "long"])
def scan(request, embedded_model):
    import layerscan

    scan = layerscan.scan(request.param, device="cpu")
    if request.param == LONG_PROMPT:
        assert len(scan.tokens) == 40
    return scan


@pytest.fixture
def scene(scan):
    scene = Scene(scan, SceneOptions(window_size=SIZE))
    yield scene
    scene.close()


def label_colours(image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(n, 3) the commonest colour inside each label box (its background, not its glyphs) of
    a top-row-first image; boxes are display pixels, origin bottom left."""
    h = image.shape[0]
    out = []
    for x0, y0, x1, y1 in boxes:
        inner = image[int(h - y1) + 4 : int(h - y0) - 4, int(x0) + 4 : int(x1) - 4].reshape(-1, 3)
        values, counts = np.unique(inner, axis=0, return_counts=True)
        out.append(values[np.argmax(counts)])
    return np.asarray(out, np.float64)


def test_every_token_is_labelled_or_pickable(scan, scene):
    scene.update(0, float(scan.n_layers))
    scene.render()
    panel = scene.panels[0]
    shown = set(panel.labels.shown)
    n = len(scan.tokens)
    assert len(shown) >= (n if n <= 16 else int(0.9 * n))  # nearly all carry a label
    tokens = scan.particle_tokens[-1, scan.n_layers]
    for token in set(range(n)) - shown:  # the rest: a click on one of its particles names it
        particle = int(np.flatnonzero(tokens == token)[0])
        assert f"token {token} " in scene.describe_particle(0, particle)
        assert scene.picked_token == token and token in panel.labels.shown


def test_label_colours_in_the_frame_are_told_apart(scan, scene):
    from coloraide import Color

    scene.update(0, float(scan.n_layers))
    image = scene.image()
    panel = scene.panels[0]
    colours = label_colours(image, panel.labels.boxes)
    expected = np.round(panel.token_rgb[panel.labels.shown] * 255)
    assert np.abs(colours - expected).max(axis=1).mean() < 40  # the boxes carry their colours
    if colors_by_position(len(scan.tokens)):  # position is the key: a colour bar says so
        assert panel.legend.bar.GetVisibility()
        assert "position" in panel.legend.colour.actor.GetInput()
        return
    drawn = [Color("srgb", list(c / 255)) for c in colours]
    closest = min(a.delta_e(b, method="2000") for a, b in itertools.combinations(drawn, 2))
    assert closest >= JUST_NOTICEABLE


@pytest.mark.parametrize("where", [0.0, 0.5, 1.0])
def test_the_cloud_fills_half_the_frame_height(scan, scene, where):
    scene.toggle("overlays")  # particles only
    scene.update(0, where * scan.n_layers)
    image = scene.image()
    ink = np.abs(image.astype(int) - BACKGROUND).sum(-1) > 60  # (h, w)
    rows = np.flatnonzero(ink.mean(1) > 0.0005)
    assert (rows.max() - rows.min()) / image.shape[0] >= 0.5


def test_a_caption_explains_the_figures(scan, scene):
    scene.update(0, float(scan.n_layers))
    image = scene.image()
    panel = scene.panels[0]
    caption = panel.caption.actor.GetInput()
    assert "token trust" in caption or "PCA-3 itself" in caption
    assert "PCA-3" in caption
    x, y = panel.caption.actor.GetPositionCoordinate().GetComputedDisplayValue(scene.overlays[0])
    h = image.shape[0]
    band = image[h - y : h - y + 14, x : x + 300]  # the caption hangs from its position
    assert (np.abs(band.astype(int) - BACKGROUND).sum(-1) > 120).mean() > 0.02  # text is drawn
