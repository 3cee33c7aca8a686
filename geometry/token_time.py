"""Token places for token-time frames: every prefix at least as faithful as its own PCA-3,
while the tokens already shown move at most a small share of the radius per step.

One layout of the whole prompt keeps earlier tokens still, but a short prefix is then drawn
by places fitted for all the tokens to come (3 tokens: token trust 0.66 where PCA-3 of the
3 tokens gives 1.00). Here the frames are built prefix by prefix: each step aims at the more
faithful of two pictures of its prefix (the whole prompt's layout cut to the prefix, or the
aligned PCA-3 of the prefix), each fitted by rotation, scale and shift onto the previous
frame; the new token takes its place in that aim, and the earlier tokens move towards it by
at most `MAX_STEP_MOVE` of the radius.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from layerscan.geometry.faithfulness import distance_correlation, token_k, trustworthiness
from layerscan.geometry.token_layout import aligned_pca

MAX_STEP_MOVE = 0.02
"""Most an earlier token's place moves between two token-time steps, as a share of the
layer's radius (mean distance of the places from their centroid) at the earlier step."""


class StepPlaces(NamedTuple):
    """Token places of every token-time step."""

    places: list[np.ndarray]
    """[n_steps] (n_layers, lengths[s], 3) float64 token places of each step."""
    layouts: list[str]
    """[n_steps] "pca" where the step's frame is the PCA-3 of its prefix (fitted onto the
    previous frame by rotation, scale and shift), else "tokens" (see `Scan.step_layouts`)."""


def score(states: np.ndarray, places: np.ndarray) -> float:
    """Mean plus worst-layer token trust plus mean distance correlation (as TokenLayout)."""
    n = states.shape[1]
    if n < 3:
        return 3.0  # every picture of 1 or 2 tokens is exact
    trust = trustworthiness(states, places, token_k(n))
    return float(np.mean(trust) + np.min(trust) + np.mean(distance_correlation(states, places)))


def similarity_fit(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`source` (n, 3) rotated, scaled and shifted onto `target` (m <= n, 3) by its first m
    points (orthogonal Procrustes with scale; the identity when m < 2 or degenerate)."""
    m = len(target)
    if m < 2:
        return source + (target.mean(0) - source[:m].mean(0) if m else 0.0)
    a, b = source[:m] - source[:m].mean(0), target - target.mean(0)
    norm = float(np.square(a).sum())
    if norm <= 0:
        return source - source[:m].mean(0) + target.mean(0)
    u, sing, vt = np.linalg.svd(a.T @ b)
    rotation = u @ vt  # (3, 3), reflections allowed (the picture has no handedness)
    scale = float(sing.sum()) / norm
    return (source - source[:m].mean(0)) @ rotation * scale + target.mean(0)


def _radius(places: np.ndarray) -> np.ndarray:
    """(n_layers, n, 3) → (n_layers,) mean distance of the places from their centroid."""
    return np.linalg.norm(places - places.mean(1, keepdims=True), axis=-1).mean(-1)


def step_places(states: np.ndarray, full: np.ndarray, lengths: list[int]) -> StepPlaces:
    """Token places of each prefix, built step by step.

    Args:
        states: (n_layers, n_tokens, d_model) the full prompt's states (causal: a prefix's
            states are the first tokens').
        full: (n_layers, n_tokens, 3) the whole prompt's token layout.
        lengths: increasing prefix lengths, one per step.

    Returns:
        StepPlaces.
    """
    places, layouts = [], []
    frame = np.zeros((full.shape[0], 0, 3))  # (n_layers, shown, 3) the previous frame
    for n in lengths:
        prefix = states[:, :n]
        shown = frame.shape[1]
        candidates = {
            "tokens": full[:, :n],
            "pca": aligned_pca(prefix) if n >= 3 else full[:, :n],
        }
        scores = {name: score(prefix, c) for name, c in candidates.items()}
        cap = MAX_STEP_MOVE * _radius(frame)[:, None, None] if shown else np.zeros((1, 1, 1))
        aims = {  # each picture fitted onto the previous frame: (n_layers, n, 3)
            name: np.stack(
                [similarity_fit(c, previous) for c, previous in zip(picture, frame, strict=True)]
            )
            for name, picture in candidates.items()
        }
        # the first picture, best first, that the earlier tokens can follow within the cap
        # while the frame stays as faithful as PCA-3; else (a jump) the best picture itself
        order = sorted(aims, key=lambda name: -scores[name])
        name, chosen = order[0], aims[order[0]]
        for option in order:
            move = aims[option][:, :shown] - frame  # (n_layers, shown, 3)
            length = np.linalg.norm(move, axis=-1, keepdims=True)
            capped = np.concatenate(
                [
                    frame + move * np.minimum(1.0, cap / np.maximum(length, 1e-300)),
                    aims[option][:, shown:],
                ],
                1,
            )
            if score(prefix, capped) >= scores["pca"]:
                # "pca" only where the frame is PCA-3 of the prefix itself (no earlier
                # token held back by the cap): a capped blend that matched it is a layout
                jumped = np.abs(capped - aims[option]).max() <= 1e-9 * np.abs(capped).max()
                name = "pca" if option == "pca" and jumped else "tokens"
                chosen = capped
                break
        frame = chosen
        places.append(frame)
        layouts.append(name)
    return StepPlaces(places, layouts)
