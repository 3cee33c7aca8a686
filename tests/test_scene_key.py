"""The picture explains itself: token colours and chips, labels at their groups, the legend,
token trust in the overlay, picking, diff arrows, camera framing (real off-screen renders)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from vtkmodules.vtkRenderingCore import vtkCoordinate

from layerscan.geometry.faithfulness import token_places
from layerscan.geometry.scan_file import diverges
from layerscan.geometry.scene.legend import surface_caption
from layerscan.geometry.scene.overlays import nice_ceiling, token_label
from layerscan.geometry.scene.render import RenderOptions, render_movie
from layerscan.geometry.scene.scene import Scene, SceneOptions
from layerscan.geometry.scene.style import token_colors, token_palette
from tests.synthetic_scan import make_diff, make_scan

SIZE = (640, 360)


@pytest.fixture(scope="module")
def scan():
    return make_scan(n_layers=3, n_particles=256, n_tokens=8)


@pytest.fixture
def scene(scan):
    s = Scene(scan, SceneOptions(window_size=SIZE))
    yield s
    s.close()


def particle_rgb(panel, step: int, layer: int) -> np.ndarray:
    """(n_particles, 3) the colour VTK maps each particle's scalar to, at a whole layer."""
    lut = panel.points_actor.mapper.lookup_table
    values = panel.cloud.point_data["color"]
    out = np.empty((len(values), 3))
    for i, v in enumerate(values):
        lut.GetColor(float(v), out[i])
    return out


def test_palette_is_distinct_in_ciede2000_then_colours_by_position():
    import itertools

    from coloraide import Color

    palette = [Color("srgb", list(c)) for c in token_palette()]
    assert len(palette) == 24
    worst = min(a.delta_e(b, method="2000") for a, b in itertools.combinations(palette, 2))
    assert worst >= 14.0  # a just-noticeable difference is about 2; small dots need far more
    assert np.array_equal(token_colors(24), token_palette())
    long = token_colors(40)  # past the palette: a colour map along the prompt, no repeats
    assert len(np.unique(np.round(long, 4), axis=0)) == 40


def test_token_colours_of_particles_match_their_chips(scan, scene):
    assert scene.mode == "token"  # the default
    scene.update(0, 2.0)
    panel = scene.panels[0]
    rgb = particle_rgb(panel, 0, 2)
    tokens = scan.particle_tokens[0, 2]
    for i, actor in enumerate(panel.chips.actors):
        chip = np.array(actor.GetTextProperty().GetBackgroundColor())
        assert np.allclose(rgb[tokens == i], chip, atol=1 / 255), i
    assert len(
        {tuple(a.GetTextProperty().GetBackgroundColor()) for a in panel.chips.actors}
    ) == len(scan.tokens)
    scene.set_color_mode("slot")  # other modes: neutral chips
    assert {tuple(a.GetTextProperty().GetBackgroundColor()) for a in panel.chips.actors} != {
        tuple(c) for c in token_colors(len(scan.tokens))
    }


def test_token_colours_show_in_the_picture(scan):
    scene = Scene(
        scan,
        SceneOptions(window_size=SIZE, show_labels=False, show_surface=False, show_overlays=False),
    )
    try:
        scene.update(0, 3.0)
        image = scene.image().reshape(-1, 3).astype(int)
        for color in token_colors(len(scan.tokens)):
            close = np.abs(image - np.round(color * 255)).max(1) < 40
            assert close.sum() > 20, color
    finally:
        scene.close()


def test_labels_sit_beside_their_groups_and_toggle(scan, scene):
    scene.update(0, 3.0)
    scene.render()
    labels = scene.panels[0].labels
    assert len(labels.shown) >= 4
    places = token_places(scan.positions[0], scan.particle_tokens[0], len(scan.tokens))[3]
    assert np.allclose(labels.places[: len(places)], places, atol=1e-4)
    centre = labels.project(places)  # (n_tokens, 2) display pixels
    for i, box in zip(labels.shown, labels.boxes, strict=True):
        actor = labels.actors[i]
        assert actor.GetVisibility()
        x, y = actor.GetPositionCoordinate().GetValue()[:2]
        # centred over its group's centroid, just above or below it, never on top of it
        assert x == pytest.approx(centre[i, 0], abs=1e-6)
        assert box[1] >= centre[i, 1] or box[3] <= centre[i, 1]
        assert actor.GetInput() == token_label(scan.tokens[i], 12)
    before = scene.image().astype(int)
    assert scene.toggle("labels") is False
    assert not any(a.GetVisibility() for a in labels.actors)
    assert np.abs(scene.image().astype(int) - before).mean() > 0.05
    scene.toggle("labels")
    assert np.abs(scene.image().astype(int) - before).mean() < 0.05


def test_labels_move_with_the_layout(scan, scene):
    scene.update(0, 0.0)
    scene.render()
    start = [
        scene.panels[0].labels.actors[i].GetPositionCoordinate().GetValue()
        for i in range(len(scan.tokens))
    ]
    scene.update(0, 1.5)
    scene.render()
    moved = [
        scene.panels[0].labels.actors[i].GetPositionCoordinate().GetValue()
        for i in range(len(scan.tokens))
    ]
    assert not np.allclose(start, moved)


def test_long_prompts_thin_labels_without_overlap():
    long = make_scan(n_layers=2, n_particles=512, n_tokens=60, seed=1)
    scene = Scene(long, SceneOptions(window_size=SIZE))
    try:
        scene.update(0, 0.0)
        scene.render()
        labels = scene.panels[0].labels
        assert 0 < len(labels.shown) < 60
        boxes = labels.boxes
        for a in range(len(boxes)):
            for b in range(a):
                overlap = (boxes[a, :2] < boxes[b, 2:]).all() and (
                    boxes[b, :2] < boxes[a, 2:]
                ).all()
                assert not overlap, (labels.shown[a], labels.shown[b])
        assert labels.font_size < scene.panels[0].chips.actors[0].GetTextProperty().GetFontSize()
    finally:
        scene.close()


def test_no_labels_option(scan):
    scene = Scene(scan, SceneOptions(window_size=SIZE, show_labels=False))
    try:
        scene.render()
        assert not any(a.GetVisibility() for a in scene.panels[0].labels.actors)
    finally:
        scene.close()


def test_legend_per_colour_mode(scan, scene):
    legend = scene.panels[0].legend
    scene.render()
    assert "chip" in legend.colour.actor.GetInput() and not legend.bar.GetVisibility()
    assert legend.surface.actor.GetInput().startswith("surface:")
    for mode, word in (("density", "density"), ("displacement", "moved")):
        scene.set_color_mode(mode)
        assert legend.bar.GetVisibility() and word in legend.bar.GetTitle()
        low, high = legend.bar.GetLookupTable().GetRange()
        assert low == 0 and high > 0
    scene.set_color_mode("displacement")
    assert not legend.surface.actor.GetVisibility()  # surfaces are off by default
    scene.toggle("surface")
    assert legend.surface.actor.GetVisibility()
    scene.toggle("surface")


def test_surface_caption_says_what_the_surface_holds():
    settings = {"projection": {"surface": {"method": "density", "level_quantile": 0.2}}}
    assert surface_caption(settings) == "surface: density isosurface holding ~80 % of the tokens"
    assert "alpha" in surface_caption({"projection": {"surface": {"method": "alpha"}}})


def test_overlay_shows_token_trust_beside_the_baseline(scan, scene):
    scene.update(0, 2.0)
    text = scene.panels[0].fig.actor.GetInput()
    trust, base = scan.token_trust[0, 2], scan.baseline_trust[0, 2]
    assert f"trust {trust:.2f} (PCA-3 {base:.2f}, chance 0.52)" in text and "R²" in text
    assert "continuity" not in text


def test_whitespace_is_visible_in_token_text(scan, scene):
    assert token_label(" because") == "␣because" != token_label("because")
    assert token_label("\n") == "↵" and token_label("") == "∅"
    lens = scene.panels[0].lens
    lens.show("x", [" because", "because", " Because"], np.array([0.5, 0.3, 0.2]))
    assert [r.actor.GetInput() for r in lens.rows[:3]] == ["␣because", "because", "␣Because"]
    assert scene.panels[0].chips.actors[1].GetInput() == "␣quick"


def test_picking_names_token_and_layer(scan, scene):
    scene.update(0, 2.0)
    pid = int(np.flatnonzero(scan.particle_tokens[0, 2] == 3)[0])
    text = scene.describe_particle(0, pid)
    assert "token 3" in text and "␣fox" in text and "layer 2" in text
    assert scene.panels[0].pick.actor.GetInput() == text


@pytest.mark.parametrize("bottom", [0.0, 0.1])
def test_the_shown_layer_fills_the_picture_and_stays_inside(bottom):
    """Along the movie's orbit, every point of the layer on show projects (through the
    renderer's own world-to-display transform) inside the area clear of the overlays, and
    the camera frames that layer, not the union of all layers: it fills most of the area."""
    wide = make_scan(n_layers=4, n_particles=256, n_tokens=6, seed=3)
    for source, size in ((wide, (640, 360)), (make_diff(n_layers=3, n_particles=128), (800, 360))):
        scene = Scene(source, SceneOptions(window_size=size, overlay_bottom=bottom))
        try:
            renderer = scene.plotter.renderers[0]
            w, h = size[0] // len(scene.scans), size[1]
            coord = vtkCoordinate()
            coord.SetCoordinateSystemToWorld()
            x0, y0, x1, y1 = scene.free_area
            for layer in range(scene.n_layers + 1):
                for azimuth in (0.0, 30.0):
                    scene.set_azimuth(azimuth)
                    scene.update(scene.n_steps - 1, float(layer))
                    scene.render()
                    xy = []
                    for s in scene.scans:
                        for point in s.positions[-1, layer][::3]:
                            coord.SetValue(*point)
                            xy.append(coord.GetComputedDoubleDisplayValue(renderer))
                    xy = np.array(xy) / [w, h]  # (n, 2) normalized viewport
                    slack = 0.03  # smoothing through layer-time trades a little margin
                    assert (xy[:, 0] >= x0 - slack).all() and (xy[:, 0] <= x1 + slack).all()
                    assert (xy[:, 1] >= y0 - slack).all() and (xy[:, 1] <= y1 + slack).all()
                    used = (xy.max(0) - xy.min(0)) / [x1 - x0, y1 - y0]
                    assert used.max() > 0.6, (layer, azimuth)  # framed, not lost in the middle
        finally:
            scene.close()


def test_diff_draws_one_arrow_per_aligned_token():
    diff = make_diff(n_layers=3, n_particles=256, n_tokens=6)  # token 2 substituted
    scene = Scene(diff, SceneOptions(window_size=(800, 360)))
    try:
        scene.update(0, 3.0)
        arrows = scene.arrows
        assert arrows.n == 5 and arrows.mesh.n_lines == 5
        pts = arrows.mesh.points.reshape(5, -1, 3)
        pairs = diff.aligned_tokens
        a = token_places(diff.a.positions[0], diff.a.particle_tokens[0], 6)[3][pairs[:, 0]]
        b = token_places(diff.b.positions[0], diff.b.particle_tokens[0], 6)[3][pairs[:, 1]]
        factor = scene.marks.factor  # drawn factor x the true move, stated on the frame
        assert np.allclose(pts[:, 0], a, atol=1e-4)
        assert np.allclose(pts[:, 2], a + factor * (b - a), atol=1e-3)
        assert "peak" in scene.chart.title.actor.GetInput()
    finally:
        scene.close()


def test_self_diff_does_not_claim_a_peak(tmp_path):
    a = make_scan(n_layers=3, n_particles=128, n_tokens=5)
    same = dataclasses.replace(
        make_diff(n_layers=3, n_particles=128, n_tokens=5),
        a=a,
        b=a,
        displacement_cloud=np.zeros((4, 128), np.float32),
        divergence=np.zeros(4, np.float32),
        token_divergence_a=np.zeros((4, 5), np.float32),
        token_divergence_b=np.zeros((4, 5), np.float32),
        aligned_tokens=np.stack([np.arange(5)] * 2, 1).astype(np.int32),
        peak_layer=0,
    )
    assert not diverges(same.divergence) and diverges(np.array([0.0, 0.1]))
    scene = Scene(same, SceneOptions(window_size=(800, 360)))
    try:
        title = scene.chart.title.actor.GetInput()
        assert "do not diverge" in title and "peak" not in title
        # the axis reaches the threshold it draws (as the HTML page's chart does)
        assert [t.actor.GetInput() for t in scene.chart.tick_labels] == ["0", "0.05", "0.1"]
    finally:
        scene.close()


def test_chart_axis_starts_at_zero():
    assert nice_ceiling(0.96) == 1.0 and nice_ceiling(2.4) == 2.5 and nice_ceiling(0) == 1.0
    diff = make_diff(n_layers=3, n_particles=128)
    diff = dataclasses.replace(diff, divergence=np.array([0.74, 0.8, 0.9, 0.96], np.float32))
    scene = Scene(diff, SceneOptions(window_size=(800, 360)))
    try:
        chart = scene.chart
        _, y0, _, y1 = chart.box
        span = (chart.ys.max() - chart.ys.min()) / (y1 - y0)
        assert span < 0.25  # 0.74 → 0.96 is a fifth of the axis, not all of it
        assert chart.tick_labels[0].actor.GetInput() == "0"
    finally:
        scene.close()


def test_token_time_render_prints_no_vtk_warning(tmp_path, capfd):
    stepped = make_scan(n_layers=2, n_particles=128, n_tokens=5, n_steps=3)
    stepped.tokens = ["$5", " costs", " $6", " or", " $"]
    render_movie(
        stepped,
        tmp_path / "sweep.mp4",
        SceneOptions(window_size=(320, 240)),
        RenderOptions(frames_per_layer=1, hold=0, progress=False, token_sweep=True),
    )
    err = capfd.readouterr().err
    assert "math text" not in err and "WARN" not in err and "ERR" not in err, err


@pytest.mark.slow
def test_real_token_time_render_prints_no_vtk_warning(tmp_path, capfd):
    """The embedded model's logit lens lists tokens (`<|endoftext|>`, newlines) that VTK's
    backend detection once sent to math text, which warned on every shadowed label."""
    from layerscan.cli.main import main

    assert (
        main(
            [
                "render",
                "The cat sat",
                "--token-time",
                "-o",
                str(tmp_path / "t.mp4"),
                "--resolution",
                "320x240",
                "--frames-per-layer",
                "1",
                "--hold",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    err = capfd.readouterr().err
    assert "math text" not in err and "WARN" not in err, err


def test_html_page_colours_by_token(scan, tmp_path):
    import json

    from layerscan.geometry.scene.export import export_html

    page = export_html(scan, tmp_path / "s.html").read_text()
    panel = json.loads(page.split("const DATA = ")[1].split(";</script>")[0])["panels"][0]
    expected = [
        ("#" + "".join(f"{round(255 * c):02x}" for c in rgb))
        for rgb in token_colors(len(scan.tokens))
    ]
    assert panel["token_colors"] == expected and panel["particle_tokens"]
    assert "token_trust" in panel["metrics"]
    assert '<select id="mode"><option>token</option>' in page  # token colours first


def test_cli_label_and_colour_flags(scan, tmp_path):
    import imageio.v3 as iio

    from layerscan.cli.main import main

    scan.save(tmp_path / "s.scan")
    for flags in (["--no-labels"], ["--color", "token"], ["--color", "density"]):
        out = tmp_path / f"{flags[-1]}.png"
        assert (
            main(
                [
                    "render",
                    str(tmp_path / "s.scan"),
                    "-o",
                    str(out),
                    "--resolution",
                    "320x240",
                    *flags,
                ]
            )
            == 0
        )
        assert iio.imread(out).shape == (240, 320, 3)


@pytest.mark.slow
def test_self_diff_says_the_prompts_do_not_diverge(tmp_path, capsys):
    from layerscan.cli.main import main

    assert main(["diff", "The cat sat", "The cat sat", "-o", str(tmp_path / "d.scan")]) == 0
    err = capsys.readouterr().err
    assert "do not diverge" in err and "peaks at" not in err


def test_text_is_drawn_over_the_particles():
    """Text moved over the cloud of a diff panel: each pixel of its glyphs is the same with
    and without particles (text is drawn last, on its own layer), and it has a dark backing,
    so dim text stays legible over bright particles."""
    diff = make_diff(n_layers=3, n_particles=1024, n_tokens=6)
    size = (800, 360)
    images = []
    for show_points in (False, True):
        scene = Scene(
            diff, SceneOptions(window_size=size, show_points=show_points, show_labels=False)
        )
        try:
            scene.update(0, 3.0)
            for panel in scene.panels:
                panel.fig.actor.SetPosition(0.05, 0.52)  # across the middle of the cloud
                panel.fig.actor.GetTextProperty().SetColor(1.0, 1.0, 0.0)  # pure yellow
            images.append(scene.image().astype(int))
            backing = scene.panels[0].fig.actor.GetTextProperty().GetBackgroundOpacity()
        finally:
            scene.close()
    band = slice(int(size[1] * 0.42), int(size[1] * 0.52))
    plain = images[0][band]  # drawn without particles: pure yellow pixels are text cores
    text = (plain[..., 0] >= 250) & (plain[..., 1] >= 250) & (plain[..., 2] <= 5)
    changed = np.abs(images[1][band] - images[0][band]).max(-1) > 30
    rows, cols = np.flatnonzero(text.any(1)), np.flatnonzero(text.any(0))
    box = changed[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    assert text.sum() > 30 and box.sum() > 100, "no particles behind the text"
    # glyph cores keep their colour (edges blend with what lies behind, by a few levels)
    assert np.abs(images[1][band][text] - images[0][band][text]).max() <= 8
    assert backing >= 0.5


def test_group_edges_match_numpy_percentiles():
    from layerscan.geometry.scene.tokens import GROUP_EDGE, group_edges

    rng = np.random.default_rng(0)
    groups = [rng.choice(50, size, replace=False) for size in (1, 2, 5, 17)]
    point_y, centre_y = rng.normal(size=50) * 30, rng.normal(size=4)
    tops, bottoms = group_edges(groups, point_y, centre_y)
    for group, centre, top, bottom in zip(groups, centre_y, tops, bottoms, strict=True):
        dy = point_y[group] - centre
        assert top == pytest.approx(max(np.percentile(dy, GROUP_EDGE), 0.0))
        assert bottom == pytest.approx(min(np.percentile(dy, 100 - GROUP_EDGE), 0.0))


def _chip_strip(tokens: list[str]):
    from vtkmodules.vtkRenderingCore import vtkRenderer

    from layerscan.geometry.scene.chips import TokenChips

    return TokenChips(vtkRenderer(), tokens, 14, (640, 360))


def test_chips_past_the_rows_are_counted_never_dropped_silently():
    tokens = [f" word{i}" for i in range(60)]  # far more than two rows at 640 px
    chips = _chip_strip(tokens)
    chips.show(len(tokens), 0)  # a diff's focus: the first token
    shown = [i for i, a in enumerate(chips.actors) if a.GetVisibility()]
    assert shown[0] == 0 and shown == list(range(len(shown))) and len(shown) < len(tokens)
    assert chips.after.GetVisibility()
    assert chips.after.GetInput() == f"… +{len(tokens) - len(shown)}"
    # the count chip sits right of the last chip shown, on its row, inside the strip
    last = chips.actors[shown[-1]]
    (ax, ay), (lx, ly) = chips.after.GetPosition(), last.GetPosition()
    assert ay == ly and ax > lx and ax + chips._width(chips.after.GetInput()) <= chips.x1 + 1e-9
    chips.show(len(tokens), None)  # the last token in focus: earlier ones scroll out instead
    assert chips.more.GetVisibility() and not chips.after.GetVisibility()
    assert chips.actors[-1].GetVisibility()


def test_a_prompt_that_fits_has_no_count_chip():
    chips = _chip_strip([" a", " b", " c"])
    chips.show(3, 0)
    assert all(a.GetVisibility() for a in chips.actors)
    assert not chips.after.GetVisibility() and not chips.more.GetVisibility()
