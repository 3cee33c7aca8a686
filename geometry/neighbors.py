"""Exact nearest neighbours and UMAP's fuzzy neighbour graph, batched over layers in torch."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import scipy.sparse
import torch

MIN_K_DIST_SCALE = 1e-3


class Neighbors(NamedTuple):
    """The k nearest other points of every point, layer by layer."""

    indices: torch.Tensor
    """(n_layers, n_points, k) int64, nearest first, never the point itself."""
    distances: torch.Tensor
    """(n_layers, n_points, k) float32 Euclidean distances."""


class FuzzyGraph(NamedTuple):
    """UMAP's symmetric fuzzy neighbour graph of every layer, as one flat edge list.

    Point i of layer l has the flat index l * n_points + i, so edges never cross layers.
    """

    heads: torch.Tensor
    """(n_edges,) int64 flat index of the point an edge pulls."""
    tails: torch.Tensor
    """(n_edges,) int64 flat index of its neighbour."""
    weights: torch.Tensor
    """(n_edges,) float32 membership strength, scaled so each layer's strongest edge is 1."""
    degree: torch.Tensor
    """(n_layers * n_points,) float32 sum of the weights of each point's edges."""


def pairwise_distances(cloud: torch.Tensor) -> torch.Tensor:
    """(n_points, d) → (n_points, n_points) Euclidean distances, diagonal exactly 0."""
    sq = (cloud * cloud).sum(-1)  # (n_points,)
    d2 = torch.addmm(sq[:, None] + sq[None, :], cloud, cloud.T, alpha=-2.0)  # (n, n)
    return d2.clamp_min_(0.0).fill_diagonal_(0.0).sqrt_()


def nearest_neighbors(clouds: torch.Tensor, k: int) -> Neighbors:
    """The k nearest other points of every point in every layer (exact).

    Args:
        clouds: (n_layers, n_points, d) float32.
        k: neighbours per point; clipped to n_points - 1.
    """
    n_layers, n_points, _ = clouds.shape
    k = max(0, min(k, n_points - 1))
    indices = torch.zeros(n_layers, n_points, k, dtype=torch.int64)
    distances = torch.zeros(n_layers, n_points, k)
    for layer in range(n_layers):  # one (n_points, n_points) matrix at a time stays in cache
        dist = pairwise_distances(clouds[layer]).fill_diagonal_(math.inf)
        top = torch.topk(dist, k, dim=1, largest=False, sorted=True)
        indices[layer], distances[layer] = top.indices, top.values
    return Neighbors(indices, distances)


def smooth_knn_dist(distances: torch.Tensor, n_iter: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """UMAP's per-point bandwidth: sigma with sum_j exp(-(d_j - rho) / sigma) = log2(k + 1).

    Vectorised bisection over every point at once (umap.umap_.smooth_knn_dist, local
    connectivity 1). umap-learn's n_neighbors counts the point itself: k others here are its
    n_neighbors = k + 1, in the target and in the mean distance of the floor.

    Args:
        distances: (..., k) distances to the k nearest other points, ascending.

    Returns:
        sigma (...,) and rho (...,): the bandwidth and the distance to the nearest
        non-identical neighbour.
    """
    d = distances.double()
    k = d.shape[-1]
    target = math.log2(k + 1)  # umap-learn counts the point itself among its n_neighbors
    positive = torch.where(d > 0, d, torch.full_like(d, math.inf))
    rho = positive.min(-1).values
    rho = torch.where(torch.isfinite(rho), rho, torch.zeros_like(rho))  # (...,)
    lo = torch.zeros_like(rho)
    hi = torch.full_like(rho, math.inf)
    mid = torch.ones_like(rho)
    excess = (d - rho[..., None]).clamp_min(0.0)  # (..., k)
    for _ in range(n_iter):
        psum = torch.exp(-excess / mid[..., None]).sum(-1)
        too_big = psum > target
        hi = torch.where(too_big, mid, hi)
        lo = torch.where(too_big, lo, mid)
        mid = torch.where(
            too_big, (lo + hi) / 2, torch.where(torch.isinf(hi), mid * 2, (lo + hi) / 2)
        )
    mean_all = d.sum(-1) / (k + 1)  # the point itself, at distance 0, counts too
    floor = torch.where(
        rho > 0,
        MIN_K_DIST_SCALE * mean_all,
        MIN_K_DIST_SCALE * mean_all.mean(-1, keepdim=True).expand_as(mean_all),
    )
    return torch.maximum(mid, floor).float(), rho.float()


def fuzzy_graph(neighbors: Neighbors, drop_below: float = 0.0) -> FuzzyGraph:
    """UMAP's fuzzy simplicial set of every layer (fuzzy union, set_op_mix_ratio 1).

    Args:
        neighbors: the kNN of every layer.
        drop_below: edges weaker than this fraction of their layer's strongest edge are
            dropped, as UMAP drops edges it would never sample.
    """
    n_layers, n_points, k = neighbors.indices.shape
    n_total = n_layers * n_points
    if k == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return FuzzyGraph(empty, empty, torch.zeros(0), torch.zeros(n_total))
    sigma, rho = smooth_knn_dist(neighbors.distances)  # (n_layers, n_points)
    strength = torch.exp(
        -(neighbors.distances - rho[..., None]).clamp_min(0.0) / sigma[..., None]
    )  # (n_layers, n_points, k)
    offset = (torch.arange(n_layers) * n_points)[:, None, None]
    rows = (torch.arange(n_points)[None, :, None] + offset).expand(-1, -1, k)
    cols = neighbors.indices + offset
    w = scipy.sparse.csr_matrix(
        (
            strength.reshape(-1).double().numpy(),
            (rows.reshape(-1).numpy(), cols.reshape(-1).numpy()),
        ),
        shape=(n_total, n_total),
    )
    wt = w.T.tocsr()
    sym = (w + wt - w.multiply(wt)).tocoo()  # fuzzy union
    heads, tails, weights = sym.row.astype(np.int64), sym.col.astype(np.int64), sym.data
    order = np.lexsort((tails, heads))  # canonical order, independent of scipy internals
    heads, tails, weights = heads[order], tails[order], weights[order]
    layer_max = np.zeros(n_layers)
    np.maximum.at(layer_max, heads // n_points, weights)
    weights = weights / np.maximum(layer_max[heads // n_points], 1e-12)
    keep = weights > max(drop_below, 0.0)
    heads_t = torch.from_numpy(heads[keep])
    weights_t = torch.from_numpy(weights[keep]).float()
    degree = torch.zeros(n_total).index_add_(0, heads_t, weights_t)
    return FuzzyGraph(heads_t, torch.from_numpy(tails[keep]), weights_t, degree)


def neighborhood_overlap(indices: torch.Tensor, offset: int) -> torch.Tensor:
    """Jaccard overlap of each point's neighbour set in layer l and in layer l + offset.

    AlignedUMAP weighs its alignment pull by this: a particle whose neighbourhood changed
    between layers is allowed to move.

    Args:
        indices: (n_layers, n_points, k) kNN indices.
        offset: layer distance, >= 1.

    Returns:
        (n_layers - offset, n_points) float32 overlap of layer l with layer l + offset.
    """
    n_layers, n_points, k = indices.shape
    if n_layers <= offset or k == 0:
        return torch.ones(max(n_layers - offset, 0), n_points)
    a, b = indices[:-offset], indices[offset:]  # (n_layers - offset, n_points, k)
    inter = (a[..., :, None] == b[..., None, :]).any(-1).sum(-1).float()  # (…, n_points)
    return inter / (2 * k - inter)
