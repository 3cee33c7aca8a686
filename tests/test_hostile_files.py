"""Hostile files and outputs (issue 17): special-file outputs, validated loaders, full disks,
one writer per output, corrupt caches, and fuzzed scan, capture and autoencoder files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from layerscan.autoencoder.capture.capture_file import Capture
from layerscan.autoencoder.capture.model_checks import cached_model_problem, check_cache_place
from layerscan.cli.main import main
from layerscan.core.errors import Caution, LayerscanError
from layerscan.core.limits import memory_bytes
from layerscan.core.locks import lock_path
from layerscan.geometry.diff_scan import load_any
from layerscan.geometry.scan_file import Scan
from tests.bad_inputs import QUICK, REPO, prepare_inputs
from tests.hostile_files import (
    DIFF_EDITS,
    SCAN_EDITS,
    edited,
    make_fifo,
    make_null_device,
    make_socket,
    nan_r2,
    read_container,
    sparse_huge,
    write_container,
)
from tests.synthetic_scan import make_diff, make_scan


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    make_scan(n_layers=3, n_particles=64).save(root / "x.scan")
    make_diff(n_layers=3, n_particles=64).save(root / "d.scan")
    return {"scan": root / "x.scan", "diff": root / "d.scan", "root": root}


# ---- outputs -------------------------------------------------------------------------------


OUTPUTS = {
    "render png": ("render", "{scan}", *QUICK, "-o"),
    "export html": ("export", "{scan}", "-o"),
    "export meshes": ("export", "{scan}", "-o"),
    "diff scan": ("diff", "{diff}", "-o"),
}


@pytest.mark.parametrize("special", ["device", "fifo", "socket"])
@pytest.mark.parametrize("kind", list(OUTPUTS))
def test_a_special_file_output_is_refused_and_kept(kind, special, files, tmp_path, capsys):
    suffix = {"render png": ".png", "export html": ".html", "diff scan": ".scan"}.get(kind, "")
    target = tmp_path / f"out{suffix}"
    if special == "device" and not make_null_device(target):
        pytest.skip("mknod is not permitted here (needs CAP_MKNOD)")
    if special == "fifo":
        make_fifo(target)
    if special == "socket":
        make_socket(target)
    mode = target.stat().st_mode
    argv = [a.format(scan=files["scan"], diff=files["diff"]) for a in OUTPUTS[kind]]
    assert main([*argv, str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "layerscan writes only regular" in err
    assert target.stat().st_mode == mode  # still the device, pipe or socket
    assert sorted(p.name for p in tmp_path.iterdir()) == [target.name]


def test_a_link_to_dev_null_is_refused(files, tmp_path, capsys):
    (tmp_path / "out.png").symlink_to("/dev/null")
    assert main(["render", str(files["scan"]), *QUICK, "-o", str(tmp_path / "out.png")]) == 2
    assert "character device" in capsys.readouterr().err
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_a_legal_long_name_works_and_its_temporary_name_fits(files, tmp_path):
    name = "n" * 245 + ".png"  # 249 bytes: the temporary name must still fit 255
    assert main(["render", str(files["scan"]), *QUICK, "-o", str(tmp_path / name)]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [name]


# ---- loaders ----------------------------------------------------------------------------------


@pytest.mark.parametrize("what", list(SCAN_EDITS))
def test_every_hostile_scan_is_one_clear_sentence(what, files, tmp_path):
    edit, message = SCAN_EDITS[what]
    path = edited(files["scan"], tmp_path / "bad.scan", edit)
    with pytest.raises(LayerscanError) as caught:
        load_any(path)
    text = str(caught.value)
    assert message in text and "\n" not in text and "recreate" in text or "meta" in text


@pytest.mark.parametrize("what", list(DIFF_EDITS))
def test_every_hostile_diff_is_refused(what, files, tmp_path):
    edit, message = DIFF_EDITS[what]
    with pytest.raises(LayerscanError, match="corrupt or edited"):
        load_any(edited(files["diff"], tmp_path / "bad.scan", edit))


def test_a_scan_with_nan_r2_loads_with_a_warning(files, tmp_path):
    path = edited(files["scan"], tmp_path / "nan.scan", nan_r2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scan = Scan.load(path)
    assert np.isnan(scan.reconstruction_r2).any()
    assert any(issubclass(w.category, Caution) and "NaN" in str(w.message) for w in caught)


def test_a_sparse_file_declaring_a_huge_array_is_refused_unread(tmp_path):
    path = tmp_path / "huge.scan"
    sparse_huge(path, memory_bytes() // 4 + (1 << 30))
    with pytest.raises(LayerscanError, match="a quarter of this machine's memory"):
        load_any(path)


def test_a_header_size_of_2_to_the_62_is_refused(files, tmp_path):
    data = bytearray(files["scan"].read_bytes())
    data[:8] = (2**62).to_bytes(8, "little")
    (tmp_path / "h.scan").write_bytes(bytes(data))
    with pytest.raises(LayerscanError, match="header declares"):
        load_any(tmp_path / "h.scan")


@pytest.fixture(scope="module")
def capture_file(tiny_model_dirs, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("capture") / "cap.safetensors"
    argv = ["capture", "the fox", "--model", str(tiny_model_dirs["llama"]), "-o", str(path)]
    assert main(argv) == 0 and path.is_file()
    return path


CAPTURE_EDITS = {
    "hidden float16": (lambda a, h: a.__setitem__("hidden", a["hidden"].astype(np.float16))),
    "hidden with NaN": (lambda a, h: a["hidden"].__setitem__((0, 0, 0), np.nan)),
    "too few token ids": (lambda a, h: a.__setitem__("token_ids", a["token_ids"][:1])),
    "a negative token id": (lambda a, h: a["token_ids"].__setitem__(0, -3)),
    "tokens a string": (lambda a, h: h["meta"].__setitem__("tokens", "abc")),
    "n_prompt_tokens 1e12": (lambda a, h: h["meta"].__setitem__("n_prompt_tokens", 10**12)),
    "an unknown header key": (lambda a, h: h["meta"].__setitem__("evil", 1)),
    "a missing header key": (lambda a, h: h["meta"].pop("model_id")),
    "lens ids of another shape": (lambda a, h: a.__setitem__("lens_ids", a["lens_ids"][:, :1])),
    "a 2-D hidden array": (lambda a, h: a.__setitem__("hidden", a["hidden"][0])),
}


@pytest.mark.parametrize("what", list(CAPTURE_EDITS))
def test_every_hostile_capture_is_refused(what, capture_file, tmp_path):
    arrays, header = read_container(capture_file)
    arrays = {k: v.copy() for k, v in arrays.items()}
    CAPTURE_EDITS[what](arrays, header)
    write_container(tmp_path / "bad.safetensors", arrays, header)
    with pytest.raises(LayerscanError, match="capture"):
        Capture.load(tmp_path / "bad.safetensors")
    Capture.load(capture_file)  # the original still loads


# ---- full disks -----------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 4 KiB tmpfs (one page): every output overflows it. Skipped where mounting is not
    allowed (needs root or CAP_SYS_ADMIN)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()[:100]}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


BIG = (*QUICK, "--resolution", "640x480")
"""Frames too large for the 4 KiB disk."""
FULL_DISK_OUTPUTS = {
    "mp4": ("render", "{scan}", *BIG, "-o", "{out}/o.mp4"),
    "gif": ("render", "{scan}", *BIG, "-o", "{out}/o.gif"),
    "png": ("render", "{scan}", *BIG, "-o", "{out}/o.png"),
    "png frames": ("render", "{scan}", *BIG, "-o", "{out}/frames"),
    "html": ("export", "{scan}", "-o", "{out}/page.html"),
    "vtp meshes": ("export", "{scan}", "-o", "{out}/m"),
    "vtk meshes": ("export", "{scan}", "-o", "{out}/m", "--format", "vtk"),
    "ply meshes": ("export", "{scan}", "-o", "{out}/m", "--format", "ply"),
    "diff scan": ("diff", "{diff}", "-o", "{out}/again.scan"),
    "heatmap png": ("heatmap", "{scan}", "-o", "{out}/h.png"),
}


@pytest.mark.parametrize("kind", list(FULL_DISK_OUTPUTS))
def test_a_full_disk_is_one_line_and_leaves_nothing(kind, files, full_disk, capsys):
    argv = [
        a.format(scan=files["scan"], diff=files["diff"], out=full_disk)
        for a in FULL_DISK_OUTPUTS[kind]
    ]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err[-1].startswith("layerscan: error:") and "No space left" in err[-1], err
    assert "Error:" not in err[-1].split("error:", 1)[1][:40]
    assert list(full_disk.iterdir()) == []  # no partial file or folder


def test_a_full_disk_while_capturing_is_one_line(tiny_model_dirs, full_disk, capsys):
    out = full_disk / "cap.safetensors"
    assert main(["capture", "the fox", "--model", str(tiny_model_dirs["llama"]), "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert "disk is full" in err[-1] and list(full_disk.iterdir()) == []


def test_a_full_disk_while_saving_a_rendered_scan_is_one_line(
    tiny_model_dirs, full_disk, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("LAYERSCAN_CACHE", str(tmp_path / "cache"))  # the first-use fit's
    argv = ["render", "the fox", "--model", str(tiny_model_dirs["llama"]), *QUICK]
    code = main([*argv, "-o", str(tmp_path / "o.png"), "--save-scan", str(full_disk / "s.scan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "disk is full" in err[-1], err
    assert list(full_disk.iterdir()) == []


def test_a_full_disk_while_training_is_one_line_and_keeps_no_broken_checkpoint(
    tiny_model_dirs, full_disk, tmp_path, capsys
):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n\n" * 40, encoding="utf-8")
    model = tiny_model_dirs["llama"]
    argv = ["train", "--config", "tiny", "--corpus", str(corpus), "--no-progress"]
    argv += ["--set", f"data.language_model={model}", "--cache-dir", str(tmp_path / "cache")]
    code = main([*argv, "--output", str(full_disk / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "disk is full" in err[-1] and "--resume" in err[-1], err
    assert "Traceback" not in "\n".join(err)
    left = [p for p in full_disk.rglob("*") if p.suffix in (".ckpt", ".safetensors")]
    assert left == []  # no checkpoint or weights file cut short


# ---- one writer per output ------------------------------------------------------------------


def _hold_lock(target: Path, seconds: float, then: str = "") -> subprocess.Popen:
    """A process that holds `target`'s lock for `seconds` (running `then` before releasing)."""
    code = (
        "import sys, time, shutil\n"
        "from layerscan.core.locks import exclusive\n"
        f"with exclusive({str(target)!r}, 'test', wait=False):\n"
        "    print('held', flush=True)\n"
        f"    time.sleep({seconds})\n"
        f"    {then or 'pass'}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_train_into_the_same_output_is_refused(tmp_path, capsys, tiny_model_dirs):
    run = tmp_path / "run"
    holder = _hold_lock(run, 30)
    try:
        corpus = tmp_path / "corpus.txt"
        corpus.write_text("the quick brown fox\n")
        argv = ["train", "--config", "tiny", "--corpus", str(corpus), "--no-progress"]
        argv += ["--set", f"data.language_model={tiny_model_dirs['llama']}"]
        argv += ["--cache-dir", str(tmp_path / "cache"), "--output", str(run)]
        assert main(argv) == 2
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "another layerscan run is writing it now" in err
    assert not run.exists()


def test_a_second_fit_waits_for_the_first_and_reuses_it(tiny_models, tmp_path, monkeypatch):
    from layerscan.autoencoder import quick_fit
    from layerscan.autoencoder.config import FitOptions

    loaded = tiny_models["llama"]
    root = tmp_path / "cache"
    first = quick_fit.fitted_autoencoder(loaded, "final-norm", FitOptions(fit_tokens=64), root)
    folder = quick_fit.fit_folder(
        loaded, quick_fit.fit_config(loaded, "final-norm"), FitOptions(fit_tokens=64), root
    )
    saved = tmp_path / "saved"
    folder.rename(saved)
    # another process holds the fit's lock and lands the fit after 2 s; this one must wait
    holder = _hold_lock(folder, 2, then=f"shutil.copytree({str(saved)!r}, {str(folder)!r})")
    monkeypatch.setattr(quick_fit, "fit_autoencoder", lambda *a, **k: pytest.fail("fitted twice"))
    second = quick_fit.fitted_autoencoder(loaded, "final-norm", FitOptions(fit_tokens=64), root)
    holder.wait()
    assert second.config.n_particles == first.config.n_particles
    assert lock_path(folder).parent == folder.parent


@pytest.mark.slow
def test_sigterm_during_train_exits_143_with_a_layerscan_line(tmp_path, tiny_model_dirs):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog\n" * 200)
    argv = ["train", "--config", "tiny", "--corpus", str(corpus), "--no-progress"]
    argv += ["--set", f"data.language_model={tiny_model_dirs['llama']}"]
    argv += ["--set", "train.max_epochs=10000", "--set", "train.early_stopping_patience=0"]
    argv += ["--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "run")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "layerscan", *argv],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1"),
    )
    deadline = time.monotonic() + 240
    while not (tmp_path / "run" / "checkpoints").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-500:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-800:]
    assert err.strip().splitlines()[-1].startswith("layerscan: terminated")


# ---- corrupt caches ---------------------------------------------------------------------------


def _halve(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def _model_folder(root: Path, tiny_model_dirs) -> Path:
    import shutil

    folder = root / "model"
    shutil.copytree(tiny_model_dirs["llama"], folder)
    (folder / "tokenizer.json").write_text((folder / "tokenizer.json").read_text())
    return folder


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f: (f / "model.safetensors").write_bytes(b"\x10" + b"\0" * 7), "SafetensorError"),
        (lambda f: _halve(f / "model.safetensors"), "SafetensorError"),
        (lambda f: (f / "config.json").write_text("{garbage"), "JSONDecodeError"),
        (lambda f: (f / "config.json").write_text("[1]"), "not a model config"),
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer.json is missing"),
    ],
)
def test_a_damaged_cached_model_is_found_before_loading(damage, problem, tmp_path, tiny_model_dirs):
    folder = _model_folder(tmp_path, tiny_model_dirs)
    if not (folder / "tokenizer.json").is_file():
        pytest.skip("the tiny model has no tokenizer.json")
    assert cached_model_problem(folder) is None
    damage(folder)
    assert problem in cached_model_problem(folder)


def test_a_cached_model_replaced_by_a_file_names_it_and_the_fix(tmp_path):
    (tmp_path / "model").write_text("not a folder")
    with pytest.raises(LayerscanError, match="delete it and rerun"):
        check_cache_place(tmp_path / "model")


def test_a_truncated_model_names_its_folder(tiny_model_dirs, tmp_path, capsys):
    folder = _model_folder(tmp_path, tiny_model_dirs)
    _halve(folder / "model.safetensors")
    assert main(["capture", "hi", "--model", str(folder)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(folder) in err, err


# ---- fuzzing ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scan", "diff", "capture", "autoencoder"])
def test_fuzzed_files_load_or_fail_in_one_line(kind, files, capture_file, tmp_path_factory):
    """1,000 random mutations (truncations, byte flips, header-length and JSON header edits,
    config values) of a real file: each a valid load or one LayerscanError line; no other
    exception, no crash of the process, peak memory bounded."""
    if kind == "autoencoder":
        source = Path(prepare_inputs(tmp_path_factory.mktemp("ae-inputs"))["ae"])
    else:
        source = {"scan": files["scan"], "diff": files["diff"], "capture": capture_file}[kind]
    work = tmp_path_factory.mktemp(f"fuzz-{kind}")
    report = work / "report.json"
    code = (
        "import sys; from tests.hostile_files import fuzz_main; "
        f"fuzz_main({'scan' if kind == 'diff' else kind!r}, {str(source)!r}, 1000, 17, "
        f"{str(work / 'w')!r}, {str(report)!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-1500:]  # a segfault or abort fails here
    results = json.loads(report.read_text())
    assert results["crash"] == [], results["crash"][:5]
    assert all("\n" not in message for message in results["error"])
    assert len(results["ok"]) + len(results["error"]) == 1000
    assert results["peak_mib"] < 3000
    print(
        f"{kind}: {len(results['ok'])} loaded, {len(results['error'])} one-line errors, "
        f"0 crashes, peak {results['peak_mib']:.0f} MiB"
    )


def _cache(folder: Path, states: np.ndarray) -> Path:
    """A hidden-state cache folder of one shard (n_layers+1, tokens, d_model), two windows."""
    from layerscan.autoencoder.cache import CACHE_FORMAT_VERSION, META_NAME

    folder.mkdir()
    np.save(folder / "shard-0000.npy", states)
    half = states.shape[1] // 2
    meta = {
        "format_version": CACHE_FORMAT_VERSION,
        "n_layers": states.shape[0] - 1,
        "d_model": states.shape[2],
        "shards": ["shard-0000.npy"],
        "windows": [[0, 0, half, 0], [0, half, half, 1]],
    }
    (folder / META_NAME).write_text(json.dumps(meta))
    return folder


def test_a_nan_hidden_state_shard_names_the_cache_and_the_fix(tmp_path):
    from layerscan.autoencoder.cache import HiddenStateCache

    states = np.ones((3, 8, 4), np.float32)  # (n_layers+1, tokens, d_model)
    states[1, 6, 2] = np.nan
    cache = HiddenStateCache(_cache(tmp_path / "c", states))
    assert cache.window(0).shape == (3, 4, 4)
    with pytest.raises(LayerscanError, match=r"shard-0000.npy holds NaN.*delete the folder"):
        cache.window(1)


def test_a_cache_window_outside_its_shard_is_found_at_open(tmp_path):
    from layerscan.autoencoder.cache import META_NAME, HiddenStateCache

    folder = _cache(tmp_path / "c", np.ones((3, 8, 4), np.float32))
    meta = json.loads((folder / META_NAME).read_text())
    meta["windows"][1] = [0, 6, 10**9, 1]
    (folder / META_NAME).write_text(json.dumps(meta))
    with pytest.raises(LayerscanError, match="outside its shard"):
        HiddenStateCache(folder)


def test_a_capture_scaled_by_1e30_warns_or_refuses_never_silently(tiny_models):
    """States far outside what the autoencoder was fitted on: every R² NaN. The scan warns
    (or refuses in one line); it never draws as if nothing happened."""
    import dataclasses

    from layerscan.autoencoder.capture.capture_file import CaptureOptions
    from layerscan.autoencoder.capture.hidden_states import capture
    from layerscan.geometry.build import scan_capture
    from layerscan.geometry.scan_options import ScanOptions
    from tests.test_pipeline import PROMPT, autoencoder_for

    loaded = tiny_models["llama"]
    trained = autoencoder_for(loaded, [PROMPT])
    states = capture(loaded, PROMPT, CaptureOptions(top_k=0))
    scaled = dataclasses.replace(states, hidden=states.hidden * np.float32(1e30))
    options = ScanOptions(n_epochs=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            scan_capture(scaled, trained, options)
        except LayerscanError as exc:
            assert "\n" not in str(exc)
            return
    assert any(issubclass(w.category, Caution) and "not a number" in str(w.message) for w in caught)


@pytest.mark.slow
def test_a_damaged_embedded_model_cache_is_converted_again(tmp_path, monkeypatch):
    """The embedded model's cached conversion with its tokenizer deleted is converted again
    (about 30 s) instead of failing with advice to download it."""
    from layerscan.autoencoder.capture import loading

    monkeypatch.setenv("LAYERSCAN_CACHE", str(tmp_path))
    folder = loading.embedded_model_folder()  # first conversion into the empty cache
    (folder / "tokenizer.json").unlink()
    assert loading.embedded_model_folder() == folder
    assert cached_model_problem(folder) is None
