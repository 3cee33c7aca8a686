"""SIGTERM handled like Ctrl-C, and a check that re-raises either if a C++ callback swallowed it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from layerscan.errors import Terminated


class _Pending:
    """The signal that arrived and has not reached the command line yet (process-wide, as
    signals are)."""

    signum: int | None = None


_PENDING = _Pending()


def _handler(signum: int, frame) -> None:
    _PENDING.signum = signum
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def raise_if_pending() -> None:
    """Raise again a Ctrl-C or SIGTERM that arrived while VTK ran Python code (VTK reports the
    exception and carries on). Long loops call it once per step."""
    if _PENDING.signum is not None:
        raise Terminated() if _PENDING.signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (a KeyboardInterrupt) and Ctrl-C raises
    KeyboardInterrupt, both remembered for `raise_if_pending`; handlers restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _PENDING.signum = None
