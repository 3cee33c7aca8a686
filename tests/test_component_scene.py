"""The component strip, the token trace and the component chain, drawn off-screen: the bars are
the token's writes, the path goes through the token's places, the labels overlap nothing."""

from __future__ import annotations

import numpy as np
import pytest
from vtkmodules.util.numpy_support import vtk_to_numpy

from layerscan.cli.main import main
from layerscan.geometry.scene.component_strip import ATTENTION_COLOR, BOX, MLP_COLOR
from tests.synthetic_scan import make_activity_scan, make_scan

N_LAYERS, N_TOKENS, N_PROMPT = 3, 7, 5
SIZE = (640, 360)


@pytest.fixture(scope="module")
def scan():
    return make_activity_scan(
        n_layers=N_LAYERS, n_tokens=N_TOKENS, n_prompt=N_PROMPT, n_particles=140
    )


@pytest.fixture
def scene(scan):
    from layerscan.geometry.scene.scene import Scene, SceneOptions

    scene = Scene(scan, SceneOptions(window_size=SIZE, show_attention=False))
    try:
        yield scene
    finally:
        scene.close()


def rects(quads) -> np.ndarray:
    """(n, 4) x0, y0, x1, y1 of a Quads' rectangles, in order."""
    corners = vtk_to_numpy(quads.poly.GetPoints().GetData())[:, :2].reshape(-1, 4, 2)
    return np.concatenate([corners[:, 0], corners[:, 2]], 1)


def colour_pixels(image: np.ndarray, rgb, box) -> int:
    """Pixels within 6 of `rgb` inside the normalized box (x0, y0, x1, y1; y up)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    part = image[int((1 - y1) * h) : int((1 - y0) * h), int(x0 * w) : int(x1 * w)].astype(int)
    return int((np.abs(part - np.round(np.asarray(rgb) * 255)).max(-1) <= 6).sum())


def test_strip_bars_are_the_tokens_writes_and_split(scene, scan):
    strip, parts = scene.strip, scan.components
    scene.update(0, 2.0)
    for token, traced in ((N_TOKENS - 1, False), (2, True)):  # the last token; then a traced one
        if traced:
            scene.trace_token(token)
        for name, writes in (("attention", parts.attention_write), ("mlp", parts.mlp_write)):
            a, b = strip.columns[name]
            bars = rects(strip.bars[name])  # (n_layers, 4), block 1 first
            expected = a + (b - a) * np.clip(writes[:, token] / strip.scale, 0, 1)
            np.testing.assert_allclose(bars[:, 2], expected, atol=1e-6)
            assert np.all(np.diff(bars[:, 1]) > 0)  # block 1 at the bottom
        a, b = strip.columns["split"]
        widths = np.stack([np.diff(rects(q)[:, [0, 2]], axis=1)[:, 0] for q in strip.split], 1)
        np.testing.assert_allclose(widths / (b - a), parts.attention_split[:, token], atol=1e-6)
        title = strip.title.actor.GetInput()
        kind = "generated" if token >= N_PROMPT else "prompt"
        assert f"#{token}" in title and f"({kind})" in title
        assert ("traced" in title) == traced
        assert f"KV cache {token + 1} positions" in strip.kv.actor.GetInput()
    highlight = rects(strip.highlight)
    assert len(highlight) == 1 and highlight[0, 1] == pytest.approx(strip._row_y(2))
    image = scene.image()
    assert colour_pixels(image, MLP_COLOR, BOX) > 100  # the bars are drawn
    assert colour_pixels(image, ATTENTION_COLOR, BOX) > 20
    assert colour_pixels(image, MLP_COLOR, (0, 0, BOX[0] - 0.01, 1)) < 5  # only in the strip
    assert "L2 in the residual stream" in strip.units.actor.GetInput()
    scene.toggle_components()
    assert not strip.bars["mlp"].actor.GetVisibility()
    assert colour_pixels(scene.image(), MLP_COLOR, BOX) == 0


def test_trace_goes_through_the_tokens_places_and_grows_with_layer_time(scene, scan):
    from layerscan.geometry.scene.overlays import ACCENT, token_label

    token = 4
    scene.trace_token(token)
    owners = scan.particle_tokens[0]  # (n_layers+1, n_particles)
    places = np.stack(
        [scan.positions[0, layer][owners[layer] == token].mean(0) for layer in range(N_LAYERS + 1)]
    )  # (n_layers+1, 3): the token's centroid at every layer
    scene.update(0, 1.5)
    line = np.asarray(scene.trace.line.points)
    assert len(line) == 3  # layers 0 and 1, and the head halfway to layer 2
    np.testing.assert_allclose(line[:2], places[:2], atol=1e-5)
    np.testing.assert_allclose(line[2], (places[1] + places[2]) / 2, atol=1e-5)
    image = scene.image()
    scene.update(0, 3.0)
    np.testing.assert_allclose(np.asarray(scene.trace.line.points)[:4], places, atol=1e-5)
    image = scene.image()
    trace = scene.trace
    assert N_LAYERS in trace.placed  # the head's label is always tried first
    own = trace.labels[N_LAYERS].GetInput()
    assert (
        own.startswith(f"L{N_LAYERS} → ")
        and token_label(scan.lens_tokens[N_LAYERS][token][0], 12) in own
    )
    boxes = np.concatenate([trace.boxes, scene.panels[0].labels.boxes])
    for i, a in enumerate(boxes):  # no lens label on a token label or on another lens label
        for b in boxes[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    strip_left = BOX[0] * SIZE[0]
    assert (trace.boxes[:, 2] <= strip_left).all()  # never on the strip
    assert colour_pixels(image, ACCENT, (0, 0, BOX[0], 1)) > 30  # the path is drawn
    scene.trace_token(None)
    scene.update(0, 3.0)
    assert not trace.actor.GetVisibility() and trace.placed == []


def test_click_traces_a_token_and_again_stops(scene, scan):
    scene.update(0, 2.0)
    pid = int(np.flatnonzero(scan.particle_tokens[0, 2] == 5)[0])
    assert scene.trace_particle(0, pid) == 5 and scene.strip._shown[0] == 5
    assert scene.trace_particle(0, pid) is None


def test_render_still_with_strip_and_trace(scan, tmp_path):
    import imageio.v3 as iio

    from layerscan.geometry.scene.render import RenderOptions, render_movie
    from layerscan.geometry.scene.scene import SceneOptions

    path = tmp_path / "still.png"
    render_movie(
        scan,
        path,
        SceneOptions(window_size=SIZE, trace=2),
        RenderOptions(progress=False, still_layer=2),
    )
    image = iio.imread(path)[..., :3]
    assert image.shape == (SIZE[1], SIZE[0], 3)
    assert colour_pixels(image, MLP_COLOR, BOX) > 100


def test_components_command_draws_the_chain_from_a_scan(scan, tmp_path, capsys):
    import imageio.v3 as iio

    scan.save(tmp_path / "a.scan")
    out = tmp_path / "chain.png"
    args = ["components", str(tmp_path / "a.scan"), "-o", str(out), "--size", "800x450"]
    assert main(args) == 0
    assert f"{N_TOKENS} tokens x {N_LAYERS} blocks" in capsys.readouterr().out
    image = iio.imread(out)[..., :3]
    assert image.shape == (450, 800, 3) and image.std() > 10
    make_scan(n_layers=2).save(tmp_path / "bare.scan")
    assert main(["components", str(tmp_path / "bare.scan"), "-o", str(tmp_path / "b.png")]) == 2
    assert "made without --components" in capsys.readouterr().err
    assert not (tmp_path / "b.png").exists()
