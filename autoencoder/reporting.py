"""What training and extraction say while they run: one line per epoch, a measured time
estimate, what an interruption kept, and a warning when the autoencoder came out weak.

Everything goes to stderr as plain lines, so it shows whether or not the output is a
terminal (progress bars are off in logs and CI).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

LOW_R2 = 0.5
"""Worst-layer held-out R² below which training warns (the frame warns too)."""
WARMUP_S, WARMUP_BATCHES = 10.0, 3
"""The extraction rate is measured over at least this long and this many batches."""


def say(message: str) -> None:
    """One line on stderr, flushed (stdout carries results)."""
    print(message, file=sys.stderr, flush=True)


def about(seconds: float) -> str:
    """'under a minute', 'about 12 min', 'about 1.5 h'."""
    if seconds < 60:
        return "under a minute"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def epoch_line(epoch: int, max_epochs: int, metrics: dict, seconds: float) -> str:
    """'epoch 3/20 · train loss 0.41 · val loss 0.44 · val R² 0.58 · 95 s'.

    Args:
        epoch: the finished epoch, from 1.
        max_epochs: the epoch limit.
        metrics: logged values by name (train/loss, val/loss, val/r2), numbers or tensors.
        seconds: time since training started.
    """
    parts = [f"epoch {epoch}/{max_epochs}"]
    for key, name in (("train/loss", "train loss"), ("val/loss", "val loss"), ("val/r2", "val R²")):
        if key in metrics:
            parts.append(f"{name} {float(metrics[key]):.4f}")
    parts.append(f"{seconds:.0f} s")
    return " · ".join(parts)


def interrupted_line(epoch: int, step: int, checkpoints: Path) -> str:
    """What a Ctrl-C during training kept, and how to go on."""
    kept = sorted(p.name for p in Path(checkpoints).glob("*.ckpt"))
    if kept:
        return (
            f"interrupted at epoch {epoch}, step {step}: kept {', '.join(kept)} in "
            f"{checkpoints}; run the same command with --resume to continue (the hidden-state "
            f"cache is kept too)"
        )
    return (
        f"interrupted at step {step}, before the first checkpoint: no weights kept; the "
        f"hidden-state cache is kept, so the next run starts training at once"
    )


def warn_if_weak(metrics: dict | None) -> str | None:
    """A warning line when the worst layer's held-out R² is below LOW_R2, else None."""
    if not metrics:
        return None
    worst = metrics.get("worst_r2_up_to_64")
    if worst is None:
        worst = min((min(v) for v in metrics.get("r2", {}).values()), default=None)
    if worst is None or worst >= LOW_R2:
        return None
    return (
        f"warning: the autoencoder is weak (worst layer held-out R² {worst:.2f} < {LOW_R2}): "
        f"its particles keep little of the hidden states, and frames made with it say so; "
        f"train on a larger corpus or for longer"
    )


class RateEstimate:
    """Measures extraction speed on this machine over the first batches and says how long
    the rest will take (a tqdm bar's own estimate is hidden when stderr is not a terminal).

    Args:
        total_tokens: tokens to extract in all.
        what: what is extracted, for the message.
    """

    def __init__(self, total_tokens: int, what: str = "hidden states") -> None:
        self.total, self.what = total_tokens, what
        self.done = self.batches = 0
        self.started = time.perf_counter()
        self.reported = False
        self.next_quarter = 1

    def update(self, n_tokens: int) -> None:
        """Count a finished batch of `n_tokens` tokens; report once the rate is measured, then
        at each quarter of the work."""
        self.done += n_tokens
        self.batches += 1
        elapsed = time.perf_counter() - self.started
        if not self.reported and elapsed >= WARMUP_S and self.batches >= WARMUP_BATCHES:
            self.reported = True
            rate = self.done / elapsed
            say(
                f"extracting {self.what}: {rate:.0f} tokens/s measured on this machine over the "
                f"first {self.batches} batches; {about((self.total - self.done) / rate)} to go "
                f"for {self.total - self.done} more tokens"
            )
        quarter = self.next_quarter * self.total / 4
        if self.reported and quarter <= self.done < self.total:
            rate = self.done / elapsed
            say(
                f"extracting {self.what}: {100 * self.done / self.total:.0f} % done, "
                f"{about((self.total - self.done) / rate)} to go"
            )
            self.next_quarter = int(4 * self.done / self.total) + 1

    def finish(self) -> None:
        """Say the measured rate at the end (also when the work ended before the estimate)."""
        elapsed = time.perf_counter() - self.started
        if self.done:
            say(
                f"extracted {self.what} of {self.done} tokens in {elapsed:.0f} s "
                f"({self.done / max(elapsed, 1e-9):.0f} tokens/s on this machine)"
            )
