"""Where two prompts part: their tokens aligned, and the hidden-state divergence of every token.

The tokens are aligned by the longest matching blocks of token ids (`difflib.SequenceMatcher`,
Ratcliff-Obershelp, without its junk heuristic): aligned pairs are the same token in both
prompts, the rest are substituted, deleted (only in A) or inserted (only in B). Every measure
of a diff is then taken on the model's own hidden states, pair by pair, whatever the lengths.
"""

from __future__ import annotations

import difflib
from typing import NamedTuple

import numpy as np
import torch

from layerscan.geometry.diff_tokens import ALIGNED, ONLY_HERE, SUBSTITUTED

SAME_STATE_TOLERANCE = 1e-5
"""Aligned tokens whose relative distance stays at or below this at every layer hold the same
state (a shared causal prefix, up to floating-point noise): they get one place in the picture."""


class Alignment(NamedTuple):
    """The two prompts' tokens matched up."""

    aligned: np.ndarray
    """(n_pairs, 2) int32 token index in A and in B of each aligned pair, in order."""
    status_a: np.ndarray
    """(n_tokens_a,) int8 ALIGNED, SUBSTITUTED or ONLY_HERE (deleted) per A token."""
    status_b: np.ndarray
    """(n_tokens_b,) int8 ALIGNED, SUBSTITUTED or ONLY_HERE (inserted) per B token."""


def align_tokens(ids_a: list[int], ids_b: list[int]) -> Alignment:
    """Align two token-id sequences by their longest matching blocks.

    Args:
        ids_a, ids_b: the two prompts' token ids.

    Returns:
        The aligned pairs and every token's status.
    """
    matcher = difflib.SequenceMatcher(None, list(ids_a), list(ids_b), autojunk=False)
    pairs: list[tuple[int, int]] = []
    status_a = np.full(len(ids_a), ALIGNED, np.int8)
    status_b = np.full(len(ids_b), ALIGNED, np.int8)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            pairs += zip(range(i1, i2), range(j1, j2), strict=True)
        elif tag == "replace":
            status_a[i1:i2] = SUBSTITUTED
            status_b[j1:j2] = SUBSTITUTED
        elif tag == "delete":
            status_a[i1:i2] = ONLY_HERE
        else:  # insert
            status_b[j1:j2] = ONLY_HERE
    aligned = np.array(pairs, np.int32).reshape(-1, 2)
    return Alignment(aligned, status_a, status_b)


def relative_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a - b| / mean(|a|, |b|) over the last axis (0 where both are 0), in float64."""
    a, b = a.double(), b.double()
    scale = (a.norm(dim=-1) + b.norm(dim=-1)) / 2
    return (a - b).norm(dim=-1) / scale.clamp_min(1e-300)


class TokenDivergence(NamedTuple):
    """How far each token's hidden state is from its counterpart in the other prompt."""

    divergence: np.ndarray
    """(n_layers+1,) float32 mean over aligned pairs of the relative distance (the headline);
    over every token's nearest counterpart when nothing aligns."""
    token_a: np.ndarray
    """(n_layers+1, n_tokens_a) float32 each A token's relative distance to its aligned B
    token, or, unaligned, to its nearest B token of that layer."""
    token_b: np.ndarray
    """(n_layers+1, n_tokens_b) float32 the same for B's tokens."""


def token_divergence(hidden_a: np.ndarray, hidden_b: np.ndarray, aligned: np.ndarray):
    """Relative hidden-state distance of every token to its counterpart, as captured.

    Args:
        hidden_a: (n_layers+1, n_tokens_a, d_model); hidden_b: (n_layers+1, n_tokens_b, d_model).
        aligned: (n_pairs, 2) aligned token pairs.

    Returns:
        A TokenDivergence; identical states give exactly 0.
    """
    a, b = torch.from_numpy(np.asarray(hidden_a)), torch.from_numpy(np.asarray(hidden_b))
    ia, ib = (
        torch.from_numpy(aligned[:, 0].astype(np.int64)),
        torch.from_numpy(aligned[:, 1].astype(np.int64)),
    )
    pair = relative_distance(a[:, ia], b[:, ib])  # (n_layers+1, n_pairs)
    out = []
    for mine, theirs, index in ((a, b, ia), (b, a, ib)):
        values = torch.zeros(mine.shape[:2], dtype=torch.float64)  # (n_layers+1, n_tokens)
        values[:, index] = pair
        lone = np.setdiff1d(np.arange(mine.shape[1]), index.numpy())
        if len(lone):
            values[:, lone] = _nearest_relative(mine[:, lone], theirs)
        out.append(values)
    if len(aligned):
        curve = pair.mean(-1)
    else:
        curve = torch.cat(out, 1).mean(-1)
    return TokenDivergence(*(t.float().numpy() for t in (curve, *out)))


def _nearest_relative(points: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(n_layers+1, m, d), (n_layers+1, n, d) → (n_layers+1, m) smallest relative distance of
    each point to any of the others (one layer at a time, so memory stays m x n)."""
    out = torch.empty(points.shape[:2], dtype=torch.float64)
    for layer, (p, o) in enumerate(zip(points.double(), others.double(), strict=True)):
        scale = (p.norm(dim=-1)[:, None] + o.norm(dim=-1)[None]) / 2  # (m, n)
        out[layer] = (torch.cdist(p, o) / scale.clamp_min(1e-300)).amin(-1)
    return out


def same_states(hidden_a: np.ndarray, hidden_b: np.ndarray, aligned: np.ndarray) -> np.ndarray:
    """(n_pairs,) bool: aligned pairs whose states match at every layer (see
    SAME_STATE_TOLERANCE), i.e. one token state shared by both prompts."""
    if not len(aligned):
        return np.zeros(0, bool)
    a = torch.from_numpy(np.asarray(hidden_a)[:, aligned[:, 0]])
    b = torch.from_numpy(np.asarray(hidden_b)[:, aligned[:, 1]])
    return (relative_distance(a, b) <= SAME_STATE_TOLERANCE).all(0).numpy()


def shared_states(
    hidden_a: np.ndarray,
    hidden_b: np.ndarray,
    ids_a: np.ndarray,
    ids_b: np.ndarray,
    aligned: np.ndarray,
) -> np.ndarray:
    """(n_shared, 2) token pairs (A index, B index) holding one state: the aligned pairs whose
    states match (`same_states`), and the tokens of the common prefix whose states match too.

    The alignment may pair a prefix token with a later copy of it (a space, a bracket), but in
    a causal model the prefix token at the same position holds exactly its state in both
    prompts: one state, one place. Each index appears at most once.
    """
    pairs = [tuple(p) for p in np.asarray(aligned)[same_states(hidden_a, hidden_b, aligned)]]
    prefix = 0
    for a, b in zip(ids_a, ids_b, strict=False):
        if a != b:
            break
        prefix += 1
    if prefix:
        same = np.stack([np.arange(prefix)] * 2, 1)
        taken_a, taken_b = {a for a, _ in pairs}, {b for _, b in pairs}
        for a, b in same[same_states(hidden_a, hidden_b, same)]:
            if a not in taken_a and b not in taken_b:
                pairs.append((int(a), int(b)))
    return np.asarray(sorted(pairs), np.int64).reshape(-1, 2)


def linear_cka(states_a: np.ndarray, states_b: np.ndarray) -> np.ndarray:
    """Per-layer linear CKA (Kornblith et al. 2019) of paired token states.

    Args:
        states_a, states_b: (n_layers+1, n_pairs, d_model) states of the same tokens.

    Returns:
        (n_layers+1,) float32 in [0, 1]; 1 = the same geometry up to rotation and scale.
    """
    out = np.ones(len(states_a), np.float32)
    for layer, (x, y) in enumerate(zip(states_a, states_b, strict=True)):
        x = torch.from_numpy(np.asarray(x, np.float64))
        y = torch.from_numpy(np.asarray(y, np.float64))
        x, y = x - x.mean(0), y - y.mean(0)
        cross = (x.T @ y).square().sum()
        norm = (x.T @ x).norm() * (y.T @ y).norm()
        out[layer] = float(cross / norm) if norm > 0 else 1.0
    return out
