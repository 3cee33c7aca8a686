"""Ctrl-C and SIGTERM around VTK: recorded inside `signals_held()`, raised between steps."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from layerscan.core.errors import Terminated
from layerscan.core.signals import interruptible, pending, raise_if_pending, signals_held
from tests.bad_inputs import REPO


@pytest.mark.parametrize(
    "signum, error", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)]
)
def test_a_signal_inside_signals_held_is_raised_only_between_steps(signum, error):
    with pytest.raises(error), interruptible():
        with signals_held():
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # the handler has run by now, and raised nothing
                pass
            assert pending() == signum
            with pytest.raises(error):
                raise_if_pending()
        pytest.fail("leaving signals_held() must raise the recorded signal")
    assert pending() is None


def test_ctrl_c_outside_signals_held_raises_at_once():
    with pytest.raises(KeyboardInterrupt), interruptible():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
        pytest.fail("Ctrl-C was not raised")


def test_signals_held_alone_takes_over_ctrl_c_and_gives_it_back():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt), signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert pending() is None


VTK_CALLBACK = """
import os, signal, sys
from vtkmodules.vtkCommonCore import vtkObject
from layerscan.cli.main import EXIT_TERMINATED
from layerscan.core.errors import Terminated
from layerscan.core.signals import interruptible, signals_held
obj = vtkObject()
obj.AddObserver("ModifiedEvent", lambda *_: [os.kill(os.getpid(), signal.SIGTERM),
                                             sum(range(1000))])
try:
    with interruptible(), signals_held():
        obj.Modified()  # C++ calls the observer; the signal lands inside it
        print("after", flush=True)
except Terminated:
    sys.exit(EXIT_TERMINATED)
"""


def test_a_signal_inside_a_vtk_callback_does_not_make_vtk_exit_1():
    result = subprocess.run(
        [sys.executable, "-c", VTK_CALLBACK],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (143, "after\n"), result.stderr[-800:]
