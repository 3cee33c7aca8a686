"""The parts that make a frame readable: camera, label placement, caption, movie timing, help."""

from __future__ import annotations

import numpy as np
import pytest

from layerscan.cli.main import build_parser
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.camera import LayerCamera, reach_max, smooth
from layerscan.geometry.scene.caption import FALLBACK_NOTE, caption_for, warning_for
from layerscan.geometry.scene.placement import importance, leader_segments, place
from layerscan.geometry.scene.render import RenderOptions, plan_for
from tests.synthetic_scan import make_scan


def test_smoothing_keeps_constants_and_has_no_lag():
    assert np.allclose(smooth(np.full(7, 3.0)), 3.0)
    step = smooth(np.r_[np.zeros(10), np.ones(10)])
    assert np.all(np.diff(step) >= 0) and abs(step[9] + step[10] - 1) < 1e-9  # symmetric
    assert reach_max(np.array([0.0, 5, 0, 0]), 1).tolist() == [5, 5, 5, 0]


def test_camera_follows_the_layer_without_jumping():
    pos = np.random.default_rng(0).normal(size=(1, 6, 200, 3))
    pos[0, 3:] *= 4.0  # the cloud grows fourfold at layer 3
    camera = LayerCamera([pos], np.radians(22), (0.4, 0.3))
    _, d = camera.per_layer(0)
    assert d[-1] > 2.5 * d[0]  # framed for the layer on show
    fine = np.array([camera.at(0, x)[1] for x in np.linspace(0, 5, 101)])
    assert np.max(np.abs(np.diff(np.log(fine)))) < 0.2  # no jump between frames


def test_a_layer_that_changes_shape_at_once_is_never_cut_off():
    """The last layer, reshaped by the model's final norm, can be larger and elsewhere than
    the one before: the smoothed camera still frames every one of its points."""
    pos = np.random.default_rng(1).normal(size=(1, 6, 200, 3))
    pos[0, -1] = pos[0, -1] * [1, 1, 5] + [0, 0, 6]  # tall and shifted up at the last layer
    camera = LayerCamera([pos], np.radians(22), (0.4, 0.3))
    centres, d = camera.per_layer(0)
    for layer in range(6):
        pts = pos[0, layer]
        spread = np.linalg.norm(pts - np.median(pts, 0), axis=1)
        kept = pts[spread <= np.percentile(spread, 99.5)]  # framing ignores the 0.5 % strays
        need = fr.framing_distance(
            kept, centres[layer], np.radians(22), (0.4, 0.3), camera.azimuths
        )
        assert d[layer] >= need * (1 - 1e-9)


def test_labels_never_overlap_and_go_by_importance():
    anchors = np.array([[100.0, 100], [102, 101], [104, 99], [500, 300]])
    extents = np.full((4, 2), [60.0, 16])
    zeros = np.zeros(4)
    fit = place(anchors, extents, zeros + 5, zeros - 5, [3, 0, 1, 2], (0, 0, 800, 600), 10)
    assert sorted(fit.shown) == [0, 1, 2, 3] and fit.shown[0] == 3
    boxes = np.concatenate([fit.centres - extents / 2, fit.centres + extents / 2], 1)
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    assert fit.leader[[0, 1, 2]].sum() >= 1  # crowded groups get leader lines
    lines = leader_segments(anchors, fit.centres, extents, np.flatnonzero(fit.leader))
    assert np.allclose(lines[:, 0], anchors[fit.leader])
    # a full screen leaves the least important out, never the current token
    tight = place(anchors, extents, zeros, zeros, [2, 0, 1], (60, 60, 170, 140), 10)
    assert 2 in tight.shown and len(tight.shown) < 3


def test_importance_puts_words_before_punctuation():
    tokens = ["The", " quick", ",", " fox", " ", "."]
    order = importance(tokens, current=2)
    assert order[:2] == [2, 5] and order.index(1) < order.index(4)


def test_caption_says_when_the_layout_is_pca():
    scan = make_scan()
    assert "token trust" in caption_for(scan, lambda text: True)
    assert len(caption_for(scan, lambda text: len(text) < 60)) < 60
    scan.baseline_trust = scan.token_trust.copy()
    scan.baseline_correlation = scan.distance_correlation.copy()
    assert caption_for(scan, lambda text: True) == FALLBACK_NOTE
    assert warning_for(scan) is None
    scan.prompt_r2 = np.full_like(scan.prompt_r2, 0.13)
    assert "worst 0.13" in warning_for(scan)


@pytest.mark.parametrize("fps", [12, 24, 60])
def test_fps_does_not_change_the_movie_length(fps):
    base = len(plan_for(30, 1, RenderOptions(fps=30))) / 30
    assert abs(len(plan_for(30, 1, RenderOptions(fps=fps))) / fps - base) < 0.15
    assert fr.plan_frames(30, frames_per_layer=2.4)[-1].layer == 30.0


def test_diff_help_shows_one_resolution(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["diff", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "default: 1600x720" in text and "1280x720" not in text


def test_window_keys_say_what_they_did(tmp_path, capsys):
    from layerscan.geometry.scene.window import Viewer

    viewer = Viewer(make_scan(n_layers=2, n_particles=64), off_screen=True, screenshot_dir=tmp_path)
    try:
        viewer.press("equal")
        assert "one token step" in viewer.message
        viewer.press("s")
        assert viewer.message == f"saved {viewer.screenshots[0].resolve()}"
        assert "saved" in capsys.readouterr().out
    finally:
        viewer.close()


def test_a_weak_autoencoder_is_said_on_the_frame():
    from layerscan.geometry.scene.scene import Scene, SceneOptions

    scan = make_scan(n_layers=2, n_particles=64)
    scan.prompt_r2 = np.full_like(scan.prompt_r2, 0.13)
    scene = Scene(scan, SceneOptions(window_size=(640, 360)))
    try:
        assert "(worst 0.13, layer 0)" in scene.panels[0].warning.actor.GetInput()
        assert scene.panels[0].warning.actor.GetVisibility()
    finally:
        scene.close()


def test_picking_in_the_window_shows_the_token_label_and_lens(tmp_path):
    from layerscan.geometry.scene.window import Viewer

    scan = make_scan(n_layers=2, n_particles=128, n_tokens=6)
    viewer = Viewer(scan, off_screen=True, screenshot_dir=tmp_path)
    try:
        viewer.show(layer=2.0)
        particle = int(np.flatnonzero(scan.particle_tokens[-1, 2] == 3)[0])
        assert "“␣fox”" in viewer.pick(0, particle)
        panel = viewer.scene.panels[0]
        assert viewer.scene.picked_token == 3 and panel.labels.order[0] == 3
        assert "“␣fox”" in panel.lens.title.actor.GetInput()
    finally:
        viewer.close()
