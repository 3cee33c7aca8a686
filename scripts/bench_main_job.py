"""The main job and its fixed costs beside the machine's floor, side by side in one run.

    .venv/bin/python scripts/bench_main_job.py [--rounds 3] [--baseline DIR]

Every case is a fresh process; the rounds interleave the cases so that load from other
processes hits all of them alike. For each case: the median wall time and the median CPU time
(user + sys of the process and its children: ffmpeg, the drawing helper), which other
processes on the machine inflate far less than the wall time.

- main job: `layerscan render -o x.mp4` of the default prompt (what `scripts/quickstart.sh`
  runs once `.venv` is set up), beside the floor: `python -c "import torch"` plus ffmpeg
  encoding the same frames with the same x264 settings (read from a raw file in the page
  cache).
- fixed cost: `layerscan capture hi --top-k 0` and `layerscan scan hi` (load the model, a
  1-token forward pass), beside `python -c "import torch"`.
- rendering: `layerscan render x.scan -o x.mp4` of the default prompt's scan at 1280x720, with
  its own figure (frames / the seconds it reports: scene build and drawing and encoding),
  with `--processes 2` and `--processes 1` (the default picks 2 only when the 1-minute load
  average leaves a core to spare, so the main job here may run either).

`--baseline DIR` runs every layerscan case again with DIR first on PYTHONPATH (a folder holding
an older `layerscan` package laid out as installed), interleaved, as "base: CASE".
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from layerscan.geometry.scene.sink import ffmpeg_command

PYTHON = sys.executable
LAYERSCAN = [PYTHON, "-m", "layerscan"]


def timed(argv: list[str], pythonpath: str | None = None, stdin_path: Path | None = None):
    """(wall s, CPU s, stdout+stderr) of argv; CPU: user + sys of it and its children, from
    this process' resource usage of its reaped children before and after."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(stdin_path or os.devnull, "rb") as stdin:
        result = subprocess.run(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tempfile.gettempdir(),  # away from the source tree, which `-m` would import
        )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    text = result.stdout.decode(errors="replace")
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{text[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, text


def raw_frames(movie: Path, raw: Path) -> tuple[int, int, int]:
    """Decode `movie` to raw RGB frames in `raw`; returns (frames, width, height)."""
    import imageio.v3 as iio

    n, shape = 0, None
    with open(raw, "wb") as fh:
        for frame in iio.imiter(movie):
            fh.write(frame.tobytes())
            n, shape = n + 1, frame.shape
    assert shape is not None
    return n, shape[1], shape[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", metavar="DIR", help="an older tree to run beside this one")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scan, movie, raw = folder / "main.scan", folder / "main.mp4", folder / "frames.raw"
        # warm-up: the model cache and the page cache, and the frames the floor encodes
        timed(LAYERSCAN + ["render", "-o", str(movie), "--save-scan", str(scan)])
        n_frames, width, height = raw_frames(movie, raw)
        cases: dict[str, tuple[list[str], str | None, Path | None]] = {
            "python -c 'import torch'": ([PYTHON, "-c", "import torch"], None, None),
            f"ffmpeg: encode the {n_frames} frames": (
                ffmpeg_command(folder / "floor.mp4", "mp4", (width, height), 30, "medium"),
                None,
                raw,
            ),
        }
        render = ["render", str(scan), "-o", str(folder / "y.mp4"), "--overwrite"]
        ours = {  # name: (arguments, those of the baseline tree's case beside it, if any)
            "main job: layerscan render": (
                ["render", "-o", str(folder / "x.mp4"), "--overwrite"],
                ["render", "-o", str(folder / "x.mp4"), "--overwrite"],
            ),
            "layerscan capture hi --top-k 0": (
                ["capture", "hi", "--top-k", "0", "-o", str(folder / "x.capture"), "--overwrite"],
                ["capture", "hi", "--top-k", "0", "-o", str(folder / "x.capture"), "--overwrite"],
            ),
            "layerscan scan hi": (
                ["scan", "hi", "-o", str(folder / "x.scan"), "--overwrite"],
                ["scan", "hi", "-o", str(folder / "x.scan"), "--overwrite"],
            ),
            "render x.scan --processes 2": (render + ["--processes", "2"], None),
            "render x.scan --processes 1": (render + ["--processes", "1"], render),
        }
        for name, (rest, base) in ours.items():
            cases[name] = (LAYERSCAN + rest, None, None)
            if args.baseline and base is not None:
                cases[f"base: {name}"] = (LAYERSCAN + base, args.baseline, None)
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        movie_s: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(args.rounds):
            for name, (cmd, path, stdin) in cases.items():
                wall, cpu, text = timed(cmd, path, stdin)
                walls[name].append(wall)
                cpus[name].append(cpu)
                found = re.search(r"wrote \S+ \((\d+) frames.*\) in ([\d.]+) s", text)
                if found and "x.scan" in name:
                    movie_s[name].append(int(found[1]) / float(found[2]))
                print(f"round {round_ + 1}: {name:<40} {wall:6.2f} s", file=sys.stderr, flush=True)
    wall = {name: statistics.median(v) for name, v in walls.items()}
    cpu = {name: statistics.median(v) for name, v in cpus.items()}
    torch_case = "python -c 'import torch'"
    floor = wall[torch_case] + wall[f"ffmpeg: encode the {n_frames} frames"]
    floor_cpu = cpu[torch_case] + cpu[f"ffmpeg: encode the {n_frames} frames"]
    print(
        f"\nmedians of {args.rounds} rounds, each case a fresh process; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after, on {os.cpu_count()} CPUs; "
        f"{n_frames} frames at {width}x{height}"
    )
    print(f"{'case':<40} {'wall s':>7} {'CPU s':>7}  ratio")
    for name in cases:
        if "render x.scan" in name:
            ratio = f"{statistics.median(movie_s[name]):.1f} fps (frames / its own figure)"
        elif "main job" in name:
            ratio = f"{wall[name] / floor:.2f}x the floor (CPU {cpu[name] / floor_cpu:.2f}x)"
        elif name.removeprefix("base: ").startswith("layerscan"):
            ratio = f"{wall[name] / wall[torch_case]:.2f}x import torch"
        else:
            ratio = ""
        print(f"{name:<40} {wall[name]:7.2f} {cpu[name]:7.2f}  {ratio}")
    print(f"{'floor: import torch + ffmpeg':<40} {floor:7.2f} {floor_cpu:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
