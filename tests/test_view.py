"""The desktop viewer driven under a virtual X display (Xvfb) with real key events.

Each window scenario runs in a fresh Python process: VTK cannot mix the EGL contexts of
off-screen renders (other tests in this session) with the GLX windows of an X display.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from layerscan.geometry.scene.window import Viewer, check_display
from tests.synthetic_scan import make_diff, make_scan


@pytest.fixture(scope="module")
def xdisplay():
    """A private Xvfb display for this module; skipped only when Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb not found (install the Debian package `xvfb`; .ci/run does)")
    read, write = os.pipe()
    # -noreset: by default Xvfb resets when its last client leaves, and a scenario process that
    # connects during that reset gets "bad X server connection" (seen once in a full run)
    proc = subprocess.Popen(
        [
            exe,
            "-displayfd",
            str(write),
            "-screen",
            "0",
            "1280x800x24",
            "-nolisten",
            "tcp",
            "-noreset",
        ],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb started but reported no display number")
    yield f":{number}"  # only the scenario processes see it
    proc.terminate()
    proc.wait(timeout=10)


def press(viewer: Viewer, key: str) -> None:
    """A real VTK key press through the window's interactor."""
    interactor = viewer.plotter.iren.interactor
    interactor.SetKeySym(key)
    interactor.SetKeyCode(key if len(key) == 1 else " " if key == "space" else "\0")
    interactor.InvokeEvent("KeyPressEvent")


def grab(viewer: Viewer) -> np.ndarray:
    return viewer.scene.image().astype(int)


def open_viewer(tmp_path) -> Viewer:
    scan = make_scan(n_layers=4, n_particles=256, n_tokens=6, n_steps=2)
    v = Viewer(scan, fps=60, frames_per_layer=2, screenshot_dir=tmp_path)
    v.plotter.show(interactive_update=True, auto_close=False)
    v.show(layer=0.0)
    return v


def run_in_window(display: str, scenario, tmp_path) -> None:
    """Run `scenario(tmp_path)` of this module in a fresh process on `display`."""
    root = Path(__file__).resolve().parents[1]
    code = (
        f"import pathlib; from tests.test_view import {scenario.__name__} as s; "
        f"s(pathlib.Path({str(tmp_path)!r}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DISPLAY": display},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def scenario_keys(tmp_path) -> None:
    viewer = open_viewer(tmp_path)
    assert viewer.plotter.render_window.GetClassName() == "vtkXOpenGLRenderWindow"
    start = grab(viewer)
    press(viewer, "bracketright")
    press(viewer, "bracketright")
    assert viewer.layer == 2.0
    after = grab(viewer)
    assert np.abs(after - start).mean() > 0.5
    press(viewer, "bracketleft")
    assert viewer.layer == 1.0
    press(viewer, "minus")
    assert viewer.step == 0
    press(viewer, "equal")
    assert viewer.step == 1
    press(viewer, "s")
    shot = viewer.screenshots[-1]
    assert shot.parent == tmp_path and iio.imread(shot).shape[2] == 3
    viewer.close()


def scenario_toggles(tmp_path) -> None:
    viewer = open_viewer(tmp_path)
    press(viewer, "bracketright")
    base = grab(viewer)
    for key, option in (
        ("u", "show_surface"),
        ("p", "show_points"),
        ("l", "show_lines"),
        ("o", "show_overlays"),
    ):
        before = getattr(viewer.scene.options, option)
        press(viewer, key)
        assert getattr(viewer.scene.options, option) is not before
        assert np.abs(grab(viewer) - base).mean() > 0.05, key
        press(viewer, key)
    assert np.abs(grab(viewer) - base).mean() < 0.05
    press(viewer, "t")
    assert viewer.scene.options.show_labels is False
    assert not any(a.GetVisibility() for a in viewer.scene.panels[0].labels.actors)
    assert np.abs(grab(viewer) - base).mean() > 0.05
    press(viewer, "t")
    assert np.abs(grab(viewer) - base).mean() < 0.05
    press(viewer, "c")
    assert viewer.scene.mode == "slot"  # token colours are the default
    assert np.abs(grab(viewer) - base).mean() > 0.05
    press(viewer, "w")  # VTK's wireframe key is switched off: nothing changes
    assert viewer.scene.panels[0].points_actor.GetProperty().GetRepresentation() == 0
    viewer.close()


def scenario_pick(tmp_path) -> None:
    """A real left click on a particle names its token and layer, in place."""
    from vtkmodules.vtkRenderingCore import vtkCoordinate

    viewer = open_viewer(tmp_path)
    press(viewer, "bracketright")
    panel = viewer.scene.panels[0]
    renderer = viewer.plotter.renderers[0]
    coord = vtkCoordinate()
    coord.SetCoordinateSystemToWorld()
    interactor = viewer.plotter.iren.interactor
    points = panel.cloud.points
    # the particle nearest the camera, so no other particle hides it
    camera = np.array(renderer.GetActiveCamera().GetPosition())
    pid = int(np.argmin(np.linalg.norm(points - camera, axis=1)))
    coord.SetValue(*points[pid])
    x, y = coord.GetComputedDisplayValue(renderer)
    interactor.SetEventInformation(int(x), int(y), 0, 0)
    interactor.InvokeEvent("LeftButtonPressEvent")
    interactor.InvokeEvent("LeftButtonReleaseEvent")
    token = int(viewer.scene.scans[0].particle_tokens[viewer.step, 1, pid])
    assert viewer.picked is not None, "the click picked nothing"
    assert f"token {token}" in viewer.picked and "layer 1" in viewer.picked, viewer.picked
    assert panel.pick.actor.GetInput() == viewer.picked
    viewer.close()


def scenario_play(tmp_path) -> None:
    viewer = open_viewer(tmp_path)
    press(viewer, "space")
    assert viewer.playing
    for _ in range(3):
        viewer.tick()
    assert viewer.layer == 1.5
    press(viewer, "space")
    viewer.tick()
    assert viewer.layer == 1.5 and not viewer.playing
    viewer.layer_slider.GetRepresentation().SetValue(3)
    viewer._on_layer_slider(3.0)
    assert viewer.layer == 3.0
    viewer.close()


def scenario_close_mid_animation(tmp_path) -> None:
    viewer = Viewer(make_diff(n_layers=3, n_particles=128), fps=100, frames_per_layer=50)
    ticks = []

    def close_soon(*_):
        ticks.append(viewer.layer)
        if len(ticks) == 5:
            viewer.plotter.iren.interactor.TerminateApp()

    viewer.plotter.iren.interactor.AddObserver("TimerEvent", close_soon)
    viewer.run()  # returns once the window goes, with the animation still playing
    assert viewer.closed and len(ticks) >= 5
    assert 0 < viewer.layer < 3
    viewer.tick()  # a late timer event after closing is harmless
    viewer.close()


@pytest.mark.slow
@pytest.mark.display
@pytest.mark.parametrize(
    "scenario",
    [scenario_keys, scenario_toggles, scenario_pick, scenario_play, scenario_close_mid_animation],
    ids=["keys", "toggles", "pick", "play", "close-mid-animation"],
)
def test_window(xdisplay, tmp_path, scenario):
    run_in_window(xdisplay, scenario, tmp_path)


def test_pick_callback_names_token_and_layer(tmp_path):
    """The picking callback with a point id, off screen (the display test clicks for real)."""
    scan = make_scan(n_layers=2, n_particles=64, n_tokens=4)
    viewer = Viewer(scan, off_screen=True, screenshot_dir=tmp_path)
    try:
        viewer.show(layer=2.0)
        pid = int(np.flatnonzero(scan.particle_tokens[0, 2] == 2)[0])
        text = viewer.pick(0, pid)
        assert "token 2" in text and "␣brown" in text and "layer 2" in text
        assert viewer.scene.panels[0].pick.actor.GetInput() == text
    finally:
        viewer.close()


def test_no_display_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(LayerscanError, match="render"):
        check_display()
    make_scan(n_layers=2, n_particles=64).save(tmp_path / "s.scan")
    assert main(["view", str(tmp_path / "s.scan")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerscan: error: no display") and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.display
@pytest.mark.parametrize("how, code", [("q", 0), ("close", 0), ("sigterm", 143)])
def test_the_window_quits_cleanly(xdisplay, tmp_path, how, code):
    """`layerscan view` under Xvfb without a window manager: the q key (typed through XTest),
    the close request a window manager sends, and SIGTERM each end it, exit 0, 0 and 143."""
    import signal
    import time

    from tests.x11_events import find_window, request_close, type_key

    make_scan(n_layers=2, n_particles=64).save(tmp_path / "s.scan")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerscan", "view", str(tmp_path / "s.scan")],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DISPLAY": xdisplay, "PYTHONPATH": str(root)},
    )
    try:
        window = find_window(xdisplay, "layerscan")
        time.sleep(2)  # the event loop is running
        if how == "q":
            type_key(xdisplay, "q")
        elif how == "close":
            request_close(xdisplay, window)
        else:
            proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-1500:]
    assert "Traceback" not in err and "Caught a Ctrl-C" not in err
    if how == "sigterm":
        assert err.strip().splitlines()[-1].startswith("layerscan: terminated")
