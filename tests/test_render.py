"""Movies, stills and frame timing: real PyVista off-screen renders checked with imageio."""

from __future__ import annotations

import os
from dataclasses import replace

import imageio.v3 as iio
import numpy as np
import pytest

from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.render import RenderOptions, plan_for, render_movie
from layerscan.geometry.scene.scene import Scene, SceneOptions
from tests.synthetic_scan import make_diff, make_scan

SMALL = (320, 240)


@pytest.fixture(scope="module")
def scan():
    return make_scan(n_layers=3, n_particles=256, n_tokens=6)


@pytest.fixture(scope="module")
def stepped_scan():
    return make_scan(n_layers=2, n_particles=128, n_tokens=5, n_steps=3)


@pytest.fixture(scope="module")
def diff():
    return make_diff(n_layers=3, n_particles=256, n_tokens=6)


def quick(**kw) -> RenderOptions:
    return RenderOptions(**{"frames_per_layer": 3, "hold": 0.0, "progress": False, **kw})


def test_plan_frames_counts_and_orbit():
    plan = fr.plan_frames(3, frames_per_layer=5, hold_frames=2, orbit_degrees=90)
    assert len(plan) == 3 * 5 + 1 + 2 * 2
    assert plan[0].layer == 0 and plan[-1].layer == 3 and plan[-1].azimuth == 90
    assert all(b.layer >= a.layer for a, b in zip(plan, plan[1:], strict=False))
    sweep = fr.plan_frames(3, n_steps=3, frames_per_layer=2, token_sweep=True)
    assert [f.step for f in sweep].count(0) == 3 * 2 + 1 and sweep[-1].step == 2
    with pytest.raises(LayerscanError):
        fr.plan_frames(3, frames_per_layer=0)


def test_duration_sets_frames_per_layer():
    fpl = fr.frames_per_layer_for(10.0, 30, 30)
    assert abs(fr.plan_frames(30, frames_per_layer=fpl).__len__() / 30 - 10.0) < 0.6
    with pytest.raises(LayerscanError):
        fr.frames_per_layer_for(0, 30, 30)


def test_interpolation_hits_layers_and_eases():
    values = np.stack([np.zeros((4, 3)), np.ones((4, 3))]).astype(np.float32)
    assert np.allclose(fr.interpolate(values, 0.0), 0) and np.allclose(fr.interpolate(values, 1), 1)
    assert np.allclose(fr.interpolate(values, 0.5), 0.5)
    assert fr.interpolate(values, 0.1)[0, 0] < 0.1  # smoothstep starts slowly


def test_neighbor_lines_are_unique_pairs(scan):
    cells = fr.neighbor_lines(scan.neighbors[0, 1], n_links=2).reshape(-1, 3)
    assert (cells[:, 0] == 2).all()
    pairs = {tuple(p) for p in cells[:, 1:]}
    assert len(pairs) == len(cells) and all(a < b for a, b in pairs)


def test_density_is_scaled(scan):
    density = fr.local_density(scan.positions[0])
    assert density.shape == scan.positions.shape[1:3]
    assert density.min() >= 0 and density.max() <= 1 and density.std() > 0.05


def test_mp4_frames_resolution_and_motion(scan, tmp_path):
    out = tmp_path / "movie.mp4"
    options = quick()
    stats = render_movie(scan, out, SceneOptions(window_size=SMALL), options)
    frames = iio.imread(out, index=None)  # (n_frames, h, w, 3)
    assert frames.shape == (len(plan_for(3, 1, options)), SMALL[1], SMALL[0], 3)
    assert stats.n_frames == len(frames) == 3 * 3 + 1
    assert all(f.std() > 8 for f in frames), "blank frame"
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 2, "nothing moved"
    assert np.abs(frames[4].astype(int) - frames[5]).mean() > 0.2
    assert not list(tmp_path.glob(".*partial*"))


def test_gif_png_frames_and_still(scan, tmp_path):
    gif = render_movie(
        scan, tmp_path / "a.gif", SceneOptions(window_size=SMALL), quick(fps=10)
    ).path
    assert iio.imread(gif, index=None).shape[0] == 10
    folder = render_movie(
        scan, tmp_path / "frames", SceneOptions(window_size=SMALL), quick(frames_per_layer=1)
    ).path
    pngs = sorted(folder.glob("frame_*.png"))
    assert len(pngs) == 4 and iio.imread(pngs[0]).shape == (240, 320, 3)
    still = render_movie(
        scan, tmp_path / "still.png", SceneOptions(window_size=SMALL), quick(still_layer=1)
    ).path
    assert iio.imread(still).shape == (240, 320, 3)


def test_interrupted_render_leaves_nothing(scan, tmp_path):
    def stop(i):
        if i == 3:
            raise KeyboardInterrupt

    for name in ("movie.mp4", "frames"):
        with pytest.raises(KeyboardInterrupt):
            render_movie(
                scan, tmp_path / name, SceneOptions(window_size=SMALL), quick(), on_frame=stop
            )
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rerender_keeps_old_file(scan, tmp_path):
    out = tmp_path / "movie.mp4"
    render_movie(scan, out, SceneOptions(window_size=SMALL), quick())
    before = out.read_bytes()

    def stop(i):
        if i == 2:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        render_movie(
            scan, out, SceneOptions(window_size=SMALL, color_mode="density"), quick(), on_frame=stop
        )
    assert out.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_diff_video_has_two_lively_panels(diff, tmp_path):
    out = tmp_path / "diff.mp4"
    render_movie(diff, out, SceneOptions(window_size=(480, 240)), quick())
    frames = iio.imread(out, index=None)
    last = frames[-1].astype(int)
    left, right = last[:, :240], last[:, 240:]
    for half in (left, right):
        colourful = (half.max(-1) - half.min(-1) > 60).mean()
        assert half.std() > 10 and colourful > 0.005
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 1


def test_token_sweep_highlights_each_token(stepped_scan, tmp_path):
    scene = Scene(stepped_scan, SceneOptions(window_size=(480, 240)))
    try:
        images = []
        for step in range(3):
            scene.update(step, 2.0, stepped_scan.step_lengths[step] - 1)
            images.append(scene.image().astype(int))
        assert np.abs(images[0] - images[1]).mean() > 0.1
        chips = scene.panels[0].chips.actors
        current = [a.GetTextProperty().GetBackgroundColor() for a in chips]
        assert current[4] != current[3]  # last token highlighted at the last step
    finally:
        scene.close()
    out = render_movie(
        stepped_scan,
        tmp_path / "sweep.mp4",
        SceneOptions(window_size=SMALL),
        quick(token_sweep=True, frames_per_layer=1),
    ).path
    assert iio.imread(out, index=None).shape[0] == 3 * 3


def test_colour_modes_and_toggles_change_the_picture(scan):
    scene = Scene(scan, SceneOptions(window_size=SMALL, show_lines=True))
    try:
        scene.update(0, 2.0)
        base = scene.image().astype(int)
        changed = {}
        for name in ("surface", "lines", "points", "overlays"):
            scene.toggle(name)
            changed[name] = np.abs(scene.image().astype(int) - base).mean()
            scene.toggle(name)
        assert all(v > 0.05 for v in changed.values()), changed
        assert np.abs(scene.image().astype(int) - base).mean() < 0.05  # toggles undo
        for mode in ("density", "displacement"):
            scene.set_color_mode(mode)
            assert np.abs(scene.image().astype(int) - base).mean() > 0.05, mode
        with pytest.raises(LayerscanError):
            scene.set_color_mode("rainbow")
    finally:
        scene.close()


def test_bad_options_are_one_line_errors(scan, tmp_path):
    with pytest.raises(LayerscanError, match="even"):
        render_movie(scan, tmp_path / "a.mp4", SceneOptions(window_size=(321, 240)), quick())
    with pytest.raises(LayerscanError, match="unknown output"):
        render_movie(scan, tmp_path / "a.avi", SceneOptions(window_size=SMALL), quick())
    with pytest.raises(LayerscanError):
        RenderOptions(fps=0)
    with pytest.raises(LayerscanError):
        SceneOptions(window_size=(10, 10))


def test_cli_render_and_diff_from_scan_files(scan, diff, tmp_path, capsys):
    scan.save(tmp_path / "s.scan")
    diff.save(tmp_path / "d.scan")
    out = tmp_path / "s.mp4"
    assert (
        main(
            [
                "render",
                str(tmp_path / "s.scan"),
                "-o",
                str(out),
                "--resolution",
                "320x240",
                "--frames-per-layer",
                "2",
                "--hold",
                "0",
                "--no-progress",
            ]
        )
        == 0
    )
    assert iio.imread(out, index=None).shape == (7, 240, 320, 3)
    assert (
        main(
            [
                "diff",
                str(tmp_path / "d.scan"),
                "-o",
                str(tmp_path / "d.png"),
                "--resolution",
                "480x240",
            ]
        )
        == 0
    )
    assert iio.imread(tmp_path / "d.png").shape == (240, 480, 3)
    assert "wrote" in capsys.readouterr().out
    assert main(["render", str(tmp_path / "d.scan"), "-o", str(tmp_path / "x.mp4")]) == 2
    assert main(["render", str(tmp_path / "s.scan"), "-o", str(tmp_path / "x.avi")]) == 2
    assert main(["render", str(tmp_path / "s.scan"), "--resolution", "big"]) == 2
    err = capsys.readouterr().err
    assert err.count("layerscan: error:") == 3 and "Traceback" not in err


@pytest.mark.slow
def test_main_job_renders_the_embedded_model(tmp_path, capsys):
    """`layerscan render` end to end: embedded model, packaged autoencoder, fast projection."""
    out = tmp_path / "layerscan.mp4"
    assert (
        main(
            [
                "render",
                "The cat sat",
                "-o",
                str(out),
                "--resolution",
                "320x240",
                "--frames-per-layer",
                "1",
                "--hold",
                "0",
                "--no-progress",
                "--save-scan",
                str(tmp_path / "cat.scan"),
            ]
        )
        == 0
    )
    frames = iio.imread(out, index=None)
    assert frames.shape == (31, 240, 320, 3)
    assert all(f.std() > 8 for f in frames)
    assert np.abs(frames[0].astype(int) - frames[-1]).mean() > 2
    assert "wrote" in capsys.readouterr().out
    from layerscan.geometry.scan_file import Scan

    scan = Scan.load(tmp_path / "cat.scan")
    assert scan.n_layers == 30 and scan.lens_tokens is not None


def test_scan_without_lens_or_surfaces_renders(tmp_path):
    from layerscan.geometry.scan_file import Surface

    bare = make_scan(n_layers=2, n_particles=64, n_tokens=3, with_lens=False)
    empty = Surface(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))
    bare.surfaces = [[empty, bare.surfaces[0][1], empty]]
    out = render_movie(
        bare, tmp_path / "bare.mp4", SceneOptions(window_size=SMALL), quick(frames_per_layer=2)
    ).path
    frames = iio.imread(out, index=None)
    assert frames.shape[0] == 5 and all(f.std() > 5 for f in frames)


@pytest.mark.parametrize("which", ["scan", "diff", "sweep", "still camera"])
def test_two_processes_draw_the_same_frames(which, scan, diff, stepped_scan, tmp_path):
    """A movie drawn by two processes (a forked helper draws every other block of frames) has
    exactly the one-process frames, in order: every pixel of every frame."""
    from layerscan.geometry.scene import parallel

    source = {"scan": scan, "diff": diff, "sweep": stepped_scan, "still camera": scan}[which]
    orbit = 0 if which == "still camera" else 40
    options = quick(frames_per_layer=9, hold=0.1, orbit=orbit, token_sweep=which == "sweep")
    size = (480, 240) if which == "diff" else SMALL
    folders = []
    for processes in (1, 2):
        out = tmp_path / f"p{processes}"
        stats = render_movie(
            source, out, SceneOptions(window_size=size), replace(options, processes=processes)
        )
        assert stats.n_frames >= parallel.MIN_FRAMES
        folders.append(sorted(out.glob("*.png")))
    one, two = folders
    assert len(one) == len(two) == stats.n_frames
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(iio.imread(a), iio.imread(b)), b.name
    movie = render_movie(source, tmp_path / "m.mp4", SceneOptions(window_size=size), options)
    assert iio.imread(movie.path, index=None).shape[0] == stats.n_frames


def test_an_interrupted_two_process_render_stops_its_helper(scan, tmp_path, monkeypatch):
    from layerscan.geometry.scene import parallel

    pids = []
    start = parallel.Helper.__init__

    def record(self, *args):
        start(self, *args)
        pids.append(self.pid)

    monkeypatch.setattr(parallel.Helper, "__init__", record)

    def stop(i):
        if i == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        render_movie(
            scan,
            tmp_path / "m.mp4",
            SceneOptions(window_size=SMALL),
            quick(frames_per_layer=9, processes=2),
            on_frame=stop,
        )
    assert list(tmp_path.iterdir()) == [] and len(pids) == 1
    with pytest.raises(ProcessLookupError):  # killed and reaped
        os.kill(pids[0], 0)
    with pytest.raises(LayerscanError, match="processes"):
        RenderOptions(processes=3)


def test_by_default_a_helper_draws_only_when_a_core_is_to_spare(monkeypatch):
    from layerscan.geometry.scene import parallel

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(parallel, "running_now", lambda: 2)  # this one and one other
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    assert parallel.helps(None, "video", 200) and not parallel.helps(1, "video", 200)
    assert not parallel.helps(None, "png", 1) and not parallel.helps(2, "video", 10)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.0, 1.0, 1.0))
    assert not parallel.helps(None, "video", 200) and parallel.helps(2, "frames", 200)
    # the average still remembers work that has ended: nothing else running now decides
    monkeypatch.setattr(parallel, "running_now", lambda: 1)
    assert parallel.helps(None, "video", 200)


def test_running_now_is_the_kernels_count_of_runnable_tasks():
    from layerscan.geometry.scene import parallel

    assert 1 <= parallel.running_now() < 1 << 20  # this test's own thread at least
