"""A movie drawn by two processes: a forked helper draws every other block of frames.

Both processes build the same scene. Each steps it through its own frames and, before each of
its blocks, through the frames whose state the block's first frame inherits: the camera
follows the layers from frame to frame, and a frame whose azimuth changes starts over from the
previous frame's framing alone, so one frame before a block (more without orbit) gives each
process the one-process state exactly. Each draws and reads back only its own frames. The
helper's frames come back through a pipe, and the movie's process writes every frame to the
encoder in order, so the file is the one a single process makes. Drawing is most of a frame's
cost, so two idle cores draw nearly twice as many frames a second; on a busy machine the
helper's scene and stepping only add CPU (RenderOptions.processes None then draws in one).
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
from collections.abc import Callable

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.signals import raise_if_pending
from layerscan.geometry.scene import frames as fr

BLOCK = 8
"""Consecutive frames each process draws in turn."""
MIN_FRAMES = 24
"""Fewer frames than this are drawn by one process (the helper's scene costs ~0.5 s)."""
SPARE_LOAD = 0.5
"""processes None: a helper when the 1-minute load average is at most cores - this."""
WAIT_STEP_S = 0.1
"""Longest wait for a frame before checking again for a recorded Ctrl-C or SIGTERM."""


def show(scene, frame: fr.Frame, sweep: bool) -> None:
    """Step `scene` to `frame` (camera and all actors), without drawing."""
    if frame.azimuth != scene.azimuth:
        scene.set_azimuth(frame.azimuth)
    current = (scene.scans[0].step_lengths[frame.step] - 1) if sweep else None
    scene.update(frame.step, frame.layer, current)


def spare_core(processes: int | None) -> bool:
    """Whether a second process may work beside this one (`RenderOptions.processes`; None:
    when the 1-minute load average leaves a core to spare, or no other process is running
    right now: the average lags a minute behind work that has ended)."""
    cores = os.cpu_count() or 1
    if processes is None:
        others = running_now() - 1  # this process is one of them
        idle = os.getloadavg()[0] <= cores - SPARE_LOAD or others <= cores - 2
        processes = 2 if idle else 1
    return processes > 1 and hasattr(os, "fork") and cores > 1


def running_now() -> int:
    """Processes and threads running or ready to run at this instant (the kernel's count in
    /proc/loadavg); a large number where it cannot be read, so only the average decides."""
    try:
        with open("/proc/loadavg", encoding="ascii") as fh:
            return int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 1 << 20


def helps(processes: int | None, kind: str, n_frames: int) -> bool:
    """Whether a second process should draw half the frames of this movie (processes None:
    when a core is to spare; on a busy machine a helper only adds its scene's CPU)."""
    return kind in ("video", "gif", "frames") and n_frames >= MIN_FRAMES and spare_core(processes)


def drawn_here(index: int, helper: Helper | None) -> bool:
    """Whether this process draws frame `index` (the helper draws the odd blocks)."""
    return helper is None or (index // BLOCK) % 2 == 0


def stepped(plan: list[fr.Frame], mine: list[bool]) -> list[bool]:
    """Which frames a process steps its scene through to draw the frames `mine` marks as the
    one-process render would: its own, and before each of its blocks the frames back to the
    one before the last azimuth change (`Scene.set_azimuth` frames the view from the previous
    frame's layer alone)."""
    out = list(mine)
    for start in range(1, len(plan)):
        if mine[start] and not mine[start - 1]:
            first = start
            while first > 0 and plan[first].azimuth == plan[first - 1].azimuth:
                first -= 1
            out[max(first - 1, 0) : start] = [True] * (start - max(first - 1, 0))
    return out


class Helper:
    """The forked process that draws the odd blocks of `plan`; start it before any scene of
    this process exists (a forked GL context is not usable)."""

    def __init__(
        self,
        make_scene: Callable[[], object],
        plan: list[fr.Frame],
        size: tuple[int, int],
        sweep: bool,
    ) -> None:
        import pyvista.plotting  # noqa: F401 - what a first scene imports (matplotlib too,
        # ~0.4 s), once for both processes: the helper inherits it

        w, h = size
        self.frame_bytes = w * h * 3
        read_fd, write_fd = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the helper: never returns
            os.close(read_fd)
            _draw_odd_frames(make_scene, plan, size, sweep, write_fd)
        os.close(write_fd)
        self.pid: int | None = pid
        self.frames: queue.Queue = queue.Queue(maxsize=BLOCK + 2)
        self.thread = threading.Thread(target=self._read, args=(read_fd,), daemon=True)
        self.thread.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            while len(data := pipe.read(self.frame_bytes)) == self.frame_bytes:
                self.frames.put(data)
        self.frames.put(None)  # the helper is done, or it failed

    def take(self) -> bytes:
        """The helper's next frame (raw bottom-up RGB), waiting for it."""
        while True:
            try:
                data = self.frames.get(timeout=WAIT_STEP_S)
                break
            except queue.Empty:
                raise_if_pending()
        if data is None:
            self.close()  # raises with its exit status
            raise LayerscanError("the second drawing process stopped early")
        return data

    def close(self) -> None:
        """Wait for the helper to exit; raise if it failed."""
        if self.pid is None:
            return
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        if os.waitstatus_to_exitcode(status) != 0:
            raise LayerscanError(
                f"the second drawing process failed (exit status "
                f"{os.waitstatus_to_exitcode(status)}); --processes 1 draws in one process"
            )

    def abort(self) -> None:
        """Stop the helper at once (a failed or interrupted render)."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        self.pid = None


def _draw_odd_frames(make_scene, plan, size, sweep, fd: int) -> None:
    """The helper's whole life: build the scene, step through the plan, write its frames."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the movie's process handles Ctrl-C
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _die_with_parent()
        w, h = size
        buffer = np.empty((h, w, 3), np.uint8)
        scene = make_scene()
        mine = [(i // BLOCK) % 2 == 1 for i in range(len(plan))]
        with os.fdopen(fd, "wb") as pipe:
            for i, (frame, step) in enumerate(zip(plan, stepped(plan, mine), strict=True)):
                if step:
                    show(scene, frame, sweep)
                if mine[i]:
                    scene.render()
                    scene.read_pixels(buffer)
                    pipe.write(buffer.data)
        scene.close()
        code = 0
    except BrokenPipeError:  # the movie's process stopped reading: it is failing or done
        pass
    except BaseException as exc:  # noqa: BLE001 - said here, reported by the movie's process
        print(f"layerscan: second drawing process: {exc}", file=sys.stderr, flush=True)
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """SIGKILL this process when the movie's process dies (Linux; elsewhere a no-op)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
