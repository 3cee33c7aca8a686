"""Benchmark of `layerscan diff` on held-out prompt pairs (written for this bench only, kept out
of every corpus), checked with code independent of the diff's own.

Per pair: Spearman of the stored divergence curve against the hidden states' aligned-pair
divergence (recomputed here from fresh captures, aligned with difflib), the largest shared-
prefix displacement (share of the layer's mean radius), each side's token trust and distance
correlation (means over layers) beside the joint PCA-3 baseline, and the wall time.

    .venv/bin/python scripts/bench_diff.py            # the 8 pairs, the embedded model
    .venv/bin/python scripts/bench_diff.py --long     # one 1000-token pair: time, peak memory
    .venv/bin/python scripts/bench_diff.py --figures  # figures of 2 layouts: apart vs together
"""

from __future__ import annotations

import argparse
import difflib
import os
import resource
import time

import numpy as np
from scipy.stats import spearmanr

from layerscan.geometry.faithfulness import (
    distance_correlation,
    distance_correlations,
    token_k,
    token_places,
    trustworthiness,
    trustworthiness_of,
)
from layerscan.geometry.pipeline import Pipeline

LONG_TEXT = " ".join(
    f"On day {i} the traveller walked {i * 7 % 23 + 2} miles toward the "
    f"{('red', 'grey', 'green', 'blue', 'white')[i % 5]} hills and wrote it down."
    for i in range(1, 20)
)
STORY = (
    "The old lighthouse keeper climbed the spiral stairs every evening at dusk. He trimmed the "
    "wick, polished the lens, and watched the ships pass along the rocky coast. One winter the "
    "storm lasted nine days, and the supply boat could not reach the island. He rationed his "
    "bread and wrote letters he could not send. When the sea finally calmed, the boat arrived "
    "with flour, oil and a newspaper that announced the lighthouse would be automated in spring."
    " He read it twice, folded it carefully, and went up the stairs as usual."
)
PAIRS = {
    "substitution": (
        "The doctor said the patient should rest at home for a week.",
        "The lawyer said the patient should rest at home for a week.",
    ),
    "insertion": (
        "She did believe the story he told us about the war.",
        "She did not believe the story he told us about the war.",
    ),
    "deletion": (
        "I think the meeting was very productive and we should repeat it.",
        "I think the meeting was productive and we should repeat it.",
    ),
    "negation": (
        "Everyone agreed that the new plan would work well.",
        "Nobody agreed that the new plan would work well.",
    ),
    "number": (
        "The train leaves at 7:15 and arrives 3 hours later in Lyon.",
        "The train leaves at 9:45 and arrives 5 hours later in Lyon.",
    ),
    "code": (
        "def area(r):\n    return 3.14159 * r * r\n\nprint(area(2))",
        "def area(r):\n    return 2 * 3.14159 * r\n\nprint(area(2))",
    ),
    "short (~10 tok)": (
        "My sister bought a red bicycle at the market yesterday.",
        "My sister sold a red bicycle at the market yesterday.",
    ),
    "long (~200 tok)": (
        STORY + " " + LONG_TEXT[:300],
        STORY.replace("nine days", "two days") + " " + LONG_TEXT[:300],
    ),
}


def measured_curve(pipeline: Pipeline, prompt_a: str, prompt_b: str) -> np.ndarray:
    """(n_layers+1,) mean relative distance of difflib-aligned token states, from scratch."""
    a, b = pipeline.capture_prompt(prompt_a), pipeline.capture_prompt(prompt_b)
    blocks = difflib.SequenceMatcher(None, a.token_ids, b.token_ids, autojunk=False)
    pairs = np.array(
        [(m.a + k, m.b + k) for m in blocks.get_matching_blocks() for k in range(m.size)]
    )
    ha = a.hidden[:, pairs[:, 0]].astype(np.float64)
    hb = b.hidden[:, pairs[:, 1]].astype(np.float64)
    scale = (np.linalg.norm(ha, axis=-1) + np.linalg.norm(hb, axis=-1)) / 2
    return (np.linalg.norm(ha - hb, axis=-1) / scale).mean(-1)


def prefix_displacement(diff) -> float:
    """Largest |place_A - place_B| of the tokens before the first difference, over the layer's
    mean radius, over all layers."""
    ids_same = 0
    for ta, tb in zip(diff.a.tokens, diff.b.tokens, strict=False):
        if ta != tb:
            break
        ids_same += 1
    if not ids_same:
        return 0.0
    pa = token_places(diff.a.positions[0], diff.a.particle_tokens[0], len(diff.a.tokens))
    pb = token_places(diff.b.positions[0], diff.b.particle_tokens[0], len(diff.b.tokens))
    radius = np.linalg.norm(pa - pa.mean(1, keepdims=True), axis=-1).mean(-1)  # (n_layers+1,)
    moved = np.linalg.norm(pa[:, :ids_same] - pb[:, :ids_same], axis=-1).max(-1)
    return float((moved / radius).max())


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (the machine may be shared)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_pairs(pipeline: Pipeline) -> None:
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(
        f"{'pair':16s} {'tokens':>9s} {'Spearman':>8s} {'prefix':>8s} "
        f"{'A trust/joint':>14s} {'A corr/joint':>13s} {'B trust/joint':>14s} "
        f"{'B corr/joint':>13s} {'fallback':>8s} {'wall s':>6s} {'CPU s':>6s}"
    )
    for name, (prompt_a, prompt_b) in PAIRS.items():
        start, cpu = time.perf_counter(), cpu_seconds()
        diff = pipeline.diff(prompt_a, prompt_b)
        wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        rho = spearmanr(diff.divergence, measured_curve(pipeline, prompt_a, prompt_b))[0]
        sides = [
            f"{s.token_trust[0].mean():.3f}/{t.mean():.3f}   {s.distance_correlation[0].mean():.3f}"
            f"/{c.mean():.3f}"
            for s, t, c in zip(
                (diff.a, diff.b), diff.joint_trust, diff.joint_correlation, strict=True
            )
        ]
        print(
            f"{name:16s} {len(diff.a.tokens):4d}/{len(diff.b.tokens):<4d} {rho:8.3f} "
            f"{prefix_displacement(diff):8.1e}   {sides[0]}   {sides[1]} "
            f"{int(diff.fallback_layers.sum()):5d}/{len(diff.divergence)} {wall:6.1f} {cpu:6.1f}"
        )


def long_pair(pipeline: Pipeline) -> tuple[str, str]:
    """About 1000 tokens, and the same with one word inserted near the start."""
    pipeline.check_prompts([LONG_TEXT])  # loads the model and autoencoder first
    tokenizer = pipeline.load()[0].tokenizer
    text = LONG_TEXT
    while len(tokenizer(text + " " + LONG_TEXT).input_ids) <= 1000:
        text += " " + LONG_TEXT
    while len(tokenizer(text).input_ids) < 1000:  # then word by word up to 1000 tokens
        text += " " + STORY.split()[len(text) % 50]
    return text, text.replace(
        "On day 5 the traveller walked", "On day 5 the weary traveller walked", 1
    )


def run_figures(pipeline: Pipeline) -> None:
    """Token trust and distance correlation of two layouts of the same 1000-token states (a
    side's shared-space places and its joint PCA-3), one call per layout as before, and both
    in one call (the states' distances once), side by side in this run."""
    from layerscan.geometry.token_layout import aligned_pca

    text, _ = long_pair(pipeline)
    states = pipeline.capture_prompt(text).hidden.astype(np.float64)
    pca = aligned_pca(states)
    noisy = pca + np.random.default_rng(0).normal(0, 0.5, pca.shape)  # a second layout
    k = token_k(states.shape[1])
    start = cpu_seconds()
    apart = [(trustworthiness(states, p, k), distance_correlation(states, p)) for p in (pca, noisy)]
    cpu_apart = cpu_seconds() - start
    start = cpu_seconds()
    together = list(
        zip(
            trustworthiness_of(states, [pca, noisy], k),
            distance_correlations(states, [pca, noisy]),
            strict=True,
        )
    )
    cpu_together = cpu_seconds() - start
    same = all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(apart, together, strict=True)
    )
    print(
        f"{states.shape[1]} tokens x {len(states)} layers, 2 layouts: one call each "
        f"{cpu_apart:.1f} s CPU, together {cpu_together:.1f} s CPU, ratio "
        f"{cpu_apart / max(cpu_together, 1e-9):.2f}; identical figures: {same}"
    )


def run_long(pipeline: Pipeline) -> None:
    text, prompt_b = long_pair(pipeline)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu = time.perf_counter(), cpu_seconds()
    diff = pipeline.diff(text, prompt_b, timings := {})
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"1000-token pair: {len(diff.a.tokens)}/{len(diff.b.tokens)} tokens, {wall:.1f} s wall, "
        f"{cpu:.1f} s CPU (user+sys), "
        f"peak RSS {peak:.0f} MiB (after loading {before:.0f} MiB), load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; prefix displacement "
        f"{prefix_displacement(diff):.1e}; B trust {diff.b.token_trust[0].mean():.3f} "
        f"(joint PCA-3 {diff.joint_trust[1].mean():.3f})"
    )
    print("stages (wall s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--long", action="store_true", help="only the 1000-token pair")
    parser.add_argument("--figures", action="store_true", help="figures apart vs together")
    args = parser.parse_args()
    pipeline = Pipeline()
    if args.long:
        run_long(pipeline)
    elif args.figures:
        run_figures(pipeline)
    else:
        run_pairs(pipeline)


if __name__ == "__main__":
    main()
