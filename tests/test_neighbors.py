"""The fuzzy neighbour graph against umap-learn's own (an oracle test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerscan.geometry.neighbors import fuzzy_graph, nearest_neighbors


@pytest.mark.slow  # the first umap-learn call compiles its numba code
@pytest.mark.parametrize("k", [5, 10, 15])
def test_the_fuzzy_graph_is_umap_learns_fuzzy_simplicial_set(k):
    from umap.umap_ import fuzzy_simplicial_set

    rng = np.random.default_rng(k)
    points = rng.normal(size=(60, 6)).astype(np.float32)
    points[7] = points[3]  # a duplicate point (rho of 0)
    neighbors = nearest_neighbors(torch.from_numpy(points)[None], k)
    graph = fuzzy_graph(neighbors)
    ours = np.zeros((60, 60))
    ours[graph.heads.numpy(), graph.tails.numpy()] = graph.weights.numpy()
    # umap-learn's kNN lists each point first, at distance 0
    indices = np.concatenate([np.arange(60)[:, None], neighbors.indices[0].numpy()], 1)
    distances = np.concatenate([np.zeros((60, 1)), neighbors.distances[0].numpy()], 1)
    theirs, _, _ = fuzzy_simplicial_set(
        points, k + 1, 0, "euclidean", knn_indices=indices, knn_dists=distances.astype(np.float32)
    )
    theirs = theirs.toarray()
    np.testing.assert_array_equal(ours > 0, theirs > 0)
    np.testing.assert_allclose(ours, theirs / theirs.max(), atol=1e-5)
