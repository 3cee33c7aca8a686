"""Benchmark capture on the embedded model: bare forward vs one-pass capture vs per-prefix loop,
and the cost of --components on the default prompt with --generate 16.

Run: .venv/bin/python scripts/bench_capture.py [--repeats 7] [--device cpu]
All three run interleaved in one process, so the printed ratios share the machine's load.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.autoencoder.capture.loading import load_model
from layerscan.cli.common import DEFAULT_PROMPT

PROMPT = (
    "In the quiet town by the river, the old clockmaker opened his shop every morning at "
    "seven, wound the tall clocks along the wall, and listened for the one that always ran "
    "a little late, because he believed it was trying to tell him something about the "
    "years he had spent alone."
)


CPU_TIMES: dict[str, list[float]] = {}
"""CPU seconds of this process (all threads) per case: other jobs on the machine inflate wall
time, much less this."""


def timed(fn, name: str = "") -> float:
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    CPU_TIMES.setdefault(name, []).append(time.process_time() - cpu)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--components-only", action="store_true", help="time only the --components pair"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's); 1 keeps CPU times steady on a busy machine",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    loaded = load_model("embedded", device=args.device)
    ids = torch.tensor([loaded.tokenizer(PROMPT)["input_ids"]], device=loaded.device)
    n_tokens = ids.shape[1]

    def bare() -> None:
        loaded.model(ids, use_cache=False)

    def states_only() -> None:
        capture(loaded, PROMPT, top_k=0)

    def with_lens() -> None:
        capture(loaded, PROMPT, top_k=5)

    def with_attention() -> None:
        capture(loaded, PROMPT, top_k=0, attention=True)

    default_ids = torch.tensor(
        [loaded.tokenizer(DEFAULT_PROMPT)["input_ids"]], device=loaded.device
    )

    def bare_default() -> None:
        loaded.model(default_ids, use_cache=False)

    def attention_default() -> None:
        capture(loaded, DEFAULT_PROMPT, top_k=0, attention=True)

    def per_prefix() -> None:
        for length in range(1, n_tokens + 1):
            loaded.model(ids[:, :length], use_cache=False, output_hidden_states=True)

    def generate() -> None:
        capture(loaded, DEFAULT_PROMPT, generate=16)

    def generate_components() -> None:
        capture(loaded, DEFAULT_PROMPT, generate=16, components=True)

    cases = {
        "bare forward": bare,
        "capture (states, all prefixes)": states_only,
        "capture + logit lens (top-5)": with_lens,
        "capture + --attention": with_attention,
        "per-prefix loop": per_prefix,
        "bare forward, default prompt": bare_default,
        "--attention, default prompt": attention_default,
        "default prompt, --generate 16": generate,
        "  the same with --components": generate_components,
    }
    if args.components_only:
        cases = {name: fn for name, fn in cases.items() if "generate" in name or "same" in name}
    for fn in cases.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn, name))
    median = {name: statistics.median(values) for name, values in times.items()}
    threads = torch.get_num_threads()
    print(
        f"embedded model, {n_tokens}-token prompt, device {loaded.device}, "
        f"{threads} torch threads, median of {args.repeats}"
    )
    base = median.get("bare forward")
    for name, value in median.items():
        if base is None:  # --components-only: no bare forward to compare with
            print(f"  {name:<32} {value * 1000:8.1f} ms")
            continue
        if "default prompt" in name:
            continue
        print(f"  {name:<32} {value * 1000:8.1f} ms   {value / base:6.2f}x bare forward")
    if not args.components_only:
        speedup = median["per-prefix loop"] / median["capture (states, all prefixes)"]
        print(
            f"capture vs bare forward: {median['capture (states, all prefixes)'] / base:.2f}x "
            f"(goal <= 1.1x); per-prefix loop / capture: {speedup:.1f}x (goal >= 25x)"
        )
        n_default = default_ids.shape[1]
        ratio = median["--attention, default prompt"] / median["bare forward, default prompt"]
        print(
            f"--attention vs bare forward on the default prompt ({n_default} tokens): "
            f"{ratio:.2f}x (goal <= 2x); on the {n_tokens}-token prompt: "
            f"{median['capture + --attention'] / base:.2f}x"
        )
    ratio = median["  the same with --components"] / median["default prompt, --generate 16"]
    cpu = {name: statistics.median(CPU_TIMES[name]) for name in times}
    cpu_ratio = cpu["  the same with --components"] / cpu["default prompt, --generate 16"]
    print(
        f"--components vs without, default prompt + 16 generated: {ratio:.2f}x wall, "
        f"{cpu_ratio:.2f}x CPU time (goal <= 1.3x)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
