"""Off-screen movies of a scene: MP4 or GIF streamed to ffmpeg, PNG frames, or one still image."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.outputs import atomic_path
from layerscan.core.signals import raise_if_pending, signals_held
from layerscan.geometry.scan_file import DiffScan, Scan
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.bounds import check_movie_bounds

VIDEO_SUFFIXES = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}
Quality = Literal["low", "medium", "high"]
WAIT_STEP_S = 0.1
"""Longest wait (queue, ffmpeg) before checking again for a recorded Ctrl-C or SIGTERM."""
QUALITY = {"low": ("28", "ultrafast"), "medium": ("23", "superfast"), "high": ("18", "medium")}
"""x264 (crf, preset) per quality; superfast costs ~15 ms of CPU per 720p frame, veryfast ~22."""


@dataclass
class RenderOptions:
    """Timing and encoding of a movie."""

    fps: int = 30
    """Frames per second of the output."""
    seconds_per_layer: float = field(default=0.2, metadata={"metavar": "SECONDS"})
    """Seconds spent moving from one layer to the next, whatever the fps (ignored when
    `duration` or `frames_per_layer` is set)."""
    frames_per_layer: int | None = field(default=None, metadata={"metavar": "N"})
    """Frames spent moving from one layer to the next; None: seconds per layer × fps."""
    duration: float | None = field(default=None, metadata={"metavar": "SECONDS"})
    """Target length in seconds; sets frames per layer."""
    hold: float = field(default=0.5, metadata={"metavar": "SECONDS"})
    """Seconds to rest on the first and last layer."""
    token_sweep: bool = False
    """Play layer-time once per token-time step (scans made with token steps)."""
    orbit: float = field(default=30.0, metadata={"metavar": "DEGREES"})
    """Degrees the camera orbits over the whole movie (0: still camera)."""
    quality: Quality = "medium"
    """Encoder quality: low (small, fastest), medium, high (slowest)."""
    still_layer: float | None = field(default=None, metadata={"flag": "layer"})
    """For .png output: the layer to show; None = the last layer."""
    progress: bool = True
    """Show a progress bar on stderr."""

    def __post_init__(self) -> None:
        if not 1 <= self.fps <= 240:
            raise LayerscanError(f"fps must be between 1 and 240, got {self.fps}")
        if not (math.isfinite(self.seconds_per_layer) and self.seconds_per_layer > 0):
            raise LayerscanError(
                f"seconds per layer must be positive, got {self.seconds_per_layer}"
            )
        if self.frames_per_layer is not None and self.frames_per_layer < 1:
            raise LayerscanError(
                f"frames per layer must be at least 1, got {self.frames_per_layer}"
            )
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise LayerscanError(
                f"duration must be a positive number of seconds, got {self.duration}"
            )
        if not (math.isfinite(self.hold) and self.hold >= 0):
            raise LayerscanError(f"--hold must be 0 or more seconds, got {self.hold}")
        if not math.isfinite(self.orbit):
            raise LayerscanError(f"--orbit must be a number of degrees, got {self.orbit}")
        check_movie_bounds(
            self.duration, self.hold, self.orbit, self.frames_per_layer, self.seconds_per_layer
        )
        if self.still_layer is not None and not (
            math.isfinite(self.still_layer) and self.still_layer >= 0
        ):
            raise LayerscanError(
                f"--layer must be a layer number from 0 up, got {self.still_layer}"
            )
        if self.quality not in QUALITY:
            raise LayerscanError(f"unknown quality {self.quality!r}; use low, medium or high")


class RenderStats(NamedTuple):
    """What a render produced and where its time went."""

    path: Path
    n_frames: int
    width: int
    height: int
    seconds: float
    """Wall time of the whole render (scene build included)."""
    render_s: float
    """Time spent updating actors and drawing."""
    readback_s: float
    """Time spent reading pixels back from the framebuffer."""
    encode_wait_s: float
    """Time spent waiting on the encoder (queue full, then the final flush)."""

    @property
    def fps(self) -> float:
        return self.n_frames / self.seconds if self.seconds > 0 else float("inf")


def output_kind(path: str | os.PathLike) -> str:
    """'video', 'gif', 'png' (one still) or 'frames' (a folder of PNGs) from the output path."""
    suffix = Path(path).suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video"
    if suffix in (".gif", ".png"):
        return suffix[1:]
    if suffix == "":
        return "frames"
    raise LayerscanError(
        f"{path}: unknown output type {suffix!r}; use .mp4, .mov, .mkv, .gif, "
        f".png (one still) or a folder name for PNG frames"
    )


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
                _ffmpeg_command(path, kind, size, fps, quality),
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

    def put(self, frame: np.ndarray) -> float:
        """Queue one (height, width, 3) bottom-up frame; returns seconds spent waiting."""
        self._check()
        start = time.perf_counter()
        data = frame.tobytes()
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


def _ffmpeg_command(
    path: Path, kind: str, size: tuple[int, int], fps: int, quality: str
) -> list[str]:
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


def plan_for(n_layers: int, n_steps: int, options: RenderOptions) -> list[fr.Frame]:
    """The frames a movie with these options shows."""
    hold = int(round(options.hold * options.fps))
    fpl = options.frames_per_layer
    if fpl is None:  # the same length at any fps
        fpl = max(options.seconds_per_layer * options.fps, 1.0)
    if options.duration is not None:
        fpl = fr.frames_per_layer_for(
            options.duration, options.fps, n_layers, n_steps, hold, options.token_sweep
        )
    return fr.plan_frames(n_layers, n_steps, fpl, hold, options.token_sweep, options.orbit)


def render_movie(
    source: Scan | DiffScan,
    path: str | os.PathLike,
    scene_options=None,
    options: RenderOptions | None = None,
    on_frame=None,
    overwrite: bool = False,
) -> RenderStats:
    """Render a scan or a diff to `path`; the file appears only once it is complete.

    Args:
        source: the scan, or a diff scan for side-by-side panels.
        path: .mp4/.mov/.mkv, .gif, .png (one still), or a folder for PNG frames.
        scene_options: SceneOptions for the drawing.
        options: timing and encoding.
        on_frame: called with the frame index after each frame (tests use it to interrupt).
        overwrite: replace a PNG-frames folder that an earlier layerscan run wrote.

    Returns:
        RenderStats with the frame count and where the time went.
    """
    with signals_held():  # VTK calls Python back: a signal there would exit 1 (see signals.py)
        return _render_movie(source, path, scene_options, options, on_frame, overwrite)


def _render_movie(
    source: Scan | DiffScan,
    path: str | os.PathLike,
    scene_options,
    options: RenderOptions | None,
    on_frame,
    overwrite: bool,
) -> RenderStats:
    from layerscan.geometry.scene.scene import Scene, SceneOptions

    start = time.perf_counter()
    options = options or RenderOptions()
    scene_options = scene_options or SceneOptions()
    path = Path(path)
    kind = output_kind(path)
    w, h = scene_options.window_size
    if kind in ("video", "gif") and (w % 2 or h % 2):
        raise LayerscanError(f"video needs an even width and height, got {w}x{h}")
    scene = Scene(source, scene_options, off_screen=True)
    try:
        raise_if_pending()
        if kind == "png":
            layer = scene.n_layers if options.still_layer is None else options.still_layer
            scene.update(scene.n_steps - 1, layer)
            with atomic_path(path) as tmp:
                import imageio.v3 as iio

                iio.imwrite(tmp, scene.image(), extension=".png")
            return RenderStats(path, 1, w, h, time.perf_counter() - start, 0.0, 0.0, 0.0)
        plan = plan_for(scene.n_layers, scene.n_steps, options)
        return _render_frames(scene, plan, path, kind, options, on_frame, start, overwrite)
    finally:
        scene.close()


def _render_frames(
    scene,
    plan: list[fr.Frame],
    path: Path,
    kind: str,
    options: RenderOptions,
    on_frame,
    start: float,
    overwrite: bool = False,
) -> RenderStats:
    from tqdm import tqdm

    w, h = scene.options.window_size
    render_s = readback_s = wait_s = 0.0
    buffer = np.empty((h, w, 3), np.uint8)
    sweep = options.token_sweep and scene.n_steps > 1
    with atomic_path(path, folder=kind == "frames", overwrite=overwrite, kind="png-frames") as tmp:
        sink = FrameSink(tmp, kind, (w, h), options.fps, options.quality)
        try:
            bar = tqdm(
                plan,
                desc=f"rendering {path.name}",
                unit="frame",
                disable=not options.progress,
                leave=False,
            )
            for i, frame in enumerate(bar):
                raise_if_pending()  # a Ctrl-C or SIGTERM recorded during the last frame
                t0 = time.perf_counter()
                if frame.azimuth != scene.azimuth:
                    scene.set_azimuth(frame.azimuth)
                current = (scene.scans[0].step_lengths[frame.step] - 1) if sweep else None
                scene.update(frame.step, frame.layer, current)
                scene.render()
                t1 = time.perf_counter()
                scene.read_pixels(buffer)  # (h, w, 3) bottom-up; ffmpeg flips it
                t2 = time.perf_counter()
                wait_s += sink.put(buffer)
                render_s += t1 - t0
                readback_s += t2 - t1
                if on_frame is not None:
                    on_frame(i)
            bar.close()
            wait_s += sink.close()
        except BaseException:
            sink.abort()
            raise
        if sink.n_written != len(plan):
            raise LayerscanError(f"only {sink.n_written} of {len(plan)} frames were written")
    return RenderStats(
        path, len(plan), w, h, time.perf_counter() - start, render_s, readback_s, wait_s
    )
