"""SIGTERM handled like Ctrl-C; around VTK code, both are only recorded and raised between steps.

VTK calls Python observers from C++ (`vtkPythonCommand`); a KeyboardInterrupt (which
`Terminated` is) raised inside one makes VTK print "Caught a Ctrl-C within python, exiting
program." and exit 1, skipping every cleanup, and other exceptions there are printed and
swallowed. A Python signal handler runs at whatever bytecode comes next, which while VTK
renders is often such an observer. So code that runs VTK does it inside `signals_held()`, where the
handler only records the signal, and calls `raise_if_pending()` between steps (a frame).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from layerscan.core.errors import Terminated

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Pending:
    """The signal that arrived and has not reached the command line yet (process-wide, as
    signals are), and how many `signals_held()` blocks are open."""

    signum: int | None = None
    holding: int = 0


_PENDING = _Pending()


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum: int, frame) -> None:
    """Record the signal; raise it at once outside `signals_held()` (where no VTK code runs)."""
    _PENDING.signum = signum
    if not _PENDING.holding:
        raise _exception(signum)


def pending() -> int | None:
    """The signal number recorded and not yet handled, or None."""
    return _PENDING.signum


def raise_if_pending() -> None:
    """Raise the Ctrl-C or SIGTERM that arrived inside `signals_held()` (or that VTK swallowed).
    Long loops that run VTK call it once per step; it is cheap."""
    if _PENDING.signum is not None:
        raise _exception(_PENDING.signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (a KeyboardInterrupt) and Ctrl-C raises
    KeyboardInterrupt, both remembered for `raise_if_pending`; handlers restored on exit."""
    if not _main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _PENDING.signum = None


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """While inside, Ctrl-C and SIGTERM are only recorded, never raised inside running code
    (which may be a Python callback that VTK's C++ called); `raise_if_pending()` raises them,
    and so does leaving the block normally. Nests.

    Inside `interruptible()` this covers both signals. Outside it (layerscan used as a library)
    only Ctrl-C with Python's default handler is taken over for the block; other handlers are
    left alone. No-op off the main thread (signals only reach the main thread).
    """
    if not _main_thread():
        yield
        return
    installed = {}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        installed[signal.SIGINT] = signal.signal(signal.SIGINT, _handler)
    _PENDING.holding += 1
    finished = False
    try:
        yield
        finished = True
    finally:
        _PENDING.holding -= 1
        try:
            if finished:
                raise_if_pending()
        finally:
            for signum, handler in installed.items():
                signal.signal(signum, handler)
            if installed:
                _PENDING.signum = None  # ours to forget: no interruptible() above clears it
