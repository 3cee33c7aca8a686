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


def trustworthiness(original: np.ndarray, embedded: np.ndarray, k: int = 10,
                    embedded_neighbors: np.ndarray | None = None) -> np.ndarray:
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
    x = torch.as_tensor(np.asarray(original, np.float32))
    e = torch.as_tensor(np.asarray(embedded, np.float32))
    if single:
        x, e = x[None], e[None]
    n_layers, n = x.shape[:2]
    if k >= n / 2:
        result = np.ones(n_layers, np.float32)
        return float(result[0]) if single else result
    if embedded_neighbors is None:
        emb_nbrs = nearest_neighbors(e, k).indices.numpy()  # (n_layers, n, k)
    else:
        emb_nbrs = np.asarray(embedded_neighbors, np.int64).reshape(n_layers, n, -1)[..., :k]
    penalty = np.zeros(n_layers)
    for layer in range(n_layers):
        d = pairwise_distances(x[layer]).fill_diagonal_(float("inf"))  # (n, n)
        thr = torch.gather(d, 1, torch.from_numpy(emb_nbrs[layer]))  # (n, k)
        # 1-based rank of each embedded neighbour among the original distances: sort each
        # row once, then binary-search the k thresholds of every row at once
        ordered = torch.from_numpy(np.sort(d.numpy(), axis=1))  # (n, n)
        ranks = torch.searchsorted(ordered, thr).numpy() + 1 - k  # (n, k)
        penalty[layer] = ranks[ranks > 0].sum()
    t = 1.0 - penalty * (2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0)))
    result = t.astype(np.float32)
    return float(result[0]) if single else result


def continuity(original: np.ndarray, embedded: np.ndarray, k: int = 10,
               original_neighbors: np.ndarray | None = None) -> np.ndarray:
    """Trustworthiness with the roles swapped: do cloud neighbours stay neighbours in 3D?"""
    return trustworthiness(embedded, original, k, original_neighbors)


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


def faithfulness(clouds: np.ndarray, layouts: np.ndarray, k: int = 10,
                 cloud_neighbors: np.ndarray | None = None) -> Faithfulness:
    """All three per-layer figures of `layouts` (n_layers, n_points, 3) vs `clouds`.

    Args:
        cloud_neighbors: optional (n_layers, n_points, >= k) kNN indices of the clouds.
    """
    return Faithfulness(trustworthiness(clouds, layouts, k),
                        continuity(clouds, layouts, k, cloud_neighbors),
                        procrustes_disparity(layouts))
