"""`layerscan render PROMPT` draws in a process forked at start-up (`RenderProcess`): the same
movie as one process draws, its failures as the parent's one line, nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from layerscan.cli.main import main
from layerscan.cli.render_process import RenderProcess
from layerscan.core.errors import LayerscanError
from layerscan.geometry.scene.render import RenderOptions
from layerscan.geometry.scene.scene import SceneOptions
from tests.bad_inputs import QUICK, start_long_render
from tests.synthetic_scan import make_scan


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _descendants(pid: int) -> list[int]:
    """Every living process below `pid` (children, their children ...)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = [], [pid]
    while frontier:
        below = [child for child, parent in parents.items() if parent in frontier]
        found += below
        frontier = below
    return found


def test_a_prompt_drawn_by_the_forked_process_is_the_one_process_movie(
    tiny_model_dirs, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LAYERSCAN_CACHE", str(tmp_path / "cache"))  # the first-use fit's
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    forked = []
    start = RenderProcess.__init__

    def record(self, *args, **kwargs):
        start(self, *args, **kwargs)
        forked.append(self.pid)

    monkeypatch.setattr(RenderProcess, "__init__", record)
    model = ["--model", str(tiny_model_dirs["llama"])]
    folders = []
    for processes in ("1", "2"):
        out = tmp_path / f"p{processes}"
        argv = ["render", "the fox jumps over", *model, *QUICK, "--processes", processes]
        assert main([*argv, "-o", str(out)]) == 0
        folders.append(sorted(out.glob("*.png")))
    assert len(forked) == 1, "--processes 2 forks the movie process, 1 does not"
    assert _gone(forked[0])
    one, two = folders
    assert len(one) == len(two) > 1
    for a, b in zip(one, two, strict=True):
        assert np.array_equal(iio.imread(a), iio.imread(b)), b.name
    assert capsys.readouterr().out.count("wrote") == 2
    assert list(private.iterdir()) == []  # the scan handed over is gone


def test_a_failure_in_the_forked_process_is_the_parents_one_line(tmp_path):
    scene = SceneOptions(window_size=(160, 120))
    drawer = RenderProcess(scene)
    try:
        with pytest.raises(LayerscanError, match="unknown output type '.xyz'"):
            drawer.render_movie(
                make_scan(n_layers=2, n_particles=32), tmp_path / "x.xyz", scene, RenderOptions()
            )
    finally:
        drawer.close()
    assert drawer.pid is None and list(tmp_path.iterdir()) == []


def test_a_parent_that_stops_before_its_scan_ends_the_waiting_process():
    drawer = RenderProcess(SceneOptions())
    pid = drawer.pid
    drawer.close()  # the model failed to load, say: no job ever comes
    assert drawer.pid is None and _gone(pid)


def _start_prompt_render(folder: Path, tiny_model: Path) -> subprocess.Popen:
    """A long render of a prompt, caught once its partial movie (the child's) has data."""
    (folder / "tmp").mkdir()
    source = ["the fox jumps over the dog", "--model", str(tiny_model), "--processes", "2"]
    env = {"LAYERSCAN_CACHE": str(folder / "cache"), "TMPDIR": str(folder / "tmp")}
    return start_long_render(folder, source, env)


def _wait_until_gone(pids: list[int], seconds: float = 60) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if not _gone(pid)]


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in ("cache", "tmp")) + sorted(
        p.name for p in (folder / "tmp").iterdir()
    )


def test_sigterm_mid_render_of_a_prompt_stops_every_process_and_keeps_nothing(
    tiny_model_dirs, tmp_path
):
    proc = _start_prompt_render(tmp_path, tiny_model_dirs["llama"])
    below = _descendants(proc.pid)
    assert len(below) >= 2, "the movie process and its encoder"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-800:]
    assert "no partial output was kept" in err.strip().splitlines()[-1]
    assert _wait_until_gone(below) == [] and _left(tmp_path) == []


def test_kill_9_of_the_parent_ends_the_movie_process_which_removes_its_partial(
    tiny_model_dirs, tmp_path
):
    proc = _start_prompt_render(tmp_path, tiny_model_dirs["llama"])
    below = _descendants(proc.pid)
    proc.kill()
    proc.wait()
    assert _wait_until_gone(below) == [], "the movie process outlived its parent"
    assert _left(tmp_path) == []  # its partial movie, and the scan it was handed
