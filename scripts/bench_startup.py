"""Benchmark start-up: each phase of a command timed as a whole fresh process, side by side.

Run: .venv/bin/python scripts/bench_startup.py [--rounds 3] [--skip render]
Every case is a new subprocess; the rounds interleave the cases, so all of them share the
machine's load, and the table shows the median wall time, its ratio to the bare interpreter and
the phase breakdown each process reports (import times from `python -X importtime`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
LAYERSCAN = str(Path(PYTHON).with_name("layerscan"))
PROMPT = "Hello world"
PACKAGES = ("torch", "transformers", "sympy", "sklearn", "scipy", "pyvista", "vtkmodules", "numpy")
"""Third-party packages whose cumulative import time the import phase reports."""

_TIMED = """
import json, sys, time
t0 = time.perf_counter()
{imports}
t1 = time.perf_counter()
{work}
t2 = time.perf_counter()
print("BENCH " + json.dumps({{"import": t1 - t0, "work": t2 - t1}}), file=sys.stderr)
"""
_RENDER_UNTIL = """
import json, sys, time
t0 = time.perf_counter()
from layerscan.cli.main import main
import layerscan.cli.common as common

marks, make = {{}}, common.PipelineFlags.pipeline.func

def until_load(self, load):
    marks["imports"] = time.perf_counter() - t0
    {at_load}
    return load(self)

def until_work(self, *args):
    self.load()
    marks["load"] = time.perf_counter() - t0 - marks["imports"]
    print("BENCH " + json.dumps(marks), file=sys.stderr)
    raise SystemExit(0)  # main() passes it on: the process exits as a command would

def pipeline(self):  # the pipeline's module is imported there, as in a command
    made = make(self)
    load = type(made).load
    type(made).load = lambda self: until_load(self, load)
    type(made).check_prompts = until_work
    return made

common.PipelineFlags.pipeline = property(pipeline)
main(["render", "-o", "bench.mp4"])
"""
"""`layerscan render` of the default prompt, run by its own main(), stopped where its work
would start (`Pipeline.check_prompts`, once loading is done), or where its loading
would start (imports only). Whatever the command imports, and however, is measured as it
runs, in this tree or a --baseline one."""
RENDER_IMPORTS = _RENDER_UNTIL.format(at_load="raise SystemExit(0)")
RENDER_FIXED_COST = _RENDER_UNTIL.format(at_load="")
THREADS = "import torch\ntorch.set_num_threads(1)\n"
"""As the commands load and capture (ScanOptions.threads, default 1)."""
LOAD_MODEL = (
    "from layerscan.autoencoder.capture.loading import load_model\n"
    "load_model('embedded', device='cpu')"
)
LOAD_AUTOENCODER = (
    "from layerscan.autoencoder.artifact import load_autoencoder\nload_autoencoder(None)"
)


def timed_code(imports: str, work: str = "pass") -> list[str]:
    return [PYTHON, "-c", _TIMED.format(imports=imports, work=work)]


def cases(folder: Path) -> dict[str, list[str]]:
    """{name: argv} of every phase, each run as its own process."""
    return {
        "python -c pass": [PYTHON, "-c", "pass"],
        "layerscan --help": [LAYERSCAN, "--help"],
        "layerscan info": [LAYERSCAN, "info"],
        "imports (render path)": [PYTHON, "-X", "importtime", "-c", RENDER_IMPORTS],
        "model load": timed_code(
            "import layerscan.autoencoder.capture.loading", THREADS + LOAD_MODEL
        ),
        "autoencoder load": timed_code(
            "import layerscan.autoencoder.artifact", THREADS + LOAD_AUTOENCODER
        ),
        "fixed cost (imports+model+AE)": [PYTHON, "-c", RENDER_FIXED_COST],
        "layerscan scan (short prompt)": [
            LAYERSCAN,
            "scan",
            PROMPT,
            "-o",
            str(folder / "bench.scan"),
            "--overwrite",
        ],
        "layerscan render (scan file, still)": [  # the scan case's file: skipped with it
            LAYERSCAN,
            "render",
            str(folder / "bench.scan"),
            "-o",
            str(folder / "bench.png"),
            "--overwrite",
        ],
        "layerscan render (default prompt)": [
            LAYERSCAN,
            "render",
            "-o",
            str(folder / "bench.mp4"),
            "--overwrite",
        ],
    }


def import_breakdown(stderr: str) -> dict[str, float]:
    """Seconds of import time spent in each package of PACKAGES (its modules' own times), and
    in all of them together ("imports")."""
    found: dict[str, float] = {}
    total = 0.0
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if match:
            package = match[2].split(".")[0]
            total += int(match[1]) / 1e6
            if package in PACKAGES:
                found[package] = found.get(package, 0.0) + int(match[1]) / 1e6
    return {**found, "imports": total} if total else found


def phases(name: str, stdout: str, stderr: str) -> dict[str, float]:
    """What the process says about its own phases."""
    out: dict[str, float] = {}
    if "importtime" in name or name.removeprefix("base: ").startswith("imports"):
        out.update(import_breakdown(stderr))
    for line in stderr.splitlines():
        if line.startswith("BENCH "):
            out.update(json.loads(line[6:]))
    match = re.search(r"in ([\d.]+) s \(([^)]*) s\)", stdout)  # scan's "in X s (stage t, ...)"
    if match:
        out["reported work"] = float(match[1])
    match = re.search(r"scanned .* in ([\d.]+) s", stderr)  # render's scan line
    if match:
        out["scan"] = float(match[1])
    match = re.search(r"wrote \S+ \(.*\) in ([\d.]+) s", stdout)  # render's movie line
    if match:
        out["movie"] = float(match[1])
    return out


def run_once(
    argv: list[str], name: str, pythonpath: str | None = None
) -> tuple[float, dict[str, float]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if pythonpath:  # a baseline tree, found before the editable install
        env["PYTHONPATH"] = pythonpath
    start = time.perf_counter()  # cwd: away from the source tree, which `-c` would import
    result = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir()
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{name} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return wall, phases(name, result.stdout, result.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--skip", nargs="*", default=[], help="skip cases whose name contains one of these words"
    )
    parser.add_argument("--json", help="also write the medians here")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="also run every case with DIR first on PYTHONPATH (a folder "
        "holding an older `layerscan` package laid out as installed), "
        "interleaved, as 'base: CASE'",
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        todo = {
            name: cmd
            for name, cmd in cases(Path(tmp)).items()
            if not any(word in name for word in args.skip)
        }
        paths = {name: None for name in todo}
        if args.baseline:
            for name in list(todo):
                if name != "python -c pass":
                    todo[f"base: {name}"] = todo[name]
                    paths[f"base: {name}"] = args.baseline
            order = list(cases(Path(tmp)))  # each case beside its baseline
            todo = {
                name: todo[name]
                for name in sorted(todo, key=lambda n: (order.index(n.removeprefix("base: ")), n))
            }
        walls: dict[str, list[float]] = {name: [] for name in todo}
        parts: dict[str, list[dict[str, float]]] = {name: [] for name in todo}
        run_once(todo["python -c pass"], "warm-up")
        for round_ in range(args.rounds):
            for name, cmd in todo.items():
                wall, phase = run_once(cmd, name, paths.get(name))
                walls[name].append(wall)
                parts[name].append(phase)
                print(f"round {round_ + 1}: {name:<36} {wall:6.2f} s", file=sys.stderr, flush=True)
    floor = statistics.median(walls["python -c pass"])
    load = os.getloadavg()[0]
    print(
        f"\nmedian of {args.rounds} rounds, each case a fresh process; load average "
        f"{load:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'case':<36} {'wall s':>7} {'x floor':>8}  phases (median s)")
    medians = {}
    for name in todo:
        wall = statistics.median(walls[name])
        keys = sorted({k for p in parts[name] for k in p}, key=lambda k: (k not in PACKAGES, k))
        breakdown = {k: statistics.median([p[k] for p in parts[name] if k in p]) for k in keys}
        medians[name] = {"wall": wall, **breakdown}
        text = ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items())
        print(f"{name:<36} {wall:7.2f} {wall / floor:8.1f}  {text}")
    if args.json:
        Path(args.json).write_text(json.dumps(medians, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
