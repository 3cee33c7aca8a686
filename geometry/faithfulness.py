"""How far to trust a 3D layout: trustworthiness, continuity and layer-to-layer disparity."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.spatial import procrustes

from layerscan.geometry.neighbors import nearest_neighbors, pairwise_distances


class Faithfulness(NamedTuple):
    """Per-layer figures of one set of layouts."""

    trustworthiness: np.ndarray
    """(n_layers,) float32: 1 = every 3D neighbour is a true cloud neighbour."""
    continuity: np.ndarray
    """(n_layers,) float32: 1 = every cloud neighbour stays a 3D neighbour."""
    disparity: np.ndarray
    """(n_layers,) float32 Procrustes disparity to the previous layer (0 at layer 0)."""


def trustworthiness(original: np.ndarray, embedded: np.ndarray, k: int = 10) -> np.ndarray:
    """`sklearn.manifold.trustworthiness` of every layer, batched in torch.

    Gives sklearn's numbers (tests check this) at a fraction of its time: instead of
    argsorting the full distance matrix, each embedded neighbour's rank in the original space
    is counted directly. Only exactly tied distances may rank differently.

    Args:
        original: (n_layers, n_points, d) or (n_points, d).
        embedded: (n_layers, n_points, e) or (n_points, e).
        k: neighbourhood size; must be < n_points / 2 (layers with fewer points give 1).

    Returns:
        (n_layers,) float32, or a float for 2-D inputs.
    """
    single = np.ndim(original) == 2
    x = torch.as_tensor(np.asarray(original, np.float32))
    e = torch.as_tensor(np.asarray(embedded, np.float32))
    if single:
        x, e = x[None], e[None]
    n_layers, n = x.shape[:2]
    if k >= n / 2:
        result = np.ones(n_layers, np.float32)
        return float(result[0]) if single else result
    emb_nbrs = nearest_neighbors(e, k).indices.numpy()  # (n_layers, n, k)
    rows = np.arange(n)
    penalty = np.zeros(n_layers)
    for layer in range(n_layers):
        d = pairwise_distances(x[layer]).numpy().astype(np.float64)  # (n, n)
        top = d.max() + 1.0
        d[rows, rows] = top - 0.5  # never anyone's neighbour
        thr = np.take_along_axis(d, emb_nbrs[layer], 1)  # (n, k)
        # rank of each embedded neighbour among the original distances: sort each row once,
        # then binary-search all rows together (rows shifted apart by `top`)
        flat = (np.sort(d, axis=1) + rows[:, None] * top).ravel()  # (n * n,)
        closer = np.searchsorted(flat, (thr + rows[:, None] * top).ravel()) \
            - np.repeat(rows * n, k)  # (n * k,)
        ranks = closer + 1 - k
        penalty[layer] = ranks[ranks > 0].sum()
    t = 1.0 - penalty * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))
    result = t.astype(np.float32)
    return float(result[0]) if single else result


def continuity(original: np.ndarray, embedded: np.ndarray, k: int = 10) -> np.ndarray:
    """Trustworthiness with the roles swapped: do cloud neighbours stay neighbours in 3D?"""
    return trustworthiness(embedded, original, k)


def procrustes_disparity(layouts: np.ndarray) -> np.ndarray:
    """(n_layers, n_points, 3) → (n_layers,) scipy Procrustes disparity to the previous layer.

    0 at layer 0 and wherever a layout is degenerate (all points at one place).
    """
    out = np.zeros(len(layouts), np.float32)
    for layer in range(1, len(layouts)):
        try:
            out[layer] = procrustes(layouts[layer - 1].astype(np.float64),
                                    layouts[layer].astype(np.float64))[2]
        except ValueError:  # fewer than 2 distinct points
            out[layer] = 0.0
    return out


def faithfulness(clouds: np.ndarray, layouts: np.ndarray, k: int = 10) -> Faithfulness:
    """All three per-layer figures of `layouts` (n_layers, n_points, 3) vs `clouds`."""
    return Faithfulness(trustworthiness(clouds, layouts, k), continuity(clouds, layouts, k),
                        procrustes_disparity(layouts))
