"""Faithfulness figures: the batched trustworthiness equals sklearn's, Spearman equals scipy's;
disparity edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import procrustes
from scipy.spatial.distance import pdist
from scipy.stats import spearmanr
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

from layerscan.geometry.faithfulness import (
    continuity,
    distance_correlation,
    faithfulness,
    mean_ranks,
    procrustes_disparity,
    spearman,
    trustworthiness,
)


@pytest.mark.parametrize("k", [5, 10])
def test_trustworthiness_and_continuity_equal_sklearn(k):
    rng = np.random.default_rng(0)
    clouds = rng.normal(size=(3, 150, 12)).astype(np.float32)
    layouts = (clouds[..., :3] + rng.normal(size=(3, 150, 3)) * 0.7).astype(np.float32)
    ours_t, ours_c = trustworthiness(clouds, layouts, k), continuity(clouds, layouts, k)
    for layer in range(3):
        assert ours_t[layer] == pytest.approx(
            sklearn_trustworthiness(clouds[layer], layouts[layer], n_neighbors=k), abs=1e-5
        )
        assert ours_c[layer] == pytest.approx(
            sklearn_trustworthiness(layouts[layer], clouds[layer], n_neighbors=k), abs=1e-5
        )
    assert isinstance(trustworthiness(clouds[0], layouts[0], k), float)


def test_spearman_equals_scipys_with_and_without_ties():
    rng = np.random.default_rng(2)
    assert mean_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4, 1, 4, 2, 4]
    for x, y in [
        (rng.normal(size=300), rng.normal(size=300)),
        (rng.integers(0, 5, 300).astype(float), rng.integers(0, 7, 300) * 0.5),
        (np.arange(40.0), np.arange(40.0) ** 3),
        (np.arange(40.0), -np.arange(40.0)),
    ]:
        y = y + 0.3 * x
        assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    states = rng.normal(size=(2, 12, 16))
    places = states[..., :3] + rng.normal(size=(2, 12, 3))
    ours = distance_correlation(states, places)
    for layer in range(2):
        expected = spearmanr(pdist(states[layer]), pdist(places[layer])).statistic
        assert ours[layer] == pytest.approx(expected, abs=1e-6)


def test_disparity_is_zero_for_rigid_motion_and_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(50, 3))
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    b = rng.normal(size=(50, 3))
    layouts = np.stack([b, a, 2 * a @ rotation + 1, b])
    disparity = procrustes_disparity(layouts)
    assert disparity.shape == (4,) and disparity[1] > 0.1  # unrelated layouts differ
    assert disparity[2] == pytest.approx(0, abs=1e-6)  # rotated, scaled, shifted: no change
    for layer in (1, 3):  # (layer 0 has no previous layer: defined as 0)
        assert disparity[layer] == pytest.approx(
            procrustes(layouts[layer - 1], layouts[layer])[2], rel=1e-5
        )
    assert procrustes_disparity(np.zeros((2, 5, 3)))[1] == 0  # degenerate: no error


def test_perfect_layout_and_small_layers():
    rng = np.random.default_rng(2)
    points = rng.normal(size=(2, 60, 3)).astype(np.float32)
    figures = faithfulness(points, points, k=10)
    assert np.allclose(figures.trustworthiness, 1) and np.allclose(figures.continuity, 1)
    assert np.array_equal(trustworthiness(points[:, :8], points[:, :8], 10), np.ones(2))
