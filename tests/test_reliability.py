"""Reliability (issue 10): nothing deleted, interrupted runs clean up, every logit lens right."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from layerscan.autoencoder.capture import architectures
from layerscan.autoencoder.capture.architectures import Architecture
from layerscan.autoencoder.capture.hidden_states import capture, lens_logits_fn
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError, Notice
from layerscan.core.outputs import check_run_folder, mark_run_folder, remove_stale_partials
from tests.bad_inputs import (
    CASES,
    QUICK,
    prepare_inputs,
    problems,
    run_in_process,
    start_long_render,
)
from tests.hostile_files import hostile_cases
from tests.synthetic_scan import make_scan
from tests.tiny_models import ARCHITECTURES

PROMPT = "the quick brown fox jumps over the lazy dog"


# ---- the bad-input matrix, in-process --------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_inputs(tmp_path_factory) -> dict[str, str]:
    return prepare_inputs(tmp_path_factory.mktemp("matrix-inputs"))


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.name,
            marks=[pytest.mark.xfail(strict=False, reason=f"owned by the {case.owner}")]
            if case.owner
            else [],
        )
        for case in [*CASES, *hostile_cases()]
    ],
)
def test_bad_input_matrix(case, matrix_inputs, tmp_path):
    """Exit code, one-line message, and nothing the case put there lost or left partial."""
    result = run_in_process(case, tmp_path / "work", matrix_inputs)
    assert problems(case, result) == [], result.stderr[-600:]


def test_overwrite_replaces_only_a_layerscan_folder_and_keeps_it_on_failure(
    matrix_inputs, tmp_path
):
    scan = matrix_inputs["inputs"] + "/x.scan"
    out = tmp_path / "meshes"
    assert main(["export", scan, "-o", str(out)]) == 0
    first = sorted(p.name for p in out.iterdir())
    assert ".layerscan-output.json" in first
    assert main(["export", scan, "-o", str(out), "--format", "ply"]) == 2
    assert sorted(p.name for p in out.iterdir()) == first
    assert main(["export", scan, "-o", str(out), "--format", "ply", "--overwrite"]) == 0
    assert any(p.suffix == ".ply" for p in out.iterdir())
    assert not [p for p in tmp_path.iterdir() if ".partial" in p.name]


@pytest.mark.parametrize("name", ["frames", "movie.mp4"])
def test_a_folder_made_at_the_output_during_the_run_is_kept(tmp_path, name):
    from layerscan.geometry.scene.render import RenderOptions, render_movie
    from layerscan.geometry.scene.scene import SceneOptions

    out = tmp_path / name

    def intrude(i: int) -> None:
        if i == 1:
            out.mkdir()
            (out / "keep.txt").write_text("mine")

    with pytest.raises(LayerscanError, match="layerscan did not write it|is a folder"):
        render_movie(
            make_scan(n_layers=2, n_particles=32),
            out,
            SceneOptions(window_size=(160, 120)),
            RenderOptions(frames_per_layer=2, hold=0, progress=False),
            on_frame=intrude,
        )
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


@pytest.mark.parametrize("state", ["foreign", "run-no-flag", "run-resume", "run-overwrite"])
def test_training_run_folder_rules(tmp_path, state):
    folder = tmp_path / "run"
    if state == "foreign":
        folder.mkdir()
        (folder / "mine.txt").write_text("x")
        with pytest.raises(LayerscanError, match="not a layerscan training run"):
            check_run_folder(folder, overwrite=True)
        return
    mark_run_folder(folder)
    (folder / "checkpoints").mkdir()
    if state == "run-no-flag":
        with pytest.raises(LayerscanError, match="--resume .* or --overwrite"):
            check_run_folder(folder)
    else:
        check_run_folder(folder, resume=state == "run-resume", overwrite=state == "run-overwrite")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
@pytest.mark.parametrize("kind", ["scan", "html", "png"])
def test_output_files_follow_the_umask(tmp_path, umask, kind):
    scan = make_scan(n_layers=2, n_particles=32)
    scan_path = scan.save(tmp_path / "in.scan")
    out = tmp_path / f"out.{kind}"
    previous = os.umask(umask)
    try:
        if kind == "scan":
            scan.save(out)
        else:
            argv = (
                ["render", str(scan_path), *QUICK] if kind == "png" else ["export", str(scan_path)]
            )
            assert main([*argv, "-o", str(out)]) == 0
    finally:
        os.umask(previous)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_partials_go_only_when_their_process_is_dead(tmp_path):
    out = tmp_path / "out.mp4"
    dead, alive = 999_999_999, os.getppid()  # above any pid_max; the process that ran pytest
    names = {
        f".out.{dead}.0123abcd.partial.mp4": False,  # a dead run's partial: removed
        f".out.{dead}.0123abcd.partial-old": False,  # a dead run's replaced folder: removed
        f".out.{alive}.0123abcd.partial.mp4": True,  # a live run's: kept
        f".out.{os.getpid()}.0123abcd.partial.mp4": True,  # this process's own: kept
        ".out.x1y2z3w4.partial.mp4": True,  # no process id (older layerscan): kept
        f".other.{dead}.0123abcd.partial.mp4": True,  # another output's: kept
        f"out.{dead}.0123abcd.partial.mp4": True,  # not hidden: kept
        f".out.{dead}.0123abcd.partial.mp4.txt": True,  # more after the pattern: kept
    }
    for name in names:
        (tmp_path / name).write_text("x")
    (tmp_path / f".out.{dead}.fedcba98.partial.mp4").mkdir()  # a folder partial: removed
    (tmp_path / "out.mp4").write_text("the finished output")  # so "-old" is not put back
    removed = remove_stale_partials(out)
    assert len(removed) == 3
    assert {name for name in names if (tmp_path / name).exists()} == {
        name for name, kept in names.items() if kept
    }


def test_a_folder_replaced_by_a_run_that_died_mid_rename_is_put_back(tmp_path):
    old = tmp_path / ".meshes.999999999.0123abcd.partial-old"
    old.mkdir()
    (old / "cloud.vtp").write_text("x")
    assert remove_stale_partials(tmp_path / "meshes", suffix="") == []
    assert (tmp_path / "meshes" / "cloud.vtp").read_text() == "x" and not old.exists()


# ---- interrupted renders, in a real subprocess -----------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
            if entry.name.isdigit() and int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, ValueError):
            continue
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _start_long_render(folder: Path) -> tuple[subprocess.Popen, list[int]]:
    """A render of many frames of a scan file, caught once its partial file has data."""
    scan = make_scan(n_layers=3, n_particles=64).save(folder / "x.scan")
    proc = start_long_render(folder, [str(scan)])
    return proc, [pid for pid in _children(proc.pid) if _running(pid)]


def _wait_until_gone(pids: list[int], seconds: float = 60) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_running(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if _running(pid)]


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_mid_render_clean_up(tmp_path, signum, code):
    proc, encoders = _start_long_render(tmp_path)
    assert encoders, "no ffmpeg child found"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-800:]
    assert "no partial output was kept" in err.strip().splitlines()[-1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.scan"]
    assert _wait_until_gone(encoders) == []


def test_kill_9_mid_render_kills_ffmpeg_and_the_next_run_removes_the_partial(tmp_path):
    proc, encoders = _start_long_render(tmp_path)
    assert encoders, "no ffmpeg child found"
    proc.kill()
    proc.wait()
    assert _wait_until_gone(encoders) == [], "ffmpeg outlived its parent"
    left = [p for p in tmp_path.iterdir() if ".partial" in p.name]
    assert left, "a kill -9 cannot clean up; the next run must"
    assert main(["render", str(tmp_path / "x.scan"), *QUICK, "-o", str(tmp_path / "out.mp4")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4", "x.scan"]


# ---- the logit lens: the model's own output at the last layer, for every architecture -------


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_lens_at_the_last_layer_is_the_models_output(tiny_models, arch):
    loaded = tiny_models[arch]
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = torch.softmax(loaded.model(ids).logits[0].float(), dim=-1)  # (tokens, vocab)
    raw = torch.from_numpy(capture(loaded, PROMPT, normalization="raw", top_k=0).hidden[-1])
    with torch.no_grad():
        lens = torch.softmax(lens_logits_fn(loaded)(raw), dim=-1)  # (tokens, vocab)
    agreement = (lens.argmax(-1) == expected.argmax(-1)).float().mean().item()
    assert agreement == 1.0
    assert (lens - expected).abs().max().item() <= 1e-4
    for normalization in ("raw", "standardize", "final-norm"):  # every mode, lens included
        result = capture(loaded, PROMPT, normalization=normalization, top_k=2)
        assert result.lens_ids is not None and np.isfinite(result.hidden).all()
    assert np.array_equal(result.lens_ids[-1, :, 0], expected.argmax(-1).numpy())


def test_the_lens_test_catches_a_skipped_head_transform(tiny_models, monkeypatch):
    """Without DistilBERT's vocab_transform → activation → vocab_layer_norm the lens is wrong,
    which is what the issue found; the test above would fail."""
    loaded = tiny_models["distilbert"]
    monkeypatch.setitem(architectures.ARCHITECTURES, "distilbert", Architecture(None, lens=()))
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = loaded.model(ids).logits[0].argmax(-1)
        raw = torch.from_numpy(capture(loaded, PROMPT, normalization="raw", top_k=0).hidden[-1])
        wrong = lens_logits_fn(loaded)(raw).argmax(-1)
    assert (wrong == expected).float().mean().item() < 0.5


@pytest.mark.parametrize("normalization", ["raw", "standardize"])
def test_unknown_architecture_turns_the_lens_off_with_a_notice(
    tiny_models, monkeypatch, normalization
):
    loaded = tiny_models["gpt2"]
    monkeypatch.setattr(loaded.model.config, "model_type", "mystery-net")
    with pytest.warns(Notice, match="logit lens off.*'mystery-net'"):
        result = capture(loaded, PROMPT, normalization=normalization, top_k=3)
    assert result.lens_ids is None and result.hidden.shape[0] == 3
    with pytest.raises(LayerscanError, match="'mystery-net' has no known final norm"):
        capture(loaded, PROMPT, normalization="final-norm")


def test_unknown_lm_head_turns_the_lens_off_never_wrong(tiny_models, monkeypatch):
    loaded = tiny_models["llama"]
    monkeypatch.setitem(architectures.ARCHITECTURES, "llama", Architecture("norm", lens=None))
    with pytest.warns(Notice, match="does not know its LM head"):
        result = capture(loaded, PROMPT, top_k=3)
    assert result.lens_ids is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", Notice)
        assert capture(loaded, PROMPT, top_k=0).lens_ids is None  # no lens asked: no notice


@pytest.mark.parametrize("arch", ["stablelm", "mpt"])
@pytest.mark.parametrize("normalization", ["raw", "standardize", "final-norm"])
def test_stablelm_and_mpt_work_in_every_normalization_from_the_command_line(
    tiny_model_dirs, arch, normalization, tmp_path, capsys
):
    out = tmp_path / "cap.safetensors"
    assert (
        main(
            [
                "capture",
                PROMPT,
                "--model",
                str(tiny_model_dirs[arch]),
                "--device",
                "cpu",
                "--normalization",
                normalization,
                "-o",
                str(out),
            ]
        )
        == 0
    )
    assert "logit lens" in capsys.readouterr().out and out.is_file()


def test_the_command_line_prints_the_lens_notice_as_one_line(tiny_model_dirs, monkeypatch, capsys):
    monkeypatch.setitem(architectures.ARCHITECTURES, "llama", Architecture("norm", lens=None))
    assert (
        main(
            [
                "capture",
                PROMPT,
                "--model",
                str(tiny_model_dirs["llama"]),
                "--device",
                "cpu",
                "--normalization",
                "raw",
            ]
        )
        == 0
    )
    notes = [line for line in capsys.readouterr().err.splitlines() if "logit lens off" in line]
    assert len(notes) == 1 and notes[0].startswith("layerscan: note: logit lens off: ")
