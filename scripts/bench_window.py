"""Frames per second of the interactive window while it plays, scan by scan, side by side.

    xvfb-run -s "-screen 0 1920x1080x24" .venv/bin/python scripts/bench_window.py \
        --scan long.scan [--scan short.scan] [--frames 120] [--rounds 2]

Each scan opens in a real `layerscan view` window (1280x720, the window's own per-pixel
lighting, sliders and overlays) on the display in $DISPLAY; the animation is advanced frame by
frame exactly as the window's timer does (`Viewer.tick`: update the scene, then render), and
the time per frame is measured. The rounds alternate the scans, so load from other processes
hits all of them alike. Needs a display (Xvfb is enough).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from layerscan.geometry.diff_scan import load_any  # noqa: E402
from layerscan.geometry.scene.window import Viewer  # noqa: E402


def frames_per_second(path: str, frames: int) -> float:
    """Play `frames` frames of the scan in a window; the median frame rate."""
    viewer = Viewer(load_any(path))
    try:
        viewer.plotter.show(auto_close=False, interactive=False)
        viewer.show(layer=0.0)
        viewer.playing = True
        times = []
        for _ in range(frames):
            if not viewer.playing:  # the last layer: play again from the start
                viewer.toggle_play()
            start = time.perf_counter()
            viewer.tick()
            times.append(time.perf_counter() - start)
        return 1.0 / statistics.median(times)
    finally:
        viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scan", action="append", required=True, help="a .scan file (repeat)")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if not os.environ.get("DISPLAY"):
        sys.exit("no display: run under xvfb-run (see the docstring)")
    results: dict[str, list[float]] = {path: [] for path in args.scan}
    for round_ in range(1, args.rounds + 1):
        for path in args.scan:
            fps = frames_per_second(path, args.frames)
            results[path].append(fps)
            print(f"round {round_}: {path}: {fps:.1f} fps")
    load = os.getloadavg()[0]
    print(f"\nmedian over rounds, 1280x720, load average {load:.1f} on {os.cpu_count()} CPUs")
    for path, values in results.items():
        scan = load_any(path)
        print(f"{path}: {statistics.median(values):.1f} fps ({len(scan.tokens)} tokens)")


if __name__ == "__main__":
    main()
