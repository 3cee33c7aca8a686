"""Frames per second of a naive PyVista movie loop vs layerscan's renderer, side by side in one run.

The naive loop is what the PyVista movie example does: update the points, `add_text`, and
`write_frame` every frame (1024 particles as sphere sprites, default theme, 1280x720).
layerscan draws the same cloud PLUS its per-layer surface and all overlays. The two run in
alternating rounds so that load from other processes on the machine hits both alike.

    .venv/bin/python scripts/bench_render.py [--rounds 3] [--frames 180] [--scan FILE.scan]
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

from layerscan.geometry.scene import frames as fr  # noqa: E402
from layerscan.geometry.scene.render import RenderOptions, render_movie  # noqa: E402
from layerscan.geometry.scene.scene import SceneOptions  # noqa: E402
from tests.synthetic_scan import make_scan  # noqa: E402


def cpu_seconds() -> float:
    """CPU time of this process (all threads, llvmpipe's included) and its reaped children
    (ffmpeg): a measure that other processes on the machine do not inflate."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def naive(scan, path: Path, n_frames: int, size: tuple[int, int]) -> float:
    """The naive loop; returns frames per second (plotter build and file close included)."""
    import pyvista as pv

    start = time.perf_counter()
    plotter = pv.Plotter(off_screen=True, window_size=list(size))
    cloud = pv.PolyData(scan.positions[0, 0].copy())
    plotter.add_mesh(cloud, render_points_as_spheres=True, point_size=6, color="orange")
    plotter.open_movie(str(path), framerate=30)
    try:
        for i in range(n_frames):
            layer = i / n_frames * scan.n_layers
            cloud.points = fr.interpolate(scan.positions[0], layer)
            plotter.add_text(f"layer {layer:.1f}", name="label")
            plotter.write_frame()
    finally:
        plotter.close()
    return n_frames / (time.perf_counter() - start)


def ours(
    scan, path: Path, n_frames: int, size: tuple[int, int], quality: str = "medium", **scene_kw
):
    fpl = max(1, round(n_frames / scan.n_layers))
    stats = render_movie(
        scan,
        path,
        SceneOptions(window_size=size, **scene_kw),
        RenderOptions(frames_per_layer=fpl, hold=0, progress=False, quality=quality),
    )
    return stats


def no_encoder(scan, n_frames: int, size: tuple[int, int]) -> float:
    """Frames per second of the same frames with the encoder left out."""
    from layerscan.geometry.scene.render import plan_for
    from layerscan.geometry.scene.scene import Scene

    fpl = max(1, round(n_frames / scan.n_layers))
    scene = Scene(scan, SceneOptions(window_size=size))
    plan = plan_for(scan.n_layers, scan.n_steps, RenderOptions(frames_per_layer=fpl, hold=0))
    start = time.perf_counter()  # scene build left out, unlike the two movie timings
    try:
        for frame in plan:
            scene.set_azimuth(frame.azimuth)
            scene.update(frame.step, frame.layer)
            scene.render()
            scene.read_pixels()
    finally:
        scene.close()
    return len(plan) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--frames",
        type=int,
        default=180,
        help="frames per movie (180 = 6 per layer, the render default)",
    )
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument(
        "--scan",
        default=None,
        help="a real .scan file (e.g. from `layerscan render --save-scan`); "
        "default: a synthetic 1024-particle scan with hull surfaces",
    )
    args = parser.parse_args(argv)
    size = (args.width, args.height)
    if args.scan:
        from layerscan.geometry.scan_file import Scan

        scan = Scan.load(args.scan)
        args.layers = scan.n_layers
    else:
        scan = make_scan(n_layers=args.layers, n_particles=1024, n_tokens=12)
    n_faces = sum(len(s.faces) for s in scan.surfaces[-1])
    print(
        f"scene: {scan.n_particles} particles, {args.layers + 1} layers, "
        f"{n_faces / (args.layers + 1):.0f} surface triangles per layer, {size[0]}x{size[1]}; "
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )
    naive_fps, our_stats, naive_cpu, our_cpu = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            c0 = cpu_seconds()
            naive_fps.append(naive(scan, Path(tmp) / "naive.mp4", args.frames, size))
            c1 = cpu_seconds()
            our_stats.append(ours(scan, Path(tmp) / "ours.mp4", args.frames, size))
            c2 = cpu_seconds()
            naive_cpu.append((c1 - c0) / args.frames)
            our_cpu.append((c2 - c1) / our_stats[-1].n_frames)
            print(
                f"round {r + 1}: naive {naive_fps[-1]:.1f} fps, layerscan "
                f"{our_stats[-1].fps:.1f} fps ({our_stats[-1].n_frames} frames)"
            )
        no_surface = ours(scan, Path(tmp) / "plain.mp4", args.frames, size, show_surface=False)
        low = ours(scan, Path(tmp) / "low.mp4", args.frames, size, quality="low")
        frames_only = no_encoder(scan, args.frames, size)
    best_naive = max(naive_fps)
    best = max(our_stats, key=lambda s: s.fps)
    n = best.n_frames
    other = best.seconds - best.render_s - best.readback_s - best.encode_wait_s
    print(
        f"\nbest of {args.rounds}: naive {best_naive:.1f} fps, layerscan {best.fps:.1f} fps "
        f"(with surface and overlays) -> {best.fps / best_naive:.1f}x"
    )
    ratios = sorted(s.fps / f for s, f in zip(our_stats, naive_fps, strict=True))
    print(f"median ratio over rounds: {ratios[args.rounds // 2]:.1f}x")
    print(
        f"layerscan per frame: update+render {1e3 * best.render_s / n:.1f} ms, readback "
        f"{1e3 * best.readback_s / n:.1f} ms, waiting on the encoder "
        f"{1e3 * best.encode_wait_s / n:.1f} ms, scene build and other "
        f"{1e3 * other / n:.1f} ms"
    )
    print(
        f"CPU per frame (load-independent; render + encode, all threads and ffmpeg): naive "
        f"{1e3 * min(naive_cpu):.0f} ms, layerscan {1e3 * min(our_cpu):.0f} ms -> "
        f"{min(naive_cpu) / min(our_cpu):.1f}x less; at most {2 / min(our_cpu):.0f} fps "
        f"on 2 idle cores"
    )
    print(
        f"without the surface: {no_surface.fps:.1f} fps; --quality low (x264 ultrafast): "
        f"{low.fps:.1f} fps; no encoder at all (render + readback only): "
        f"{frames_only:.1f} fps"
    )
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
