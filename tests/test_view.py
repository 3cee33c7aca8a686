"""The desktop viewer driven under a virtual X display (Xvfb) with real key events."""

from __future__ import annotations

import os
import shutil
import subprocess

import imageio.v3 as iio
import numpy as np
import pytest

from layerscan.cli import main
from layerscan.errors import LayerscanError
from layerscan.geometry.window import Viewer, check_display
from tests.synthetic_scan import make_diff, make_scan


@pytest.fixture(scope="module")
def xdisplay():
    """A private Xvfb display for this module; skipped only when Xvfb is not installed."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb not found (install the Debian package `xvfb`; .ci/run does)")
    read, write = os.pipe()
    proc = subprocess.Popen([exe, "-displayfd", str(write), "-screen", "0", "1280x800x24",
                             "-nolisten", "tcp"], pass_fds=(write,),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as fh:
        number = fh.readline().strip()
    if not number:
        proc.kill()
        pytest.fail("Xvfb started but reported no display number")
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{number}"
    yield os.environ["DISPLAY"]
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old
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


@pytest.fixture
def viewer(xdisplay, tmp_path):
    scan = make_scan(n_layers=4, n_particles=256, n_tokens=6, n_steps=2)
    v = Viewer(scan, fps=60, frames_per_layer=2, screenshot_dir=tmp_path)
    v.plotter.show(interactive_update=True, auto_close=False)
    v.show(layer=0.0)
    yield v
    v.close()


@pytest.mark.display
def test_keys_step_layers_and_change_the_window(viewer, tmp_path):
    assert viewer.plotter.render_window.GetClassName() != "vtkEGLRenderWindow"
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


@pytest.mark.display
def test_toggle_keys_and_colour_cycle(viewer):
    press(viewer, "bracketright")
    base = grab(viewer)
    for key, option in (("u", "show_surface"), ("p", "show_points"), ("l", "show_lines"),
                        ("o", "show_overlays")):
        before = getattr(viewer.scene.options, option)
        press(viewer, key)
        assert getattr(viewer.scene.options, option) is not before
        assert np.abs(grab(viewer) - base).mean() > 0.05, key
        press(viewer, key)
    assert np.abs(grab(viewer) - base).mean() < 0.05
    press(viewer, "c")
    assert viewer.scene.mode == "density"
    assert np.abs(grab(viewer) - base).mean() > 0.05
    press(viewer, "w")  # VTK's wireframe key is switched off: nothing changes
    assert viewer.scene.panels[0].points_actor.GetProperty().GetRepresentation() == 0


@pytest.mark.display
def test_space_plays_and_ticks_advance(viewer):
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


@pytest.mark.display
def test_closing_mid_animation_exits_cleanly(xdisplay):
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


def test_no_display_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(LayerscanError, match="render"):
        check_display()
    make_scan(n_layers=2, n_particles=64).save(tmp_path / "s.scan")
    assert main(["view", str(tmp_path / "s.scan")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerscan: error: no display") and err.count("\n") == 1
