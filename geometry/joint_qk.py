"""AttentionViz's joint query-key view: one head's queries and keys in one 3D space, with the
figure that says how far to trust closeness there (and the same for PCA-3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.geometry.faithfulness import spearman

MIN_KEYS = 3
"""A query enters the correlation only with at least this many keys to rank."""


def normalize_qk(queries: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AttentionViz's normalisation, which leaves every softmax row unchanged.

    Keys move so their mean is the queries' mean (each query's logits all shift by the same
    q·(mean q - mean k), which the softmax ignores); then queries are scaled by a and keys by
    1/a (q·k unchanged) so that both have the same mean norm.

    Args:
        queries, keys: (..., n_tokens, d_head).

    Returns:
        The normalised queries and keys, float64, same shapes.
    """
    q = np.asarray(queries, np.float64)
    k = np.asarray(keys, np.float64)
    k = k - k.mean(-2, keepdims=True) + q.mean(-2, keepdims=True)
    q_norm = np.linalg.norm(q, axis=-1).mean(-1, keepdims=True)[..., None]  # (..., 1, 1)
    k_norm = np.linalg.norm(k, axis=-1).mean(-1, keepdims=True)[..., None]
    a = np.sqrt(k_norm / np.maximum(q_norm, 1e-12))
    return q * a, k / np.maximum(a, 1e-12)


def softmax_weights(
    queries: np.ndarray, keys: np.ndarray, scaling: float, causal: bool
) -> np.ndarray:
    """softmax(scaling · Q Kᵀ) over keys (..., n_tokens, n_tokens), under the causal mask."""
    logits = scaling * np.asarray(queries, np.float64) @ np.swapaxes(keys, -1, -2)
    if causal:
        n = logits.shape[-1]
        logits = np.where(np.triu(np.ones((n, n), bool), 1), -np.inf, logits)
    logits = logits - logits.max(-1, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(-1, keepdims=True)


def closeness_correlation(
    weights: np.ndarray, q3: np.ndarray, k3: np.ndarray, causal: bool
) -> float:
    """Mean over queries of Spearman's ρ between a query's attention weights and its distances
    to the keys in 3D: -1 means the keys it attends to most are the nearest (negative is good).

    Args:
        weights: (n_tokens, n_tokens) one head's attention.
        q3, k3: (n_tokens, 3) its queries' and keys' places.
    """
    rhos = []
    for i in range(len(weights)):
        n_keys = i + 1 if causal else len(weights)
        if n_keys < MIN_KEYS:
            continue
        distances = np.linalg.norm(k3[:n_keys] - q3[i], axis=-1)
        w = weights[i, :n_keys]
        if np.ptp(w) > 0 and np.ptp(distances) > 0:
            rhos.append(spearman(w, distances))
    return float(np.mean(rhos)) if rhos else float("nan")


@dataclass
class JointView:
    """Joint query-key layouts of some heads at some blocks, and how faithful they are."""

    tokens: list[str]
    """(n_tokens,) the prompt's tokens."""
    blocks: list[int]
    """(n_blocks,) 1-based transformer blocks shown (an MP4 plays them in order)."""
    heads: list[int]
    """(n_heads,) heads shown (small multiples when more than one)."""
    positions: np.ndarray
    """(n_blocks, n_heads, 2 n_tokens, 3) float32: queries first, then keys; aligned through
    the blocks."""
    weights: np.ndarray
    """(n_blocks, n_heads, n_tokens, n_tokens) float32 attention."""
    correlation: np.ndarray
    """(n_blocks, n_heads) float32 `closeness_correlation` of the 3D layout."""
    baseline: np.ndarray
    """(n_blocks, n_heads) float32 the same for PCA-3 of the normalised vectors."""
    model_id: str = ""
    query: int = -1
    """The token whose lines to its top keys are drawn."""

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)


def joint_view(
    record,
    tokens: list[str],
    blocks: list[int],
    heads: list[int],
    causal: bool = True,
    model_id: str = "",
    query: int | None = None,
    n_iter: int = 200,
) -> JointView:
    """Lay out each head's normalised queries and keys at each block (aligned through blocks).

    Args:
        record: an AttentionRecord (capture with --attention).
        blocks: 1-based blocks; heads: head indices.
        query: the selected token (default the last).
        n_iter: TokenLayout's steps (0: the aligned PCA start).
    """
    from layerscan.geometry.token_layout import TokenLayout, aligned_pca

    n_layers, n_heads, n = record.n_layers, record.n_heads, record.n_tokens
    if any(not 1 <= b <= n_layers for b in blocks):
        raise LayerscanError(f"--layer: the model has blocks 1..{n_layers}")
    if any(not 0 <= h < n_heads for h in heads):
        raise LayerscanError(f"--head: the model has heads 0..{n_heads - 1} (or 'all')")
    if n < 2:
        raise LayerscanError("the joint view needs a prompt of at least 2 tokens")
    query = n - 1 if query is None else query
    if not -n <= query < n:
        raise LayerscanError(f"--query {query}: the prompt has tokens 0..{n - 1}")
    index = [b - 1 for b in blocks]
    q = record.queries[index][:, heads].astype(np.float64)  # (n_blocks, n_heads, n, d_head)
    k = record.keys[index][:, heads].astype(np.float64)
    qn, kn = normalize_qk(q, k)
    joint = np.concatenate([qn, kn], axis=2)  # (n_blocks, n_heads, 2n, d_head)
    scaling = record.scaling[index][:, None, None, None]
    weights = (
        record.weights[index][:, heads].astype(np.float32)
        if record.weights is not None
        else softmax_weights(q * scaling, k, 1.0, causal).astype(np.float32)
    )
    positions = np.zeros((*joint.shape[:3], 3), np.float32)
    baseline_positions = np.zeros_like(positions)
    if len(blocks) == 1:  # the heads of one block in one fit, not pulled towards each other
        states = joint[0]  # (n_heads, 2n, d_head)
        positions[0] = TokenLayout(n_iter=n_iter, alignment=0.0).fit(states).embedding_
        baseline_positions[0] = aligned_pca(states)
    else:
        for h in range(len(heads)):  # each head aligned through the blocks
            states = joint[:, h]  # (n_blocks, 2n, d_head)
            positions[:, h] = TokenLayout(n_iter=n_iter).fit(states).embedding_
            baseline_positions[:, h] = aligned_pca(states)
    figures = [
        [
            closeness_correlation(weights[b, h], p[b, h, :n], p[b, h, n:], causal)
            for h in range(len(heads))
        ]
        for p in (positions, baseline_positions)
        for b in range(len(blocks))
    ]
    figures = np.asarray(figures, np.float32).reshape(2, len(blocks), len(heads))
    return JointView(
        tokens=list(tokens),
        blocks=list(blocks),
        heads=list(heads),
        positions=positions,
        weights=weights,
        correlation=figures[0],
        baseline=figures[1],
        model_id=model_id,
        query=query % n,
    )
