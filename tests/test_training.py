"""Training the autoencoder: corpora, the hidden-state cache, Lightning runs, resume, DDP, NaN."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from layerscan.autoencoder.cache import HiddenStateCache
from layerscan.autoencoder.corpus import read_documents, seed_prompts
from layerscan.autoencoder.data import chunk_windows, split_windows
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError

REPO = Path(__file__).resolve().parent.parent
LINES = [
    "the quick brown fox jumps over the lazy dog and the dog sleeps " * 4,
    "a transformer turns tokens into hidden states layer by layer",
    "paris is the capital of france and berlin is the capital of germany",
    "particles drift through layer time as the prompt is read",
    "one two three four five six seven eight nine ten",
    "the dog sleeps and the fox runs over the hill",
    "a layer of states for every token in the prompt",
    "four five six seven eight",
]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from tests.tiny_models import save_tiny_model

    return save_tiny_model("llama", tmp_path_factory.mktemp("ae-llama") / "llama")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ae-corpus") / "corpus.txt"
    path.write_text("\n".join(LINES) + "\n\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_llama, corpus) -> Path:
    """One finished tiny training run (shared by the checks that only read it)."""
    out = tmp_path_factory.mktemp("ae-run")
    code = main(_train_args(tiny_llama, corpus, out, out / "cache"))
    assert code == 0
    return out


def _train_args(model: Path, corpus: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--config",
        "tiny",
        "--corpus",
        str(corpus),
        "--output",
        str(out),
        "--set",
        f"data.language_model={model}",
        "--cache-dir",
        str(cache),
        "--no-progress",
        *extra,
    ]


def test_corpus_formats(tmp_path):
    txt = tmp_path / "a.txt"
    txt.write_text("first doc\n\n  second doc  \n")
    assert read_documents(str(txt)) == ["first doc", "second doc"]
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "one"}\nnot json\n{"body": "x"}\n{"text": "two"}\n')
    with pytest.warns(UserWarning, match="skipped 2 line"):
        assert read_documents(str(jsonl)) == ["one", "two"]
    with pytest.warns(UserWarning, match="skipped 3 line"):
        assert read_documents(str(jsonl), text_field="body") == ["x"]
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("doc b\nsecond line")
    (folder / "sub" / "a.txt").write_text("doc a")
    assert read_documents(str(folder)) == ["doc b\nsecond line", "doc a"]
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 ok\nplain\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="1 line.*not UTF-8.*U\\+FFFD"):
        assert read_documents(str(latin)) == ["caf\ufffd ok", "plain"]
    assert len(seed_prompts()) >= 300


def test_corpus_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(LayerscanError, match="empty"):
        read_documents(str(empty))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"title": "x"}\n[1, 2]\n')
    with pytest.raises(LayerscanError, match="no usable line"):
        read_documents(str(bad))
    with pytest.raises(LayerscanError, match="no such file"):
        read_documents(str(tmp_path / "missing.txt"))
    (tmp_path / "nofiles").mkdir()
    with pytest.raises(LayerscanError, match="no .txt files"):
        read_documents(str(tmp_path / "nofiles"))


def test_chunking_never_drops_and_split_is_by_document():
    windows, owner = chunk_windows([list(range(70)), [1, 2], list(range(32))], max_len=32)
    assert [len(w) for w in windows] == [32, 32, 6, 2, 32]
    assert sum(windows, []) == list(range(70)) + [1, 2] + list(range(32))
    assert owner == [0, 0, 0, 1, 2]
    train, val = split_windows([0, 0, 0, 1, 2, 3, 4, 5, 6, 7], 0.25, seed=0)
    assert sorted(train + val) == list(range(10))
    docs_val = {[0, 0, 0, 1, 2, 3, 4, 5, 6, 7][i] for i in val}
    docs_train = {[0, 0, 0, 1, 2, 3, 4, 5, 6, 7][i] for i in train}
    assert not docs_val & docs_train
    with pytest.raises(LayerscanError, match="at least two"):
        split_windows([0], 0.1, seed=0)


def test_cache_holds_the_same_states_as_a_forward_pass(trained_run, tiny_llama, tmp_path):
    from layerscan.autoencoder.capture.hidden_states import hidden_states_batch
    from layerscan.autoencoder.capture.loading import load_model

    folders = list((trained_run / "cache" / "hidden").iterdir())
    assert len(folders) == 1 and "L32" in folders[0].name
    cache = HiddenStateCache(folders[0])
    loaded = load_model(str(tiny_llama), device="cpu")
    ids = loaded.tokenizer(LINES[0])["input_ids"]
    assert len(ids) > 32  # the long line was chunked into windows, not dropped
    expected = hidden_states_batch(loaded, [ids[:32]])[0]
    np.testing.assert_allclose(cache.window(0), expected, atol=2e-2, rtol=1e-2)  # float16
    assert cache.window(0, length=5).shape == (cache.n_layers + 1, 5, cache.d_model)
    import shutil

    broken = shutil.copytree(folders[0], tmp_path / "broken")
    (broken / "meta.json").write_text("{broken")
    with pytest.raises(LayerscanError, match="unusable hidden-state cache"):
        HiddenStateCache(broken)


def test_training_writes_artifact_checkpoints_and_logs(trained_run, tmp_path, capsys):
    from layerscan.autoencoder.artifact import load_autoencoder

    artifact = load_autoencoder(trained_run / "artifact")
    config = artifact.config
    assert (config.d_model, config.n_layers, config.n_particles) == (32, 2, 64)
    assert config.normalization == "final-norm" and config.max_len == 32
    metrics = config.metrics
    assert metrics["lengths"] and len(metrics["r2"][str(metrics["lengths"][0])]) == 3
    short = metrics["r2"]["8"]
    assert min(short) > 0.5
    assert all(r > p for r, p in zip(short, metrics["mean_pool_r2"]["8"], strict=True))
    assert (trained_run / "checkpoints" / "last.ckpt").is_file()
    assert (trained_run / "checkpoints" / "best.ckpt").is_file()
    csv = list((trained_run / "logs").rglob("metrics.csv"))
    assert csv and "val/loss" in csv[0].read_text()
    assert list((trained_run / "logs").rglob("events.out.tfevents.*"))
    # the eval command reproduces the recorded metrics on the same held-out windows
    out = tmp_path / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--autoencoder",
                str(trained_run / "artifact"),
                "--cache-dir",
                str(trained_run / "cache"),
                "--json",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "worst layer" in capsys.readouterr().out
    measured = json.loads(out.read_text())
    np.testing.assert_allclose(measured["r2"]["8"], short, atol=1e-6)


def test_bad_inputs_fail_with_one_line(tmp_path, tiny_llama, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert main(_train_args(tiny_llama, empty, tmp_path / "o", tmp_path / "c")) == 2
    assert "empty" in capsys.readouterr().err
    assert main(_train_args(tiny_llama, tmp_path / "nope.txt", tmp_path / "o", tmp_path / "c")) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(_train_args(tiny_llama, empty, tmp_path / "o", tmp_path / "c", "--resume")) == 2
    assert "no checkpoint" in capsys.readouterr().err
    broken = tmp_path / "o" / "checkpoints"
    broken.mkdir(parents=True)
    (broken / "last.ckpt").write_bytes(b"garbage")
    assert main(_train_args(tiny_llama, empty, tmp_path / "o", tmp_path / "c", "--resume")) == 2
    err = capsys.readouterr().err
    assert "corrupt" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--config", "tiny", "--set", "model.bogus=1"]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_nan_loss_stops_with_the_step_and_keeps_a_good_checkpoint(
    tmp_path, tiny_llama, corpus, monkeypatch
):
    import torch

    from layerscan.autoencoder.model import ParticleAutoencoder
    from layerscan.autoencoder.training import train

    calls = {"n": 0}
    original = ParticleAutoencoder.forward

    def poisoned(self, hidden, layer, lengths):
        calls["n"] += 1
        out = original(self, hidden, layer, lengths)
        if self.training and calls["n"] >= 5:
            return out._replace(reconstruction=out.reconstruction * float("nan"))
        return out

    monkeypatch.setattr(ParticleAutoencoder, "forward", poisoned)
    from layerscan.autoencoder.config import load_config

    config = load_config(
        "tiny",
        [
            f"data.corpus={corpus}",
            f"data.language_model={tiny_llama}",
            f"output={tmp_path / 'run'}",
            "train.max_epochs=5",
        ],
    )
    with pytest.raises(LayerscanError, match=r"NaN|nan") as info:
        train(config, cache_root=tmp_path / "cache", progress=False)
    assert "at step 4" in str(info.value)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    state = torch.load(last, map_location="cpu", weights_only=True)["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values())


def _run_cli(args: list[str], env_extra: dict | None = None, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **(env_extra or {}))
    return subprocess.Popen(
        [sys.executable, "-m", "layerscan", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )


@pytest.mark.slow
def test_resume_after_kill_9_finishes(tmp_path, tiny_llama, corpus, trained_run):
    out = tmp_path / "run"
    args = _train_args(
        tiny_llama,
        corpus,
        out,
        trained_run / "cache",
        "--set",
        "train.max_epochs=40",
        "--set",
        "train.checkpoint_every_n_steps=1",
        "--set",
        "data.batch_size=1",
    )  # many steps: an idle machine is fast
    proc = _run_cli(args, start_new_session=True)
    last, deadline = out / "checkpoints" / "last.ckpt", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if last.is_file():
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[0][-2000:]
    time.sleep(0.3)  # mid-epoch, mid-training
    assert proc.poll() is None, "training ended before the kill: make the run longer"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "artifact").exists()
    resumed = _run_cli([*args, "--resume"])
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log[-3000:]
    from layerscan.autoencoder.artifact import load_autoencoder

    config = load_autoencoder(out / "artifact").config
    assert config.training["resumed"] is True
    fresh = load_autoencoder(trained_run / "artifact").config.metrics["r2"]["8"]
    assert min(config.metrics["r2"]["8"]) > min(fresh) - 0.1


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(tmp_path, tiny_llama, corpus, trained_run):
    out = tmp_path / "ddp"
    proc = _run_cli(
        _train_args(
            tiny_llama,
            corpus,
            out,
            trained_run / "cache",
            "--accelerator",
            "cpu",
            "--devices",
            "2",
            "--strategy",
            "ddp",
            "--set",
            "train.max_epochs=2",
        )
    )
    log = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, log[-3000:]
    assert "world_size=2" in log.replace(" ", "") or "MEMBER: 2/2" in log
    assert (out / "artifact" / "config.json").is_file()
