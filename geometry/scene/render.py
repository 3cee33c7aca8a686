"""Off-screen movies of a scene: MP4 or GIF streamed to ffmpeg, PNG frames, or one still image."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.outputs import atomic_path
from layerscan.core.signals import raise_if_pending, signals_held
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene import parallel as par
from layerscan.geometry.scene.bounds import check_movie_bounds
from layerscan.geometry.scene.sink import QUALITY, VIDEO_SUFFIXES, FrameSink

Quality = Literal["low", "medium", "high"]


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
    processes: int | None = field(default=None, metadata={"metavar": "N"})
    """Processes drawing a movie's frames: 2 (a forked helper draws every other frame; the
    file is the same), 1, or None: 2 when a core is to spare (1-minute load average at most
    the CPU count - 0.5, or no other process running at this instant), else 1."""

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
        layer = self.still_layer
        if layer is not None and not (
            isinstance(layer, int | float) and math.isfinite(layer) and layer >= 0
        ):
            raise LayerscanError(f"--layer must be a layer number from 0 up, got {layer!r}")
        if self.processes not in (None, 1, 2):
            raise LayerscanError(f"--processes must be 1 or 2, got {self.processes}")
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


def warm_up() -> None:
    """Import what a first scene and movie import (PyVista's plotting, VTK's rendering,
    matplotlib, the encoder's and progress bar's modules), ahead of the scan."""
    import imageio_ffmpeg  # noqa: F401
    import pyvista.plotting  # noqa: F401
    import tqdm  # noqa: F401

    import layerscan.geometry.scene.scene  # noqa: F401


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
    first = source.a if isinstance(source, DiffScan) else source
    plan = plan_for(first.n_layers, first.n_steps, options) if kind != "png" else []
    helper = None
    if par.helps(options.processes, kind, len(plan)):  # forked before this process' scene
        sweep = options.token_sweep and first.n_steps > 1
        helper = par.Helper(lambda: Scene(source, scene_options), plan, (w, h), sweep)
    try:
        scene = Scene(source, scene_options, off_screen=True)
    except BaseException:
        if helper is not None:
            helper.abort()
        raise
    try:
        raise_if_pending()
        if kind == "png":
            layer = scene.n_layers if options.still_layer is None else options.still_layer
            scene.update(scene.n_steps - 1, layer)
            with atomic_path(path) as tmp:
                import imageio.v3 as iio

                iio.imwrite(tmp, scene.image(), extension=".png")
            return RenderStats(path, 1, w, h, time.perf_counter() - start, 0.0, 0.0, 0.0)
        return _render_frames(scene, plan, path, kind, options, on_frame, start, overwrite, helper)
    finally:
        if helper is not None:
            helper.abort()  # a no-op once it has finished
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
    helper: par.Helper | None = None,
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
            mine = [par.drawn_here(i, helper) for i in range(len(plan))]
            steps = par.stepped(plan, mine)
            for i, frame in enumerate(bar):
                raise_if_pending()  # a Ctrl-C or SIGTERM recorded during the last frame
                t0 = time.perf_counter()
                if steps[i]:
                    par.show(scene, frame, sweep)
                if mine[i]:
                    scene.render()
                    t1 = time.perf_counter()
                    scene.read_pixels(buffer)  # (h, w, 3) bottom-up; ffmpeg flips it
                    t2 = time.perf_counter()
                    wait_s += sink.put(buffer)
                else:  # the helper's frame
                    t1 = time.perf_counter()
                    data = helper.take()
                    t2 = time.perf_counter()
                    wait_s += sink.put(data)
                render_s += t1 - t0
                readback_s += t2 - t1
                if on_frame is not None:
                    on_frame(i)
            bar.close()
            if helper is not None:
                helper.close()
            wait_s += sink.close()
        except BaseException:
            sink.abort()
            raise
        if sink.n_written != len(plan):
            raise LayerscanError(f"only {sink.n_written} of {len(plan)} frames were written")
    return RenderStats(
        path, len(plan), w, h, time.perf_counter() - start, render_s, readback_s, wait_s
    )
