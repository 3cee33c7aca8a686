"""Benchmark hidden-state extraction in 1 process against 2 data-parallel CPU processes (DDP).

Usage:
    python scripts/bench_extraction.py                     # embedded model, 16,384 tokens
    python scripts/bench_extraction.py --model FOLDER --corpus FILE --tokens 32768

Three settings: 1 process with torch's default threads, 1 process with 1 thread, and 2
processes (Lightning DDP, gloo), which Lightning gives cores / 2 threads each. The middle one
separates the gain of two processes from the cost of threads that wait on each other. Each
runs as its own command (Lightning starts the second process by running it again), into a
fresh temporary cache, on the CPU. The time is rank 0's, from the start of the extraction to
the published cache: with 2 processes it includes starting the second one (imports, model
load). All lines come from one run, side by side, because the machine may be shared; the
load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULT = "RESULT "


def measure(args: argparse.Namespace) -> None:
    """One setting: extract `args.tokens` tokens of the corpus with `args.processes`."""
    import torch

    from layerscan.autoencoder.cache import ExtractionJob, build_cache
    from layerscan.autoencoder.capture.hidden_states import hidden_states_batch
    from layerscan.autoencoder.capture.loading import cache_dir, load_model
    from layerscan.autoencoder.config import TrainConfig
    from layerscan.autoencoder.corpus import read_documents
    from layerscan.autoencoder.data import chunk_windows
    from layerscan.autoencoder.extraction import extract_in_parallel

    corpus = args.corpus or str(min((cache_dir() / "corpus").glob("default-*.jsonl")))
    loaded = load_model(args.model, device="cpu", dtype="float32")
    ids = [loaded.tokenizer(text, verbose=False)["input_ids"] for text in read_documents(corpus)]
    windows, documents = chunk_windows([x for x in ids if x], 128)
    lengths = [len(w) for w in windows]
    n = next(
        (i for i in range(len(lengths)) if sum(lengths[: i + 1]) > args.tokens), len(lengths)
    )  # windows that fit in args.tokens
    job = ExtractionJob(
        Path(args.cache) / "states", windows[:n], documents[:n], {"model_id": loaded.model_id}
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.processes == 1:
        build_cache(job, lambda batch: hidden_states_batch(loaded, batch), 16, progress=False)
    else:
        extract_in_parallel(
            job,
            loaded,
            "final-norm",
            16,
            TrainConfig(accelerator="cpu", devices=str(args.processes), strategy="ddp"),
            progress=False,
        )
    seconds = time.perf_counter() - started
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        print(
            RESULT
            + json.dumps(
                {
                    "processes": args.processes,
                    "seconds": seconds,
                    "tokens": sum(lengths[:n]),
                    "shards": len(job.shard_sizes),
                    "threads": torch.get_num_threads(),
                }
            ),
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--corpus", help="default: the cached default corpus")
    parser.add_argument(
        "--tokens",
        type=int,
        default=16384,
        help="tokens to extract (8192 per shard: 2 shards or more)",
    )
    parser.add_argument("--processes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.processes:
        measure(args)
        return
    results, load = [], os.getloadavg()[0]
    for processes, threads in ((1, 0), (1, 1), (2, 0)):
        with tempfile.TemporaryDirectory() as cache:
            command = [
                sys.executable,
                __file__,
                *sys.argv[1:],
                "--processes",
                str(processes),
                "--threads",
                str(threads),
                "--cache",
                cache,
            ]
            run = subprocess.run(
                command, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1")
            )
            lines = [x for x in run.stdout.splitlines() if x.startswith(RESULT)]
            if run.returncode or not lines:
                sys.exit(f"{processes} process(es) failed:\n{run.stderr[-3000:]}")
            results.append(json.loads(lines[0].removeprefix(RESULT)))
    print(
        f"load average (1 min) before: {load:.2f}, after: {os.getloadavg()[0]:.2f}; "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'processes':>9} {'threads':>7} {'tokens':>7} {'shards':>6} {'seconds':>8} "
        f"{'tokens/s':>9}"
    )
    for r in results:
        print(
            f"{r['processes']:>9} {r['threads']:>7} {r['tokens']:>7} {r['shards']:>6} "
            f"{r['seconds']:>8.1f} {r['tokens'] / r['seconds']:>9.0f}"
        )
    for r in results[:2]:
        print(
            f"2 processes over 1 process with {r['threads']} thread(s): "
            f"{r['seconds'] / results[2]['seconds']:.2f}x"
        )


if __name__ == "__main__":
    main()
