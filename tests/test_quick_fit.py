"""An autoencoder fitted on first use for any model: cached, reused, interrupted cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from layerscan.autoencoder.capture.hidden_states import hidden_states_batch
from layerscan.autoencoder.moments import StateMoments
from layerscan.autoencoder.quick_fit import (
    FOLDER,
    FitOptions,
    fit_config,
    fitted_autoencoder,
    needs_fit,
)
from layerscan.cli.main import main
from layerscan.geometry.scan_file import Scan

REPO = Path(__file__).resolve().parent.parent
PROMPT = "the quick brown fox jumps over the lazy dog"
FAST = ["--epochs", "20"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty layerscan cache for this test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("LAYERSCAN_CACHE", str(root))
    return root


def fitted_entries(cache: Path) -> list[Path]:
    """Everything in the fits folder (complete fits and anything else left there) but the
    file locks, which stay, empty, as filelock's do (core/locks.py)."""
    folder = cache / FOLDER
    entries = folder.iterdir() if folder.is_dir() else ()
    return sorted(p for p in entries if not p.name.endswith(".layerscan-lock"))


def test_moments_give_the_statistics_of_the_states():
    rng = np.random.default_rng(0)
    windows = [torch.from_numpy(rng.normal(50.0, 3.0, (3, n, 8))) for n in (5, 9, 2)]
    moments = StateMoments(n_layers=2, d_model=8)
    for states in windows:
        moments.add(states.float())
    states = torch.cat(windows, 1).float().double()  # (3, 16, 8)
    for mean in (states.mean(1), states[:, :4].mean(1)):  # their own mean, and another one
        got_mean, scale, covariance = moments.statistics(mean.float())
        centered = states - mean[:, None]
        want_scale = centered.pow(2).mean((1, 2)).sqrt()
        normed = centered / want_scale[:, None, None]
        want = torch.einsum("ltd,lte->lde", normed, normed) / states.shape[1]
        assert torch.allclose(got_mean.double(), mean, atol=1e-5)
        assert torch.allclose(scale.double(), want_scale, rtol=1e-5)
        assert torch.allclose(covariance.double(), want, atol=1e-5)
    assert torch.allclose(moments.mean(), states.mean(1), atol=1e-9)


def test_the_packaged_text_is_the_embedded_models_default_corpus():
    from layerscan.autoencoder.capture.loading import EMBEDDED_MODEL_ID, embedded_revision
    from layerscan.autoencoder.config import load_config
    from layerscan.autoencoder.corpus import (
        PACKAGED_TEXT_KEY,
        default_corpus_key,
        packaged_documents,
        seed_prompts,
    )

    data = load_config(REPO / "configs" / "default.yaml").data
    key = default_corpus_key(
        seed_prompts(data.max_documents),
        EMBEDDED_MODEL_ID,
        embedded_revision(),
        data.continuation_tokens,
        data.continuations_per_seed,
        0,
    )
    assert key == PACKAGED_TEXT_KEY  # so training the default reads it instead of writing it
    documents = packaged_documents()
    assert len(documents) == len(seed_prompts()) == 318
    assert all(doc.count("\n\n") >= 2 for doc in documents)  # three passages each


def test_which_models_get_a_fit():
    assert not needs_fit(None, "embedded", "final-norm")  # the packaged one serves
    assert needs_fit(None, "embedded", "raw")  # it was trained on final-norm states
    assert needs_fit("fit", "embedded", "final-norm")  # asked for
    assert needs_fit(None, "some/model", "final-norm")
    assert not needs_fit("runs/mine/artifact", "some/model", "final-norm")


def test_first_use_fits_and_caches_then_every_command_reuses_it(
    tiny_model_dirs, cache, tmp_path, capsys, monkeypatch
):
    model = str(tiny_model_dirs["llama"])
    out = tmp_path / "first.scan"
    assert main(["scan", PROMPT, "-o", str(out), "--model", model, *FAST]) == 0
    err = capsys.readouterr().err
    assert "has no autoencoder yet: fitting one" in err and "fitted in" in err
    [entry] = fitted_entries(cache)
    weights = entry / "weights.safetensors"
    written = weights.stat().st_mtime_ns
    assert Scan.load(out).reconstruction_r2.min() > 0.999  # the fit reconstructs the prompt

    time.sleep(0.01)
    assert (
        main(
            [
                "diff",
                PROMPT,
                "the lazy dog",
                "-o",
                str(tmp_path / "d.scan"),
                "--model",
                model,
                *FAST,
            ]
        )
        == 0
    )
    assert main(["scan", PROMPT, "-o", str(tmp_path / "again.scan"), "--model", model, *FAST]) == 0
    err = capsys.readouterr().err
    assert "fitting" not in err and "fitted" not in err
    assert fitted_entries(cache) == [entry] and weights.stat().st_mtime_ns == written

    # --autoencoder DIR still overrides: with another (empty) cache, nothing is fitted
    other = tmp_path / "other-cache"
    monkeypatch.setenv("LAYERSCAN_CACHE", str(other))
    assert (
        main(
            [
                "scan",
                PROMPT,
                "-o",
                str(tmp_path / "given.scan"),
                "--model",
                model,
                "--autoencoder",
                str(entry),
                *FAST,
            ]
        )
        == 0
    )
    assert "fitting" not in capsys.readouterr().err and fitted_entries(other) == []


def test_a_fit_holds_the_statistics_of_its_windows(tiny_models, cache, tmp_path):
    from layerscan.autoencoder.corpus import packaged_documents
    from layerscan.autoencoder.data import sample_windows, split_windows, token_windows

    loaded = tiny_models["gpt2"]
    options = FitOptions(fit_tokens=3000)
    trained = fitted_autoencoder(loaded, "standardize", options, root=tmp_path, progress=False)
    config = fit_config(loaded, "standardize")
    assert trained.config.max_len == config.model.max_len == 64  # the model's context
    assert trained.config.normalization == "standardize"
    windows, owner = token_windows(loaded.tokenizer, packaged_documents(), 64)
    train, held_out = split_windows(owner, config.data.val_fraction, config.train.seed)
    picked = sample_windows(train, [len(w) for w in windows], 3000, config.train.seed)
    assert not set(picked) & set(held_out)
    states = np.concatenate(
        [hidden_states_batch(loaded, [windows[i]], "standardize")[0] for i in picked], 1
    )  # (n_layers+1, n_tokens, d_model)
    assert 3000 <= states.shape[1] < 3000 + 64
    mean = states.mean(1)
    scale = np.sqrt(((states - mean[:, None]) ** 2).mean((1, 2)))
    assert np.allclose(trained.model.mean.numpy(), mean, atol=1e-4)
    assert np.allclose(trained.model.scale.numpy(), scale, rtol=1e-4)
    held = hidden_states_batch(loaded, [windows[held_out[0]]], "standardize")[0]
    assert trained.encode(held).reconstruction_r2.min() > 0.999
    # the cached fit is reused
    again = fitted_autoencoder(loaded, "standardize", options, root=tmp_path, progress=False)
    assert torch.equal(again.model.mean, trained.model.mean)
    assert len(fitted_entries(tmp_path)) == 1


def test_ctrl_c_during_a_fit_leaves_nothing_and_the_next_run_fits(
    tiny_model_dirs, cache, tmp_path, capsys, monkeypatch
):
    import layerscan.autoencoder.quick_fit as quick_fit

    batches = []

    def interrupted(loaded, batch, normalization):
        batches.append(len(batch))
        if len(batches) == 3:
            raise KeyboardInterrupt  # what Ctrl-C raises, here mid-fit
        return hidden_states_batch(loaded, batch, normalization)

    monkeypatch.setattr(quick_fit, "hidden_states_batch", interrupted)
    args = [
        "scan",
        PROMPT,
        "-o",
        str(tmp_path / "x.scan"),
        "--model",
        str(tiny_model_dirs["llama"]),
        *FAST,
    ]
    assert main(args) == 130
    assert "interrupted" in capsys.readouterr().err and len(batches) == 3
    assert fitted_entries(cache) == [] and not (tmp_path / "x.scan").exists()
    monkeypatch.setattr(quick_fit, "hidden_states_batch", hidden_states_batch)
    assert main(args) == 0
    assert [(e / "config.json").is_file() for e in fitted_entries(cache)] == [True]


def test_unknown_architecture_is_refused_in_one_line(tmp_path, cache, capsys):
    import transformers

    from tests.tiny_models import CONTEXT, VOCAB, make_tokenizer

    folder = tmp_path / "bigcode"
    torch.manual_seed(0)
    transformers.GPTBigCodeForCausalLM(
        transformers.GPTBigCodeConfig(
            n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=CONTEXT
        )
    ).save_pretrained(folder, safe_serialization=True)
    make_tokenizer().save_pretrained(folder)
    for normalization in ("final-norm", "raw"):
        assert (
            main(
                [
                    "scan",
                    PROMPT,
                    "-o",
                    str(tmp_path / "x.scan"),
                    "--model",
                    str(folder),
                    "--normalization",
                    normalization,
                ]
            )
            == 2
        )
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1
        assert "'gpt_bigcode' is not in layerscan's capture table" in err
        assert "--autoencoder DIR" in err
    assert fitted_entries(cache) == []


@pytest.mark.slow
def test_kill_9_during_a_fit_leaves_nothing_and_the_next_run_fits(tiny_model_dirs, tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, LAYERSCAN_CACHE=str(cache), HF_HUB_OFFLINE="1")
    args = [
        sys.executable,
        "-m",
        "layerscan",
        "scan",
        PROMPT,
        "-o",
        str(tmp_path / "x.scan"),
        "--model",
        str(tiny_model_dirs["llama"]),
        *FAST,
        "--fit-tokens",
        "1000000",
    ]  # the whole text: seconds even for the tiny model
    proc = subprocess.Popen(args, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "fitting one" in line:
            break
    assert proc.poll() is None, "the run ended before the fit started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert fitted_entries(cache) == [], "the fit ended before the kill: make it longer"
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fitting one" in done.stderr
    assert [(e / "config.json").is_file() for e in fitted_entries(cache)] == [True]
