"""Benchmark the 3D projections side by side on the same clouds: AlignedUMAP, per-layer UMAP, fast.

Each method runs in its own fresh Python process (so "cold" includes numba/JIT compilation and
first-call costs) and is then run again in that process ("warm"; AlignedUMAP re-compiles its
numba optimiser on every call, so its warm time is close to its cold time). Wall-clock and
CPU seconds are both reported: the machine may be shared, and CPU seconds of a single-threaded
run are the steadier figure. Faithfulness (k=10) is computed by the parent on the returned layouts.

    .venv/bin/python scripts/bench_project.py                 # real clouds of the embedded model
    .venv/bin/python scripts/bench_project.py --synthetic     # drifting Gaussian clusters
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

METHODS = ("fast", "independent", "aligned-umap")
PROMPT = (
    "The quick brown fox jumps over the lazy dog because it was hungry, and the dog, "
    "who had seen it all before, did not even open one eye to watch it go"
)


def real_clouds(n_tokens: int) -> np.ndarray:
    """(n_layers+1, n_particles, d_particle) clouds of a prompt through the embedded model."""
    from layerscan.autoencoder.artifact import load_autoencoder
    from layerscan.autoencoder.capture.hidden_states import capture
    from layerscan.autoencoder.capture.loading import load_model

    loaded = load_model("embedded")
    cap = capture(loaded, PROMPT)
    cap = cap.prefix(min(n_tokens, cap.n_tokens))
    return load_autoencoder().encode(cap.hidden).clouds


def synthetic_clouds(n_layers: int, n_points: int, d: int, seed: int = 0) -> np.ndarray:
    """Gaussian clusters drifting and diffusing from layer to layer."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(8, d)) * 4
    labels = rng.integers(0, 8, n_points)
    offsets = rng.normal(size=(n_points, d))
    drift = rng.normal(size=(8, d)) * 0.3
    out = []
    for layer in range(n_layers):
        offsets = offsets + rng.normal(size=offsets.shape) * 0.15
        out.append(centers[labels] + drift * layer + offsets)
    return np.stack(out).astype(np.float32)


def worker(method: str, clouds_file: str, out_file: str, repeats: int, threads: int) -> None:
    """Fit `method` cold, then `repeats` - 1 more times warm; save layouts and times."""
    import torch

    torch.set_num_threads(threads)
    from layerscan.geometry.projection import make_projection

    clouds = np.load(clouds_file)
    times, cpu = [], []
    for _ in range(repeats):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        layouts = make_projection(method, random_state=0).fit(clouds).embedding_
        times.append(time.perf_counter() - wall0)
        cpu.append(time.process_time() - cpu0)
    np.save(out_file, layouts)
    Path(out_file + ".json").write_text(json.dumps({"wall": times, "cpu": cpu}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--synthetic",
        action="store_true",
        help="synthetic drifting clusters instead of the embedded model",
    )
    parser.add_argument("--tokens", type=int, default=32, help="prompt tokens (real clouds)")
    parser.add_argument(
        "--layers", type=int, default=0, help="use only the first N layer clouds (0: all)"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=3, help="fast mode: 1 cold + N-1 warm")
    parser.add_argument(
        "--reference-repeats",
        type=int,
        default=1,
        help="umap modes: 1 cold + N-1 warm (each fit takes minutes)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--worker", nargs=3, metavar=("METHOD", "CLOUDS", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker, args.repeats, args.threads)
        return 0

    from layerscan.geometry.faithfulness import faithfulness

    clouds = synthetic_clouds(31, 1024, 16) if args.synthetic else real_clouds(args.tokens)
    if args.layers:
        clouds = clouds[: args.layers]
    source = "synthetic clusters" if args.synthetic else f"embedded model, {args.tokens} tokens"
    print(
        f"clouds: {clouds.shape} ({source}); {args.repeats - 1} warm repeat(s); "
        f"torch threads {args.threads}",
        flush=True,
    )
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/clouds.npy", clouds)
        for method in args.methods.split(","):
            out = f"{tmp}/{method}.npy"
            repeats = args.repeats if method == "fast" else args.reference_repeats
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--repeats",
                    str(repeats),
                    "--threads",
                    str(args.threads),
                    "--worker",
                    method,
                    f"{tmp}/clouds.npy",
                    out,
                ],
                check=True,
            )
            times = json.loads(Path(out + ".json").read_text())
            fig = faithfulness(clouds, np.load(out), k=10)
            rows[method] = (times, fig)
            print(
                f"  {method}: wall {times['wall']}, CPU {times['cpu']}; trust "
                f"{fig.trustworthiness.mean():.4f} continuity {fig.continuity.mean():.4f} "
                f"disparity {fig.disparity[1:].mean():.4f}",
                flush=True,
            )
    ref = rows.get("aligned-umap", (None,))[0]
    header = (
        "| method | cold s | warm s | CPU s (last) | speed-up (CPU) | trust k=10 | "
        "continuity | disparity |"
    )
    print(header)
    print("|" + "---|" * 8)
    for method, (times, fig) in rows.items():
        warm_wall = min(times["wall"][1:]) if len(times["wall"]) > 1 else float("nan")
        warm_cpu = times["cpu"][-1]
        speed = f"{ref['cpu'][-1] / warm_cpu:.0f}x" if ref else "-"
        print(
            f"| {method} | {times['wall'][0]:.1f} | {warm_wall:.1f} | {warm_cpu:.1f} | "
            f"{speed} | {fig.trustworthiness.mean():.4f} | {fig.continuity.mean():.4f} | "
            f"{fig.disparity[1:].mean():.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
