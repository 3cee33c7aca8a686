"""What a diff record says about its tokens, in numpy alone (the scene reads it): each token's
status from the aligned pairs, where the prompts part, and when each token diverges."""

from __future__ import annotations

import numpy as np

DIVERGENCE_THRESHOLD = 0.1
"""A token has diverged at a layer once its relative hidden-state distance to its counterpart,
|h_a - h_b| / mean(|h_a|, |h_b|), exceeds this (a tenth of its state's length)."""

ALIGNED, SUBSTITUTED, ONLY_HERE = 0, 1, 2
"""Status of a token in its prompt: aligned with the other prompt's, substituted, or deleted
(A) / inserted (B)."""


def status_of(aligned: np.ndarray, n_a: int, n_b: int) -> tuple[np.ndarray, np.ndarray]:
    """Each token's status from the aligned pairs.

    An unaligned run of A facing an unaligned run of B between the same two aligned pairs is a
    substitution; a run facing nothing is a deletion (A) or an insertion (B).

    Args:
        aligned: (n_pairs, 2) int token index in A and in B of each aligned pair, increasing.

    Returns:
        (n_a,) and (n_b,) int8 statuses.
    """
    aligned = np.asarray(aligned, np.int64).reshape(-1, 2)
    status_a = np.full(n_a, ONLY_HERE, np.int8)
    status_b = np.full(n_b, ONLY_HERE, np.int8)
    status_a[aligned[:, 0]] = ALIGNED
    status_b[aligned[:, 1]] = ALIGNED
    bounds = [(-1, -1), *(tuple(p) for p in aligned), (n_a, n_b)]
    for (i0, j0), (i1, j1) in zip(bounds[:-1], bounds[1:], strict=True):
        if i1 - i0 > 1 and j1 - j0 > 1:
            status_a[i0 + 1 : i1] = SUBSTITUTED
            status_b[j0 + 1 : j1] = SUBSTITUTED
    return status_a, status_b


def first_over(values: np.ndarray, threshold: float = DIVERGENCE_THRESHOLD) -> np.ndarray:
    """(n_layers+1, n_tokens) → (n_tokens,) int first layer whose value exceeds `threshold`,
    -1 for a token that never does."""
    over = np.asarray(values) > threshold
    return np.where(over.any(0), over.argmax(0), -1)


def first_change(aligned: np.ndarray, n_a: int, n_b: int) -> tuple[int, int]:
    """(A index, B index) of the first token where the prompts part (each prompt's length when
    one is a prefix of the other, or both when they are the same)."""
    aligned = np.asarray(aligned, np.int64).reshape(-1, 2)
    run = 0
    while run < len(aligned) and aligned[run, 0] == run and aligned[run, 1] == run:
        run += 1
    return min(run, n_a), min(run, n_b)


def changes(aligned: np.ndarray, n_a: int, n_b: int) -> list[tuple[range, range]]:
    """Every run of unaligned tokens: (A positions, B positions) between two aligned pairs;
    an empty A range is an insertion, an empty B range a deletion."""
    pairs = np.asarray(aligned, np.int64).reshape(-1, 2)
    bounds = [(-1, -1), *(tuple(p) for p in pairs), (n_a, n_b)]
    return [
        (range(i0 + 1, i1), range(j0 + 1, j1))
        for (i0, j0), (i1, j1) in zip(bounds[:-1], bounds[1:], strict=True)
        if i1 - i0 > 1 or j1 - j0 > 1
    ]


def check_alignment(aligned: np.ndarray, n_a: int, n_b: int) -> str | None:
    """Why `aligned` is not a valid alignment of n_a and n_b tokens, or None when it is."""
    aligned = np.asarray(aligned)
    if aligned.ndim != 2 or aligned.shape[1] != 2 or not np.issubdtype(aligned.dtype, np.integer):
        return f"aligned tokens must be int (n_pairs, 2), got {aligned.dtype} {aligned.shape}"
    if len(aligned) and (
        aligned.min() < 0 or aligned[:, 0].max() >= n_a or aligned[:, 1].max() >= n_b
    ):
        return "aligned tokens point past the prompts' tokens"
    if len(aligned) > 1 and (np.diff(aligned, axis=0) <= 0).any():
        return "aligned tokens are not strictly increasing"
    return None
