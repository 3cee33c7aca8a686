"""CPU of whole `layerscan scan` commands at 16, 256 and 1024 tokens, side by side in one run.

    python scripts/bench_scan_cost.py [--tokens 16,256,1024] [--repeats 1]

Each scan is a fresh process (`python -m layerscan scan TEXT`, default options, the embedded
model), so its CPU seconds (user + system, from the kernel's accounting of the child)
include start-up, capture, encoding, the token layout, figures and surfaces. The texts are
the first N tokens of the held-out prompts of scripts/faithfulness_prompts.txt, joined.
CPU seconds are steadier than wall time on a shared machine; both are printed, with the
load average.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = Path(__file__).with_name("faithfulness_prompts.txt")


def texts(lengths: list[int]) -> dict[int, str]:
    """The first n tokens (embedded model's tokenizer) of the joined held-out prompts."""
    from layerscan.autoencoder.capture.loading import load_model

    lines = PROMPTS.read_text(encoding="utf-8").splitlines()
    joined = " ".join(
        line.replace("\\n", "\n") for line in lines if line.strip() and line[0] != "#"
    )
    tokenizer = load_model("embedded", device="cpu").tokenizer
    ids = tokenizer(joined, add_special_tokens=False)["input_ids"]
    if len(ids) < max(lengths):
        raise SystemExit(f"the prompts hold {len(ids)} tokens, fewer than {max(lengths)}")
    return {n: tokenizer.decode(ids[:n]) for n in lengths}


def scan_cpu(text: str, out: Path) -> tuple[float, float, str]:
    """(CPU seconds, wall seconds, the scan's last line) of one scan command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "layerscan", "scan", text, "-o", str(out), "--overwrite"],
        capture_output=True,
        text=True,
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, done.stdout.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", default="16,256,1024")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    lengths = [int(n) for n in args.tokens.split(",")]
    prompts = texts(lengths)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    cpu: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for n in lengths:
                seconds, wall, last = scan_cpu(prompts[n], Path(folder) / f"{n}.scan")
                cpu[n] = min(cpu.get(n, float("inf")), seconds)
                print(f"{n:>5} tokens: CPU {seconds:6.1f} s  wall {wall:6.1f} s  | {last}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    first = lengths[0]
    for n in lengths[1:]:
        print(f"CPU {n} tokens / {first} tokens = {cpu[n] / cpu[first]:.2f}")
    if {256, 1024} <= set(cpu):
        print(f"CPU 256 tokens / 1024 tokens = {cpu[256] / cpu[1024]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
