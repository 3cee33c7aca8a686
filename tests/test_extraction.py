"""Building the hidden-state cache: data-parallel (2 CPU processes, gloo) equals one process;
an interrupted or killed build leaves no cache and resumes from its finished shards."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from layerscan.autoencoder.cache import ExtractionJob, HiddenStateCache, build_cache
from layerscan.autoencoder.data import chunk_windows
from layerscan.cli.main import main
from layerscan.core.errors import Notice

REPO = Path(__file__).resolve().parent.parent
WORDS = (
    "the quick brown fox jumps over the lazy dog a transformer turns tokens into hidden "
    "states layer by layer"
).split()
MAX_LEN = 32
BATCH = 8
SMALL_SHARDS = 1024
"""Tokens per shard in the single-process tests: their first 4 documents make 6 shards."""


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from tests.tiny_models import save_tiny_model

    return save_tiny_model("llama", tmp_path_factory.mktemp("extract-llama") / "llama")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """26 documents, about 35,000 tokens of the tiny tokenizer: five shards of 8192 tokens."""
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("extract-corpus") / "corpus.txt"
    path.write_text(
        "".join(
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(50, 400))) + "\n"
            for _ in range(26)
        ),
        encoding="utf-8",
    )
    return path


def _overrides(model: Path, corpus: Path, *extra: str) -> list[str]:
    return [f"data.corpus={corpus}", f"data.language_model={model}", *extra]


def _job(loaded, corpus: str | Path, folder: str | Path) -> ExtractionJob:
    """The first 4 documents, in shards of SMALL_SHARDS tokens."""
    lines = Path(corpus).read_text(encoding="utf-8").splitlines()[:4]
    ids = [loaded.tokenizer(text, verbose=False)["input_ids"] for text in lines]
    windows, documents = chunk_windows(ids, MAX_LEN)
    return ExtractionJob(folder, windows, documents, {"model_id": "tiny-llama"}, SMALL_SHARDS)


def _extract(loaded):
    from layerscan.autoencoder.capture.hidden_states import hidden_states_batch

    return lambda ids: hidden_states_batch(loaded, ids)  # list of (n_layers+1, len, d_model)


def _assert_same_cache(a: Path, b: Path) -> None:
    """The same index (windows in corpus order) and the same states, shard by shard."""
    one, other = HiddenStateCache(a), HiddenStateCache(b)
    assert one.meta["windows"] == other.meta["windows"]
    assert one.meta["shards"] == other.meta["shards"]
    for x, y in zip(one.shards, other.shards, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow
def test_two_processes_write_the_shards_of_one_process(tmp_path, tiny_llama, corpus):
    from layerscan.autoencoder.config import load_config
    from layerscan.autoencoder.data import HiddenStateDataModule

    single = HiddenStateDataModule(
        load_config("tiny", _overrides(tiny_llama, corpus)), tmp_path / "one", progress=False
    ).cache_folder()
    script = tmp_path / "extract.py"  # Lightning starts rank 1 by running this file again
    script.write_text(
        textwrap.dedent("""
        import sys
        from layerscan.autoencoder.config import load_config
        from layerscan.autoencoder.data import HiddenStateDataModule

        config = load_config("tiny", sys.argv[2:])
        HiddenStateDataModule(config, sys.argv[1], progress=False).cache_folder()
    """)
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [
            sys.executable,
            str(script),
            str(tmp_path / "two"),
            *_overrides(
                tiny_llama, corpus, "train.accelerator=cpu", "train.devices=2", "train.strategy=ddp"
            ),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]
    assert "MEMBER: 2/2" in log and "distributed_backend=gloo" in log
    parallel = tmp_path / "two" / "hidden" / single.name  # the same cache key
    # five shards: three for rank 0, two for rank 1 and a turn with nothing to write
    assert len(HiddenStateCache(single).meta["shards"]) == 5
    # Both runs put each shard's windows through the model in the same batches, so the
    # float16 states are identical, not merely close: the union of the shards is the cache.
    _assert_same_cache(single, parallel)
    assert os.listdir(parallel.parent) == [single.name]  # no work folder or partial left


def test_an_interrupted_build_leaves_no_cache_and_resumes(tmp_path, tiny_llama, corpus):
    from layerscan.autoencoder.capture.loading import load_model

    loaded = load_model(str(tiny_llama), device="cpu")
    extract, calls = _extract(loaded), {"n": 0}
    job = _job(loaded, corpus, tmp_path / "cache" / "states")
    stop_at = sum(-(-len(job.members[s]) // BATCH) for s in (0, 1)) + 2  # inside shard 2

    def interrupted(ids):
        calls["n"] += 1
        if calls["n"] == stop_at:
            raise KeyboardInterrupt  # what Ctrl-C raises (layerscan.core.signals)
        return extract(ids)

    with pytest.raises(KeyboardInterrupt):
        build_cache(job, interrupted, BATCH, progress=False)
    assert not job.folder.exists()
    assert sorted(os.listdir(job.work)) == ["plan.json", "shard_0000.npy", "shard_0001.npy"]
    with pytest.warns(Notice, match="2 of 6 shards are already written"):
        build_cache(_job(loaded, corpus, job.folder), extract, BATCH, progress=False)
    assert not job.work.exists()
    reference = build_cache(
        _job(loaded, corpus, tmp_path / "reference" / "states"), extract, BATCH, progress=False
    )
    _assert_same_cache(reference, job.folder)


@pytest.mark.slow
def test_a_build_killed_with_sigkill_resumes(tmp_path, tiny_llama, corpus):
    from layerscan.autoencoder.capture.loading import load_model

    folder = tmp_path / "cache" / "states"
    script = tmp_path / "killed.py"  # kill -9 itself halfway through shard 1
    script.write_text(
        textwrap.dedent(f"""
        import os, signal
        from layerscan.autoencoder.cache import build_cache
        from layerscan.autoencoder.capture.loading import load_model
        from tests.test_extraction import _extract, _job

        loaded = load_model({str(tiny_llama)!r}, device="cpu")
        job, extract, calls = _job(loaded, {str(corpus)!r}, {str(folder)!r}), _extract(loaded), []

        def killed(ids):
            calls.append(1)
            if len(calls) == -(-len(job.members[0]) // {BATCH}) + 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return extract(ids)

        build_cache(job, killed, {BATCH}, progress=False)
    """)
    )
    run = subprocess.run(
        [sys.executable, str(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=600,
    )
    assert run.returncode == -9, run.stderr[-3000:]
    assert not folder.exists()
    work = folder.parent / ".states.extracting"
    left = sorted(os.listdir(work))  # shard 0 complete, shard 1 under its temporary name
    assert left[1:] == ["plan.json", "shard_0000.npy"], left
    assert left[0].startswith(".shard_0001.") and left[0].endswith(".partial.npy"), left
    loaded = load_model(str(tiny_llama), device="cpu")
    with pytest.warns(Notice, match="1 of 6 shards"):
        build_cache(_job(loaded, corpus, folder), _extract(loaded), BATCH, progress=False)
    assert not work.exists() and not any(".partial" in n for n in os.listdir(folder))
    reference = build_cache(
        _job(loaded, corpus, tmp_path / "reference" / "states"),
        _extract(loaded),
        BATCH,
        progress=False,
    )
    _assert_same_cache(reference, folder)
    assert json.loads((folder / "meta.json").read_text())["format_version"] == 1


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--devices", "two"], "--devices"),
        (["--devices", "0"], "--devices"),
        (["--devices", "0,0"], "--devices"),
        (["--num-nodes", "0"], "--num-nodes"),
        (["--num-nodes", "x"], "--num-nodes"),
    ],
)
def test_bad_device_flags_fail_with_one_line(flags, message, capsys):
    assert main(["train", "--config", "tiny", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
