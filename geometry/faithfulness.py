"""How far to trust a picture: end to end (hidden states -> 3D token places, beside a PCA-3
baseline) and per stage (cloud -> 3D trustworthiness, continuity, layer-to-layer disparity)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.linalg
import torch
from scipy.spatial import procrustes
from scipy.spatial.distance import pdist

from layerscan.geometry.neighbors import nearest_neighbors, pairwise_distances
from layerscan.geometry.scan_file import token_centroids


class Faithfulness(NamedTuple):
    """Per-layer figures of one set of layouts."""

    trustworthiness: np.ndarray
    """(n_layers,) float32: 1 = every 3D neighbour is a true cloud neighbour."""
    continuity: np.ndarray
    """(n_layers,) float32: 1 = every cloud neighbour stays a 3D neighbour."""
    disparity: np.ndarray
    """(n_layers,) float32 Procrustes disparity to the previous layer (0 at layer 0)."""


def trustworthiness(
    original: np.ndarray,
    embedded: np.ndarray,
    k: int = 10,
    embedded_neighbors: np.ndarray | None = None,
) -> np.ndarray:
    """`sklearn.manifold.trustworthiness` of every layer, batched in torch.

    Gives sklearn's numbers (tests check this) at a fraction of its time: instead of
    argsorting the full distance matrix, each embedded neighbour's rank in the original space
    is counted directly. Only exactly tied distances may rank differently.

    Args:
        original: (n_layers, n_points, d) or (n_points, d).
        embedded: (n_layers, n_points, e) or (n_points, e).
        k: neighbourhood size; must be < n_points / 2 (layers with fewer points give 1).
        embedded_neighbors: optional (n_layers, n_points, >= k) kNN indices of `embedded`,
            nearest first, when they are already known.

    Returns:
        (n_layers,) float32, or a float for 2-D inputs.
    """
    single = np.ndim(original) == 2
    if single:
        original, embedded = np.asarray(original)[None], np.asarray(embedded)[None]
    neighbors = None if embedded_neighbors is None else [embedded_neighbors]
    (result,) = trustworthiness_of(original, [embedded], k, neighbors)
    return float(result[0]) if single else result


def trustworthiness_of(
    original: np.ndarray,
    embeddings: list[np.ndarray],
    k: int = 10,
    embedded_neighbors: list[np.ndarray] | None = None,
) -> list[np.ndarray]:
    """`trustworthiness` of several embeddings of the same points: each layer's original
    distances are computed and sorted once for all of them.

    Args:
        original: (n_layers, n_points, d).
        embeddings: each (n_layers, n_points, e).
        embedded_neighbors: optional kNN indices of each embedding (see `trustworthiness`).

    Returns:
        (n_layers,) float32 per embedding.
    """
    x = torch.as_tensor(np.asarray(original, np.float32))
    n_layers, n = x.shape[:2]
    if k >= n / 2:
        return [np.ones(n_layers, np.float32) for _ in embeddings]
    known = embedded_neighbors or [None] * len(embeddings)
    emb_nbrs = [
        nearest_neighbors(torch.as_tensor(np.asarray(e, np.float32)), k).indices.numpy()
        if nbrs is None
        else np.asarray(nbrs, np.int64).reshape(n_layers, n, -1)[..., :k]
        for e, nbrs in zip(embeddings, known, strict=True)
    ]  # each (n_layers, n, k)
    penalty = np.zeros((len(embeddings), n_layers))
    for layer in range(n_layers):
        d = pairwise_distances(x[layer]).fill_diagonal_(float("inf"))  # (n, n)
        # 1-based rank of each embedded neighbour among the original distances: sort each
        # row once, then binary-search the k thresholds of every row at once
        ordered = torch.from_numpy(np.sort(d.numpy(), axis=1))  # (n, n)
        for i, nbrs in enumerate(emb_nbrs):
            thr = torch.gather(d, 1, torch.from_numpy(nbrs[layer]))  # (n, k)
            ranks = torch.searchsorted(ordered, thr).numpy() + 1 - k  # (n, k)
            penalty[i, layer] = ranks[ranks > 0].sum()
    t = 1.0 - penalty * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))
    return list(t.astype(np.float32))


def continuity(
    original: np.ndarray,
    embedded: np.ndarray,
    k: int = 10,
    original_neighbors: np.ndarray | None = None,
) -> np.ndarray:
    """Trustworthiness with the roles swapped: do cloud neighbours stay neighbours in 3D?"""
    return trustworthiness(embedded, original, k, original_neighbors)


def procrustes_disparity(layouts: np.ndarray) -> np.ndarray:
    """(n_layers, n_points, 3) → (n_layers,) scipy Procrustes disparity to the previous layer.

    0 at layer 0 and wherever a layout is degenerate (all points at one place).
    """
    out = np.zeros(len(layouts), np.float32)
    for layer in range(1, len(layouts)):
        try:
            out[layer] = procrustes(
                layouts[layer - 1].astype(np.float64), layouts[layer].astype(np.float64)
            )[2]
        except ValueError:  # fewer than 2 distinct points
            out[layer] = 0.0
    return out


def faithfulness(
    clouds: np.ndarray, layouts: np.ndarray, k: int = 10, cloud_neighbors: np.ndarray | None = None
) -> Faithfulness:
    """All three per-layer figures of `layouts` (n_layers, n_points, 3) vs `clouds`.

    Args:
        cloud_neighbors: optional (n_layers, n_points, >= k) kNN indices of the clouds.
    """
    return Faithfulness(
        trustworthiness(clouds, layouts, k),
        continuity(clouds, layouts, k, cloud_neighbors),
        procrustes_disparity(layouts),
    )


class TokenFigures(NamedTuple):
    """End-to-end figures of one step: the tokens' 3D places against their hidden states."""

    token_trust: np.ndarray
    """(n_layers,) float32 trustworthiness of token places vs hidden states (k = token_k)."""
    distance_correlation: np.ndarray
    """(n_layers,) float32 Spearman correlation of 3D vs hidden pairwise token distances."""
    token_spread: np.ndarray
    """(n_layers,) float32 mean particle distance from its token's centroid / layout radius."""
    baseline_trust: np.ndarray
    """(n_layers,) float32 token trust of PCA-3 of the token states."""
    baseline_correlation: np.ndarray
    """(n_layers,) float32 distance correlation of PCA-3 of the token states."""
    token_continuity: np.ndarray
    """(n_layers,) float32 continuity of the token places: do hidden-state neighbours stay
    3D neighbours? (trustworthiness with the roles swapped, same k)."""
    baseline_continuity: np.ndarray
    """(n_layers,) float32 continuity of PCA-3 of the token states."""
    chance_trust: np.ndarray
    """(n_layers,) float32 expected token trust (and continuity) of a random placement."""


def token_k(n_tokens: int) -> int:
    """Neighbourhood size of token trust: 5, or the largest k < n_tokens / 2 for short prompts
    (sklearn's trustworthiness needs k < n / 2; below 3 tokens trust is 1 by definition)."""
    return max(1, min(5, (n_tokens - 1) // 2))


def chance_trust(n_points: int, k: int) -> float:
    """Expected trustworthiness (and continuity) of a random placement of n points.

    A random layout's k neighbours of a point are k random others, whose ranks in the
    original space are uniform over 1..n-1, so sklearn's penalty has the closed-form mean
    n k (n-k-1)(n-k) / (2(n-1)), whatever the original geometry (distinct distances). About
    0.5 for long prompts, a little more for short ones; 1 where trust is 1 by definition.
    Tests check it against the mean of seeded random draws through sklearn.
    """
    n = n_points
    if n < 3 or k >= n / 2:
        return 1.0
    return 1.0 - (n - k - 1) * (n - k) / ((n - 1) * (2 * n - 3 * k - 1))


def token_places(positions: np.ndarray, particle_tokens: np.ndarray, n_tokens: int) -> np.ndarray:
    """Each token's place: the centroid of its particles.

    Args:
        positions: (n_layers, n_particles, 3) layouts of one step.
        particle_tokens: (n_layers, n_particles) int token of each particle.
        n_tokens: tokens of the step (every token owns at least one particle).

    Returns:
        (n_layers, n_tokens, 3) float64.
    """
    return np.stack(
        [
            token_centroids(p, o, n_tokens)[0]
            for p, o in zip(positions, particle_tokens, strict=True)
        ]
    )


def pca_baseline(states: np.ndarray, n_components: int = 3) -> np.ndarray:
    """(n_layers, n_tokens, d) → (n_layers, n_tokens, n_components) PCA of each layer's tokens.

    Only the top components are computed (LAPACK's subset eigensolver), from the smaller of
    the (n_tokens, n_tokens) Gram and the (d, d) covariance matrix.
    """
    n_layers, n_tokens, d = states.shape
    m = min(n_components, n_tokens, d)
    out = np.zeros((n_layers, n_tokens, n_components))
    for layer, x in enumerate(states.astype(np.float64)):
        x = x - x.mean(0)
        gram = n_tokens <= d
        values, vectors = scipy.linalg.eigh(
            x @ x.T if gram else x.T @ x,
            subset_by_index=(len(x if gram else x.T) - m, len(x if gram else x.T) - 1),
        )
        values, vectors = values[::-1], vectors[:, ::-1]  # largest first
        top = vectors * np.sqrt(values.clip(0)) if gram else x @ vectors  # (n_tokens, m)
        signs = np.where(top[np.abs(top).argmax(0), np.arange(m)] < 0, -1.0, 1.0)
        out[layer, :, :m] = top * signs  # deterministic signs
    return out


CORRELATION_PAIRS = 100_000
"""Most token pairs a distance correlation ranks; longer prompts use a fixed random sample of
this many pairs (the same in every layer and for every layout: standard error about 0.003)."""


def distance_correlation(original: np.ndarray, embedded: np.ndarray) -> np.ndarray:
    """(n_layers,) Spearman correlation of the pairwise distances of each layer's points.

    Every pair up to CORRELATION_PAIRS pairs (about 450 tokens), a fixed sample beyond.
    """
    return distance_correlations(original, [embedded])[0]


def distance_correlations(original: np.ndarray, embeddings: list[np.ndarray]) -> list[np.ndarray]:
    """`distance_correlation` of several embeddings of the same points: each layer's original
    distances (and their ranks) are computed once for all of them."""
    n_layers, n = original.shape[:2]
    out = np.ones((len(embeddings), n_layers), np.float32)
    if n < 3:  # one pair (or none): nothing to rank
        return list(out)
    if n * (n - 1) // 2 <= CORRELATION_PAIRS:

        def distances(points: np.ndarray) -> np.ndarray:
            return pdist(points.astype(np.float64))
    else:
        first, second = (torch.from_numpy(i) for i in sampled_pairs(n, CORRELATION_PAIRS))

        def distances(points: np.ndarray) -> np.ndarray:
            points = torch.as_tensor(points, dtype=torch.float64)
            if points.shape[-1] <= 3:  # a picture: the sampled pairs alone are cheaper
                return (points[first] - points[second]).norm(dim=-1).numpy()
            matrix = pairwise_distances(points)  # hidden states: one matrix product
            return matrix[first, second].numpy()

    for layer, x in enumerate(original):
        dx = distances(x)
        ranks_x = mean_ranks(dx) if np.ptp(dx) > 0 else None
        for i, embedded in enumerate(embeddings):
            dy = distances(embedded[layer])
            if ranks_x is None or np.ptp(dy) == 0:
                out[i, layer] = 0.0
                continue
            out[i, layer] = np.corrcoef(ranks_x, mean_ranks(dy))[0, 1]
    return list(out)


def sampled_pairs(n: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` random distinct-point pairs (i, j) of n points, fixed by a seed."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, n, count)
    second = rng.integers(0, n - 1, count)
    return first, second + (second >= first)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two (n,) samples: Pearson's of their ranks, ties given
    their mean rank (scipy.stats.spearmanr's figure, without importing scipy.stats: 0.2 s)."""
    return float(np.corrcoef(mean_ranks(x), mean_ranks(y))[0, 1])


def mean_ranks(values: np.ndarray) -> np.ndarray:
    """(n,) → (n,) ranks 1..n of the values, equal values sharing their mean rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of each distinct value's last copy
    return (last - (counts - 1) / 2)[inverse.reshape(-1)]


def token_figures(
    states: np.ndarray,
    positions: np.ndarray,
    particle_tokens: np.ndarray,
    baseline: np.ndarray | None = None,
) -> TokenFigures:
    """End-to-end faithfulness of one step's picture, with the PCA-3 baseline beside it.

    Args:
        states: (n_layers, n_tokens, d_model) hidden states as captured (same normalization).
        positions: (n_layers, n_particles, 3) the picture.
        particle_tokens: (n_layers, n_particles) token of each particle.
        baseline: `pca_baseline(states)` where already computed (the token layout's start).
    """
    n_tokens = states.shape[1]
    places = token_places(positions, particle_tokens, n_tokens)  # (n_layers, n_tokens, 3)
    baseline = pca_baseline(states) if baseline is None else baseline
    k = token_k(n_tokens)
    if n_tokens < 3:
        trust = base_trust = cont = base_cont = np.ones(len(states), np.float32)
    else:
        trust, base_trust = trustworthiness_of(states, [places, baseline], k)
        states_nn = nearest_neighbors(torch.as_tensor(np.asarray(states, np.float32)), k).indices
        cont = continuity(states, places, k, states_nn.numpy())
        base_cont = continuity(states, baseline, k, states_nn.numpy())
    correlation, base_correlation = distance_correlations(states, [places, baseline])
    own = places[np.arange(len(places))[:, None], particle_tokens]  # (n_layers, n_particles, 3)
    offset = np.linalg.norm(positions - own, axis=-1).mean(-1)  # (n_layers,)
    radius = np.linalg.norm(positions - positions.mean(1, keepdims=True), axis=-1).mean(-1)
    spread = np.where(radius > 0, offset / np.maximum(radius, 1e-12), 0.0)
    return TokenFigures(
        np.asarray(trust, np.float32),
        correlation,
        spread.astype(np.float32),
        np.asarray(base_trust, np.float32),
        base_correlation,
        np.asarray(cont, np.float32),
        np.asarray(base_cont, np.float32),
        np.full(len(states), chance_trust(n_tokens, k), np.float32),
    )
