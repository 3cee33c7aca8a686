"""Two prompts in ONE 3D space: their distinct token states laid out together, measured against
the fair baseline (a joint PCA-3 of both prompts' token states) and never worse than it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy.linalg import orthogonal_procrustes

from layerscan.geometry.faithfulness import distance_correlations, token_k, trustworthiness_of
from layerscan.geometry.scan_file import diverges  # noqa: F401 - re-exported for callers
from layerscan.geometry.token_layout import TokenLayout, grouped_positions

LAYER_RADIUS = 5.0
"""Mean distance of a layer's token places from their centre in the shared space."""


class SharedSpace(NamedTuple):
    """Both prompts' token places in one space, and the joint baseline beside them."""

    places_a: np.ndarray
    """(n_layers+1, n_tokens_a, 3) float64 A's token places."""
    places_b: np.ndarray
    """(n_layers+1, n_tokens_b, 3) float64 B's; a token state shared with A has A's place."""
    joint_trust: np.ndarray
    """(2, n_layers+1) float32 token trust of A's and B's tokens in a joint PCA-3."""
    joint_correlation: np.ndarray
    """(2, n_layers+1) float32 distance correlation of A's and B's tokens in that PCA-3."""
    fallback: np.ndarray
    """(n_layers+1,) bool layers where the layout did not beat the joint PCA-3 on both sides,
    so the (aligned) joint PCA-3 is drawn instead."""


def distinct_tokens(
    n_a: int, n_b: int, shared_pairs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number the distinct token states of two prompts: A's tokens, then B's own.

    Args:
        shared_pairs: (n_shared, 2) aligned pairs (A index, B index) holding the same state.

    Returns:
        index_a (n_a,), index_b (n_b,): each token's distinct state; own_b: B tokens with a
        state of their own, in order.
    """
    index_b = np.full(n_b, -1, np.int64)
    index_b[shared_pairs[:, 1]] = shared_pairs[:, 0]
    own_b = np.flatnonzero(index_b < 0)
    index_b[own_b] = n_a + np.arange(len(own_b))
    return np.arange(n_a), index_b, own_b


def side_figures(
    states: np.ndarray, layouts: list[np.ndarray]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(token trust, distance correlation), each (n_layers+1,), of each layout of one prompt's
    tokens (the states' distances computed once for all).

    Args:
        states: (n_layers+1, n_tokens, d_model); layouts: each (n_layers+1, n_tokens, 3).
    """
    n = states.shape[1]
    trusts = (
        [np.ones(len(states), np.float32)] * len(layouts)
        if n < 3
        else trustworthiness_of(states, layouts, token_k(n))
    )
    correlations = distance_correlations(states, layouts)
    return [(np.asarray(t, np.float32), c) for t, c in zip(trusts, correlations, strict=True)]


TIE = 1e-3
"""A layer whose figure is within this of the joint PCA-3's is replaced by it: the stored
figures are measured again on float32 positions, where a float64 tie can fall a hair below."""


def shared_space(
    layout: TokenLayout, hidden_a: np.ndarray, hidden_b: np.ndarray, shared_pairs: np.ndarray
) -> SharedSpace:
    """Lay out both prompts' distinct token states together, never below the joint PCA-3.

    A token state shared by both prompts (`shared_pairs`) is ONE point of the layout, so it has
    exactly one place. Each layer where either prompt's token trust or distance correlation
    falls below that of a joint PCA-3 of the distinct states is replaced by that PCA layer,
    fitted onto the layout's layer by a similarity transform (which changes neither figure).

    Args:
        layout: the token layout estimator.
        hidden_a, hidden_b: (n_layers+1, n_tokens_a / n_tokens_b, d_model).
        shared_pairs: (n_shared, 2) aligned pairs with the same state.
    """
    n_a, n_b = hidden_a.shape[1], hidden_b.shape[1]
    index_a, index_b, own_b = distinct_tokens(n_a, n_b, shared_pairs)
    states = np.concatenate([hidden_a, hidden_b[:, own_b]], 1)  # (n_layers+1, n_distinct, d)
    places = layout.fit(states).embedding_.astype(np.float64)  # (n_layers+1, n_distinct, 3)
    pca = layout.start_.copy()  # (n_layers+1, n_distinct, 3) the joint baseline: aligned PCA-3
    sides = ((hidden_a, index_a), (hidden_b, index_b))
    improved = getattr(layout, "improved_", True)  # else the layout IS its PCA start
    figures = [side_figures(h, [pca[:, i], places[:, i]][: 1 + improved]) for h, i in sides]
    base, mine = [f[0] for f in figures], [f[-1] for f in figures]
    fallback = np.full(len(states), not improved)
    for (trust, corr), (base_trust, base_corr) in zip(mine, base, strict=True):
        fallback |= (trust < base_trust + TIE) | (corr < base_corr + TIE)
    for layer in np.flatnonzero(fallback):
        places[layer] = _similar_onto(pca[layer], places[layer])
    # every layer the same size (a similarity per layer: no figure changes), so that no
    # layer's outliers shrink the others in a frame that holds them all
    places -= places.mean(1, keepdims=True)
    size = np.linalg.norm(places, axis=-1).mean(-1)  # (n_layers+1,)
    places *= (LAYER_RADIUS / np.maximum(size, 1e-12))[:, None, None]
    joint_trust = np.stack([b[0] for b in base]).astype(np.float32)
    joint_correlation = np.stack([b[1] for b in base]).astype(np.float32)
    return SharedSpace(
        places[:, index_a], places[:, index_b], joint_trust, joint_correlation, fallback
    )


def _similar_onto(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(n, 3) points moved onto (n, 3) target by the best rotation, scale and shift."""
    p, t = points - points.mean(0), target - target.mean(0)
    rotation, scale = orthogonal_procrustes(p, t)
    norm = np.square(p).sum()
    return p @ rotation * (scale / norm if norm > 0 else 1.0) + target.mean(0)


def shared_positions(
    space: SharedSpace,
    clouds_a: np.ndarray,
    clouds_b: np.ndarray,
    tokens_a: np.ndarray,
    tokens_b: np.ndarray,
    spread: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's particles grouped around its tokens' shared places.

    The group offsets come from both prompts' clouds together and sum to zero over each token's
    particles, so a token's place (its particles' centroid) is the shared place whatever the
    particles; a prompt diffed with itself moves nothing.

    Args:
        clouds_a, clouds_b: (n_layers+1, n_particles, d_particle).
        tokens_a, tokens_b: (n_particles,) token of each particle.

    Returns:
        positions_a, positions_b: (n_layers+1, n_particles, 3) float32 each.
    """
    n_a, n_particles = space.places_a.shape[1], clouds_a.shape[1]
    places = np.concatenate([space.places_a, space.places_b], 1)  # (L+1, n_a + n_b, 3)
    owners = np.concatenate([tokens_a, n_a + tokens_b])  # (2 n_particles,)
    both = grouped_positions(places, np.concatenate([clouds_a, clouds_b], 1), owners, spread)
    positions_a, positions_b = both[:, :n_particles], both[:, n_particles:]
    if (
        np.array_equal(clouds_a, clouds_b)
        and np.array_equal(tokens_a, tokens_b)
        and np.array_equal(space.places_a, space.places_b)
    ):
        positions_b = positions_a.copy()  # the same prompt: exactly the same picture
    return positions_a, positions_b


def common_layouts(
    clouds_a: np.ndarray, clouds_b: np.ndarray, project: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """The particle modes (fast, umap): A's and B's particle clouds projected together.

    A particle whose cloud vector is identical in A and B gets the same 3D position in both.

    Args:
        clouds_a, clouds_b: (n_layers+1, n_particles, d_particle).
        project: (n_layers+1, n_points, d) → (n_layers+1, n_points, 3) layouts.

    Returns:
        positions_a, positions_b: (n_layers+1, n_particles, 3).
    """
    n_particles = clouds_a.shape[1]
    if np.array_equal(clouds_a, clouds_b):
        layouts = project(clouds_a)  # (n_layers+1, n_particles, 3)
        return layouts, layouts.copy()
    joint = np.concatenate([clouds_a, clouds_b], axis=1)  # (n_layers+1, 2 n_particles, d)
    layouts = project(joint)  # (n_layers+1, 2 n_particles, 3)
    positions_a = layouts[:, :n_particles].copy()
    positions_b = layouts[:, n_particles:].copy()
    same = (clouds_a == clouds_b).all(-1)  # (n_layers+1, n_particles)
    positions_b[same] = positions_a[same]
    return positions_a, positions_b


def cloud_displacement(clouds_a: np.ndarray, clouds_b: np.ndarray) -> np.ndarray:
    """(n_layers+1, n_particles) float32 |cloud_b - cloud_a| slot by slot: a diagnostic of the
    autoencoder only (slot i need not hold the same token in A and B)."""
    return np.linalg.norm(clouds_b.astype(np.float64) - clouds_a, axis=-1).astype(np.float32)
