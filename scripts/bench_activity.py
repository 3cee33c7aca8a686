"""Frames per second at 720p with attention arcs, with the component strip and a trace, and
without either, side by side in one run (the goal: >= 25 fps with them drawn).

Each variant renders the same MP4 (and the same frames with no encoder: render + readback only),
in alternating rounds so that load from other processes hits every variant alike.

    .venv/bin/python scripts/bench_activity.py [--rounds 3] [--frames 180] [--scan FILE.scan]

A real scan needs --attention and --components, e.g.
`layerscan render "..." --attention --components --generate 8 --save-scan gen.scan -o x.png`.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerscan.geometry.scene.render import RenderOptions, plan_for, render_movie  # noqa: E402
from layerscan.geometry.scene.scene import Scene, SceneOptions  # noqa: E402
from tests.synthetic_scan import make_activity_scan  # noqa: E402

VARIANTS = {
    "without (--no-arcs --no-strip)": dict(show_attention=False, show_components=False),
    "arcs (mean of heads)": dict(show_attention=True, show_components=False),
    "strip + trace": dict(show_attention=False, show_components=True, trace=3),
    "arcs + strip + trace": dict(show_attention=True, show_components=True, trace=3),
}


def movie_fps(scan, path: Path, n_frames: int, size: tuple[int, int], **scene_kw) -> float:
    fpl = max(1, round(n_frames / scan.n_layers))
    stats = render_movie(
        scan,
        path,
        SceneOptions(window_size=size, **scene_kw),
        RenderOptions(frames_per_layer=fpl, hold=0, progress=False),
    )
    return stats.fps


def cpu_seconds() -> float:
    """CPU time of this process, all threads (llvmpipe's included): other processes on the
    machine do not inflate it."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def frames_fps(scan, n_frames: int, size: tuple[int, int], **scene_kw) -> tuple[float, float]:
    """The same frames, update + render + readback only (scene build left out): frames per
    second, and CPU seconds per frame."""
    fpl = max(1, round(n_frames / scan.n_layers))
    scene = Scene(scan, SceneOptions(window_size=size, **scene_kw))
    plan = plan_for(scan.n_layers, scan.n_steps, RenderOptions(frames_per_layer=fpl, hold=0))
    start, cpu = time.perf_counter(), cpu_seconds()
    try:
        for frame in plan:
            scene.set_azimuth(frame.azimuth)
            scene.update(frame.step, frame.layer)
            scene.render()
            scene.read_pixels()
    finally:
        scene.close()
    return len(plan) / (time.perf_counter() - start), (cpu_seconds() - cpu) / len(plan)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=180)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument(
        "--scan",
        default=None,
        help="a real .scan made with --attention --components (default: a synthetic one, "
        "30 blocks, 9 heads, 1024 particles, 18 tokens, 8 of them generated)",
    )
    args = parser.parse_args(argv)
    size = (args.width, args.height)
    if args.scan:
        from layerscan.geometry.scan_file import Scan

        scan = Scan.load(args.scan)
        if scan.attention is None or scan.components is None:
            parser.error(f"{args.scan}: made without --attention or --components")
    else:
        scan = make_activity_scan(
            n_layers=30, n_tokens=18, n_prompt=10, n_heads=9, n_particles=1024
        )
    print(
        f"scene: {scan.n_particles} particles, {len(scan.tokens)} tokens, {scan.n_layers} "
        f"blocks, {size[0]}x{size[1]}, {args.frames} frames; load average before: "
        f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    movie: dict[str, list[float]] = {name: [] for name in VARIANTS}
    frames: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for name, kw in VARIANTS.items():
                movie[name].append(movie_fps(scan, Path(tmp) / "m.mp4", args.frames, size, **kw))
                fps, per_frame = frames_fps(scan, args.frames, size, **kw)
                frames[name].append(fps)
                cpu[name].append(per_frame)
            print(
                f"round {r + 1}: "
                + ", ".join(f"{name} {movie[name][-1]:.1f}" for name in VARIANTS)
                + " fps (MP4)"
            )
    base_movie = max(movie[next(iter(VARIANTS))])
    base_frames = max(frames[next(iter(VARIANTS))])
    print(f"\nbest of {args.rounds} rounds, fps at {size[0]}x{size[1]}:")
    base_cpu = min(cpu[next(iter(VARIANTS))])
    print(
        f"{'':32} {'MP4':>7} {'ratio':>6} {'frames only':>12} {'ratio':>6} "
        f"{'CPU ms/frame':>13} {'ratio':>6}"
    )
    for name in VARIANTS:
        m, f, c = max(movie[name]), max(frames[name]), min(cpu[name])
        print(
            f"{name:32} {m:7.1f} {m / base_movie:6.2f} {f:12.1f} {f / base_frames:6.2f} "
            f"{1e3 * c:13.1f} {c / base_cpu:6.2f}"
        )
    print(
        "CPU ms/frame: update + render + readback, all threads, load-independent; "
        f"{os.cpu_count()} idle cores would give at most {os.cpu_count()} / that fps"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
