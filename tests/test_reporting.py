"""What training and extraction say while they run: epoch lines, measured estimates, Ctrl-C."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from layerscan.autoencoder import reporting
from layerscan.autoencoder.cache import ExtractionJob, build_cache
from layerscan.autoencoder.reporting import (
    RateEstimate,
    epoch_line,
    interrupted_line,
    warn_if_weak,
)


def test_epoch_line_has_losses_and_r2():
    line = epoch_line(
        3, 20, {"train/loss": torch.tensor(0.5), "val/loss": 0.25, "val/r2": 0.75}, 12.3
    )
    assert line == "epoch 3/20 · train loss 0.5000 · val loss 0.2500 · val R² 0.7500 · 12 s"


def test_epoch_report_prints_without_a_terminal(tmp_path, capsys):
    from layerscan.autoencoder.training import EpochReport

    report = EpochReport(tmp_path, 5)
    trainer = SimpleNamespace(
        is_global_zero=True,
        sanity_checking=False,
        current_epoch=0,
        global_step=7,
        callback_metrics={"val/loss": 0.5, "val/r2": 0.4},
    )
    report.on_validation_epoch_end(trainer, None)
    assert "epoch 1/5 · val loss 0.5000 · val R² 0.4000" in capsys.readouterr().err
    report.on_exception(trainer, None, KeyboardInterrupt())
    assert "before the first checkpoint" in capsys.readouterr().err
    (tmp_path / "last.ckpt").write_bytes(b"")
    assert "kept last.ckpt" in interrupted_line(1, 7, tmp_path)
    assert "--resume" in interrupted_line(1, 7, tmp_path)


def test_weak_autoencoder_warns():
    assert warn_if_weak({"worst_r2_up_to_64": 0.19}).startswith("warning: the autoencoder is weak")
    assert warn_if_weak({"worst_r2_up_to_64": 0.8}) is None
    assert warn_if_weak({"r2": {"8": [0.9, 0.3]}, "worst_r2_up_to_64": None}) is not None


def test_rate_is_measured_on_the_first_batches(monkeypatch, capsys):
    clock = iter([0.0, 2.0, 4.0, 12.0, 30.0, 60.0])
    monkeypatch.setattr(reporting.time, "perf_counter", lambda: next(clock))
    rate = RateEstimate(10_000)  # starts at t=0
    rate.update(100)  # t=2: too early
    rate.update(100)  # t=4: too early
    assert capsys.readouterr().err == ""
    rate.update(100)  # t=12: 300 tokens in 12 s = 25 tokens/s, 9,700 to go ≈ 6.5 min
    err = capsys.readouterr().err
    assert "25 tokens/s measured on this machine over the first 3 batches" in err
    assert "about 6 min to go" in err
    rate.update(2500)  # t=30: past a quarter
    assert "28 % done" in capsys.readouterr().err


def test_ctrl_c_during_extraction_says_what_was_kept(tmp_path, capsys):
    windows = [[1, 2, 3]] * 8
    job = ExtractionJob(tmp_path / "cache", windows, list(range(8)), {"m": 1}, shard_tokens=6)
    calls = []

    def extract(batch):
        calls.append(len(batch))
        if len(calls) > 2:
            raise KeyboardInterrupt
        return [torch.zeros(2, len(ids), 4).numpy() for ids in batch]

    with pytest.raises(KeyboardInterrupt):
        build_cache(job, extract, batch_size=2, progress=False)
    err = capsys.readouterr().err
    assert "interrupted: 2 of 4 finished shards of hidden states are kept" in err
    assert "resumes" in err
