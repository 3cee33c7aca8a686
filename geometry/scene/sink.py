"""Where a movie's frames go: ffmpeg's stdin (MP4, GIF) or PNG files, on a background thread."""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.signals import raise_if_pending

VIDEO_SUFFIXES = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
WAIT_STEP_S = 0.1
"""Longest wait (queue, ffmpeg) before checking again for a recorded Ctrl-C or SIGTERM."""
QUALITY = {"low": ("28", "ultrafast"), "medium": ("23", "superfast"), "high": ("18", "medium")}
"""x264 (crf, preset) per quality; superfast costs ~15 ms of CPU per 720p frame, veryfast ~22."""


class FrameSink:
    """Consumes bottom-up RGB frames on a background thread: ffmpeg's stdin or PNG files."""

    def __init__(
        self, path: Path, kind: str, size: tuple[int, int], fps: int, quality: str
    ) -> None:
        self.kind, self.path, self.size = kind, path, size
        self.queue: queue.Queue = queue.Queue(maxsize=6)
        self.error: BaseException | None = None
        self.process: subprocess.Popen | None = None
        self.n_written = 0
        if kind in ("video", "gif"):
            self.process = subprocess.Popen(
                ffmpeg_command(path, kind, size, fps, quality),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=die_with_parent(),
            )
            self._stderr: list[bytes] = []
            threading.Thread(target=self._drain_stderr, daemon=True).start()
        else:
            path.mkdir(parents=True)
        self.thread = threading.Thread(target=self._work, daemon=True)
        self.thread.start()

    def _drain_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr = (self._stderr + [line])[-20:]

    def _work(self) -> None:
        try:
            while (frame := self.queue.get()) is not None:
                if self.process is not None:
                    self.process.stdin.write(frame)
                else:
                    import imageio.v3 as iio

                    w, h = self.size
                    image = np.frombuffer(frame, np.uint8).reshape(h, w, 3)[::-1]
                    iio.imwrite(self.path / f"frame_{self.n_written:05d}.png", image)
                self.n_written += 1
        except BaseException as exc:  # noqa: BLE001 - reported by put/close on the main thread
            self.error = exc
            while self.queue.get() is not None:  # unblock the producer
                pass

    def put(self, frame: np.ndarray | bytes) -> float:
        """Queue one (height, width, 3) bottom-up frame (or its raw bytes); returns seconds
        spent waiting."""
        self._check()
        start = time.perf_counter()
        data = frame if isinstance(frame, bytes) else frame.tobytes()
        while True:  # in steps, so that a recorded Ctrl-C or SIGTERM is not held up by ffmpeg
            try:
                self.queue.put(data, timeout=WAIT_STEP_S)
                break
            except queue.Full:
                raise_if_pending()
                self._check()
        return time.perf_counter() - start

    def close(self) -> float:
        """Flush and finish the file; returns seconds spent waiting."""
        start = time.perf_counter()
        while True:
            try:
                self.queue.put(None, timeout=WAIT_STEP_S)
                break
            except queue.Full:
                raise_if_pending()
        while self.thread.is_alive():
            raise_if_pending()
            self.thread.join(timeout=WAIT_STEP_S)
        if self.process is not None:
            self.process.stdin.close()
            while (code := self.process.poll()) is None:
                raise_if_pending()
                try:
                    code = self.process.wait(timeout=WAIT_STEP_S)
                    break
                except subprocess.TimeoutExpired:
                    pass
            if code != 0 and self.error is None:
                tail = b"".join(self._stderr).decode(errors="replace").strip().splitlines()
                if code == 256 - errno.ENOSPC or "No space left" in " ".join(tail[-3:]):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # one line, above
                raise LayerscanError(
                    f"ffmpeg failed writing {self.path.name}: "
                    f"{tail[-1] if tail else f'exit code {code}'}"
                )
        self._check()
        return time.perf_counter() - start

    def abort(self) -> None:
        """Stop without finishing (the caller deletes the partial output)."""
        if self.thread.is_alive():
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                pass
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.thread.is_alive():  # its write failed with the pipe: it now drains the queue
            with contextlib.suppress(queue.Full):
                self.queue.put(None, timeout=1)
        self.thread.join(timeout=5)

    def _check(self) -> None:
        if self.error is not None:
            raise LayerscanError(f"writing {self.path.name} failed: {self.error}")


PR_SET_PDEATHSIG = 1
"""prctl option: the signal a process gets when the thread that started it dies (Linux)."""


def die_with_parent():
    """A `preexec_fn` that makes the child die (SIGKILL) with this process, or None off Linux.

    The signal follows the *thread* that starts the child, so start it from the main thread
    (render does). libc is loaded here, in the parent, so the child only makes one syscall
    between fork and exec; if the parent died before that call, the child exits at once.
    """
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return hook


def ffmpeg_command(
    path: Path, kind: str, size: tuple[int, int], fps: int, quality: str
) -> list[str]:
    """ffmpeg reading raw bottom-up RGB frames on stdin and writing `path` (kind "gif" or a
    video; `quality` a QUALITY key)."""
    import imageio_ffmpeg

    w, h = size
    cmd = [
        imageio_ffmpeg.get_ffmpeg_exe(),
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        str(fps),
        "-i",
        "-",
    ]
    if kind == "gif":
        graph = (
            "vflip,split[a][b];[a]palettegen=max_colors=192:stats_mode=diff[p];"
            "[b][p]paletteuse=dither=bayer:bayer_scale=4"
        )
        return cmd + ["-filter_complex", graph, "-loop", "0", "-f", "gif", str(path)]
    crf, preset = QUALITY[quality]
    container = VIDEO_SUFFIXES[path.suffix.lower()]
    return cmd + [
        "-vf",
        "vflip",
        "-c:v",
        "libx264",
        "-preset",
        preset,
        "-crf",
        crf,
        "-pix_fmt",
        "yuv420p",
        "-movflags",
        "+faststart",
        "-f",
        container,
        str(path),
    ]
