"""A diff in words: which tokens changed, which layer each later token diverges at, and how
faithful the one shared space is beside its fair baseline (the diff command prints these)."""

from __future__ import annotations

import numpy as np

from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.diff_tokens import changes, first_change, first_over
from layerscan.geometry.scan_file import diverges

MAX_LISTED = 12
"""Following tokens listed one by one; the rest are summed up in one line."""


def show(token: str) -> str:
    """A token as the user reads it: quoted, with its leading space visible."""
    return repr(token.replace("\n", "\\n"))


def changed_lines(diff: DiffScan) -> list[str]:
    """One line per change: the tokens, and the layer from which B's new tokens are farther
    than the threshold from every A token."""
    first_b = first_over(diff.token_divergence_b, diff.threshold)
    lines = []
    for run_a, run_b in changes(diff.aligned_tokens, len(diff.a.tokens), len(diff.b.tokens)):
        text_a = show("".join(diff.a.tokens[i] for i in run_a))
        text_b = show("".join(diff.b.tokens[j] for j in run_b))
        if not run_b:
            lines.append(f"deleted  A[{run_a.start}:{run_a.stop}] {text_a}")
            continue
        kind = f"inserted B[{run_b.start}:{run_b.stop}] {text_b}"
        if run_a:
            kind = f"changed  A[{run_a.start}:{run_a.stop}] {text_a} -> " + kind[9:]
        layers = [int(first_b[j]) for j in run_b if first_b[j] >= 0]
        when = f"layer {min(layers)}" if layers else "no layer"
        lines.append(f"{kind}: farther than {diff.threshold:g} from every A token from {when}")
    return lines


def following_lines(diff: DiffScan) -> list[str]:
    """The aligned tokens after the first change, each with the first layer where its
    divergence exceeds the threshold (the tokens the change drags along)."""
    pairs = np.asarray(diff.aligned_tokens)
    _, start_b = first_change(pairs, len(diff.a.tokens), len(diff.b.tokens))
    after = pairs[pairs[:, 1] >= start_b]  # (n_after, 2)
    if not len(after):
        return []
    values = diff.token_divergence_b[:, after[:, 1]]  # (n_layers+1, n_after)
    first = first_over(values, diff.threshold)
    peak = values.max(0)
    lines = [
        f"B[{j}] {show(diff.b.tokens[j])}: "
        + (f"> {diff.threshold:g} from layer {f}" if f >= 0 else "never")
        + f", peak {p:.2f}"
        for (_, j), f, p in zip(after[:MAX_LISTED], first, peak, strict=False)
    ]
    if len(after) > MAX_LISTED:
        rest = first[MAX_LISTED:]
        hit = rest[rest >= 0]
        lines.append(
            f"... {len(rest)} more: {len(hit)} pass {diff.threshold:g}"
            + (
                f", the earliest at layer {hit.min()}, the median at {int(np.median(hit))}"
                if len(hit)
                else ""
            )
        )
    return lines


def faithfulness_lines(diff: DiffScan) -> list[str]:
    """Each side's token trust and distance correlation in the shared space beside the joint
    PCA-3 baseline (means over layers), and the layers drawn from that baseline."""
    if diff.joint_trust is None:
        return []
    lines = []
    for side, scan, trust, corr in zip(
        "AB", (diff.a, diff.b), diff.joint_trust, diff.joint_correlation, strict=True
    ):
        lines.append(
            f"{side}: token trust {scan.token_trust[0].mean():.3f}"
            f" (joint PCA-3 {trust.mean():.3f}),"
            f" distance correlation {scan.distance_correlation[0].mean():.3f}"
            f" (joint PCA-3 {corr.mean():.3f})"
        )
    fallback = np.flatnonzero(diff.fallback_layers) if diff.fallback_layers is not None else []
    if len(fallback):
        lines.append(
            f"{len(fallback)} of {len(diff.divergence)} layers drawn from the joint PCA-3 "
            f"(the layout did not beat it there): {', '.join(map(str, fallback))}"
        )
    return lines


def summary(diff: DiffScan) -> list[str]:
    """Every line the diff command prints after the diff is made."""
    what = diff.b.settings.get("compared", "prompts")
    n_a, n_b = len(diff.a.tokens), len(diff.b.tokens)
    changed = any(diff.changed)
    if not diverges(diff.divergence) and not changed:
        return [f"the {what} do not diverge (every aligned token's states are the same)"]
    curve = diff.divergence
    head = (
        f"divergence peaks at {diff.a.layer_names[diff.peak_layer]} ({curve[diff.peak_layer]:.3f})"
        if diverges(curve)
        else "the aligned tokens do not diverge"
    )
    lines = [
        f"{head}: mean |h_A - h_B| / |h| over the "
        f"{len(diff.aligned_tokens)} aligned tokens of {n_a} (A) and {n_b} (B)"
    ]
    lines += changed_lines(diff)
    follow = following_lines(diff)
    if follow:
        lines.append(f"tokens after the change, first layer over {diff.threshold:g}:")
        lines += ["  " + line for line in follow]
    if diff.cka is not None and what == "models":
        worst = int(np.argmin(diff.cka))
        lines.append(
            f"linear CKA of the two models' token states: lowest {diff.cka[worst]:.3f} "
            f"at layer {worst}"
        )
    return lines + faithfulness_lines(diff)
