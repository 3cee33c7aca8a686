"""A newcomer reads a diff frame: which token changed (a ring, in the rendered pixels), and
which tokens it dragged along (the colours and arrows follow the hidden-state divergence)."""

from __future__ import annotations

import numpy as np
import pytest

from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.geometry.build import diff_captures
from layerscan.geometry.scan_file import diverges
from layerscan.geometry.scene.diff_view import (
    ARROW_TARGET,
    RING_COLORS,
    arrow_factor,
    divergence_scale,
)
from layerscan.geometry.scene.scene import Scene, SceneOptions
from layerscan.geometry.scene.style import FREE_AREA
from layerscan.geometry.scene.window import Viewer
from tests.test_pipeline import FAST, PROMPT, autoencoder_for

INSERTED = PROMPT.replace("lazy", "very lazy")


@pytest.fixture(scope="module")
def diff(tiny_models):
    llama = tiny_models["llama"]
    autoencoder = autoencoder_for(llama, [PROMPT, "one two three four five six seven eight nine"])
    return diff_captures(capture(llama, PROMPT), capture(llama, INSERTED), autoencoder, FAST)


def _display(scene: Scene, panel: int, point: np.ndarray) -> tuple[int, int]:
    """(x, y) pixel of a 3D point in a panel, y from the top."""
    renderer = scene.plotter.renderers[panel]
    renderer.SetWorldPoint(*point, 1.0)
    renderer.WorldToDisplay()
    x, y, _ = renderer.GetDisplayPoint()
    return int(round(x)), scene.options.window_size[1] - int(round(y))


def test_the_frame_shows_which_token_changed_and_what_it_dragged(diff):
    _, changed_b = diff.changed
    assert "".join(diff.b.tokens[j] for j in changed_b).strip() == "very"  # character tokens
    scene = Scene(diff, SceneOptions(window_size=(1200, 540), show_surface=False))
    try:
        scene.update(0, float(diff.a.n_layers))
        image = scene.image()  # (540, 1200, 3) top row first
        marks = scene.marks
        ring = marks.rings[1]  # B's panel: the inserted token, a green ring ("appears")
        assert ring.tokens.tolist() == changed_b
        assert np.allclose(ring.centres, scene.panels[1].places[changed_b])
        x, y = _display(scene, 1, ring.centres[0])
        r = 14
        patch = image[max(y - r, 0) : y + r, max(x - r, 0) : x + r].reshape(-1, 3).astype(int)
        green = (np.array(RING_COLORS["appears"]) * 255).astype(int)
        assert (np.abs(patch - green).max(1) < 40).any()  # the ring is drawn there
        assert not marks.rings[0].tokens.size  # nothing vanished from A
        # colours follow the hidden-state divergence, token by token, in B's panel
        layer = diff.a.n_layers
        values = scene.panels[1].scalars["displacement"][layer]  # (n_particles,)
        owner = diff.b.particle_tokens[0, layer]
        per_token = np.array([values[owner == t].mean() for t in range(len(diff.b.tokens))])
        expected = np.clip(diff.token_divergence_b[layer] / divergence_scale(diff)[0], 0, 1)
        assert np.allclose(per_token, expected, atol=1e-6)
        # the dragged tokens: the aligned tokens after the insertion diverge, those before not
        after = diff.aligned_tokens[diff.aligned_tokens[:, 1] > changed_b[0], 1]
        before = diff.aligned_tokens[diff.aligned_tokens[:, 1] < changed_b[0], 1]
        assert per_token[after].min() > per_token[before].max()
        # arrows: the longest move drawn at least ARROW_TARGET of the radius, factor stated
        pts = marks.arrows.mesh.points.reshape(len(diff.aligned_tokens), -1, 3)
        drawn = np.linalg.norm(pts[:, 2] - pts[:, 0], axis=-1).max()
        assert drawn >= ARROW_TARGET * marks.radius * 0.99 or marks.factor == 1
        assert f"×{marks.factor:g}" in marks.note._text or marks.factor == 1
        assert "threshold" in marks.marks_label._text
        # an aligned pair has one colour in both panels; the inserted token its own
        rgb_a, rgb_b = (panel.token_rgb for panel in scene.panels)
        for i, j in diff.aligned_tokens:
            assert np.array_equal(rgb_a[i], rgb_b[j])
        assert not (np.abs(rgb_a - rgb_b[changed_b[0]]).max(1) < 1e-9).any()
        # the labels keep below the divergence chart and its key line (top-aligned text)
        assert all(panel.labels.band[1] <= FREE_AREA["diff"][3] for panel in scene.panels)
        key = marks.marks_label.actor
        key_bottom = key.GetPosition()[1] - 1.3 * key.GetTextProperty().GetFontSize() / 540
        assert FREE_AREA["diff"][3] <= key_bottom
    finally:
        scene.close()


def test_the_viewer_steps_through_the_changes(diff):
    window = Viewer(diff, off_screen=True)
    try:
        assert "n next change" in window.hint.GetInput()
        text = window.next_change()
        assert "very" in text and window.scene.marks.current_tokens()[1] is not None
    finally:
        window.close()


def test_a_shared_prefix_alone_is_not_magnified_into_a_divergence(tiny_models):
    """The prompt's first word against the whole prompt: the aligned tokens are a causal
    prefix whose states differ by float noise at most; no arrow, colour range or chart axis is
    stretched to that noise."""
    llama = tiny_models["llama"]
    autoencoder = autoencoder_for(llama, [PROMPT, "one two three four five six seven eight nine"])
    diff = diff_captures(capture(llama, "the"), capture(llama, PROMPT), autoencoder, FAST)
    n = len(diff.a.tokens)
    assert diff.aligned_tokens.tolist() == [[i, i] for i in range(n)]  # a causal prefix
    assert not diverges(diff.divergence)
    top, _ = divergence_scale(diff)
    assert top >= diff.threshold
    scene = Scene(diff, SceneOptions(window_size=(800, 360), show_surface=False))
    try:
        scene.update(0, float(diff.a.n_layers))
        assert scene.marks.factor == 1.0
        assert "do not diverge" in scene.chart.title.actor.GetInput()
    finally:
        scene.close()
    assert arrow_factor(np.array([1e-8]), 1.0) == 1.0 and arrow_factor(np.array([0.01]), 1.0) > 1
