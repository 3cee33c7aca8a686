"""Projection estimators: sklearn-style API, alignment, reproducibility, non-finite points."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from layerscan.geometry.estimator import seed_of
from layerscan.geometry.faithfulness import faithfulness
from layerscan.geometry.projection import (
    AlignedUMAPProjection,
    FastAlignedProjection,
    IndependentUMAPProjection,
    fill_nonfinite,
    make_projection,
    pca_layouts,
)
from layerscan.geometry.token_layout import TokenLayout


def drifting_clusters(n_layers=4, n_points=200, d=8, seed=0) -> np.ndarray:
    """(n_layers, n_points, d) Gaussian clusters that drift a little from layer to layer."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, d)) * 4
    labels = rng.integers(0, 5, n_points)
    offsets = rng.normal(size=(n_points, d))
    layers = []
    for layer in range(n_layers):
        offsets = offsets + rng.normal(size=offsets.shape) * 0.2
        layers.append(centers[labels] + 0.3 * layer + offsets)
    return np.stack(layers).astype(np.float32)


@pytest.fixture(scope="module")
def clouds() -> np.ndarray:
    return drifting_clusters()


@pytest.fixture(scope="module")
def reference(clouds) -> np.ndarray:
    """AlignedUMAP on the small clouds (few epochs: seconds, not minutes)."""
    return AlignedUMAPProjection(n_epochs=60, random_state=0).fit(clouds).embedding_


def test_init_only_stores_arguments_and_fit_returns_self(clouds):
    est = FastAlignedProjection(n_epochs=20, random_state=3)
    assert est.get_params()["n_epochs"] == 20 and not hasattr(est, "embedding_")
    assert clone(est).get_params() == est.get_params()
    assert est.fit(list(clouds)) is est
    assert est.embedding_.shape == (4, 200, 3) and est.embedding_.dtype == np.float32
    assert np.isfinite(est.embedding_).all() and est.n_edges_ > 0
    assert est.get_params()["n_epochs"] == 20  # fit never changes a hyperparameter


@pytest.mark.parametrize(
    "cls", [FastAlignedProjection, AlignedUMAPProjection, IndependentUMAPProjection, TokenLayout]
)
def test_estimators_speak_sklearns_parameter_protocol(cls):
    est = cls(n_components=2)
    params = est.get_params()
    assert params["n_components"] == 2 and "self" not in params
    copy = clone(est)
    assert type(copy) is cls and copy is not est and copy.get_params() == params
    assert est.set_params(n_components=3) is est and est.n_components == 3
    assert repr(est).startswith(f"{cls.__name__}(") and "n_components=3" in repr(est)
    with pytest.raises(ValueError, match="invalid parameter 'n_component'"):
        est.set_params(n_component=4)


def test_seed_of_random_states():
    assert seed_of(7) == seed_of(np.int64(7)) == 7
    assert seed_of(np.random.RandomState(3)) == np.random.RandomState(3).randint(2**31 - 1)
    assert 0 <= seed_of(None) < 2**31 - 1
    with pytest.raises(ValueError, match="cannot seed"):
        seed_of("3")


@pytest.mark.slow  # the AlignedUMAP reference fixture takes ~30 s
def test_fast_mode_is_faithful_and_aligned_like_the_reference(clouds, reference):
    fast = FastAlignedProjection(n_epochs=100, random_state=0).fit(clouds).embedding_
    ours, ref = faithfulness(clouds, fast), faithfulness(clouds, reference)
    assert ours.trustworthiness.mean() >= ref.trustworthiness.mean() - 0.02
    assert ours.trustworthiness.mean() > 0.9
    assert ours.disparity[1:].mean() <= ref.disparity[1:].mean() * 1.1 + 1e-3


@pytest.mark.slow  # the AlignedUMAP reference fixture takes ~30 s
def test_reference_and_independent_modes_give_finite_layouts(clouds, reference):
    assert reference.shape == (4, 200, 3) and np.isfinite(reference).all()
    independent = IndependentUMAPProjection(n_epochs=30).fit(clouds[:2]).embedding_
    assert independent.shape == (2, 200, 3) and np.isfinite(independent).all()


def test_same_seed_same_bytes_other_seed_other_layout(clouds):
    a = FastAlignedProjection(n_epochs=30, random_state=1).fit(clouds).embedding_
    b = FastAlignedProjection(n_epochs=30, random_state=1).fit(clouds).embedding_
    c = FastAlignedProjection(n_epochs=30, random_state=2).fit(clouds).embedding_
    assert a.tobytes() == b.tobytes()
    assert not np.array_equal(a, c)


def test_warm_start_from_a_layout_stays_close(clouds):
    full = FastAlignedProjection(n_epochs=60).fit(clouds).embedding_
    refined = (
        FastAlignedProjection(n_epochs=10, learning_rate=0.25).fit(clouds, init=full).embedding_
    )
    assert np.abs(refined - full).mean() < 0.25 * np.abs(full).mean()
    with pytest.raises(ValueError, match="init layout"):
        FastAlignedProjection().fit(clouds, init=full[:, :10])


def test_non_finite_points_never_reach_the_layout(clouds):
    bad = clouds.copy()
    bad[1, 5] = np.nan
    bad[2, 7, 3] = np.inf
    layout = FastAlignedProjection(n_epochs=20).fit(bad).embedding_
    assert np.isfinite(layout).all()
    holes = pca_layouts(clouds)
    holes[0, :3] = np.nan
    filled = fill_nonfinite(holes, clouds)
    assert np.isfinite(filled).all() and np.array_equal(filled[0, 3:], holes[0, 3:])


def test_tiny_and_single_layer_inputs(clouds):
    assert FastAlignedProjection(n_epochs=10).fit(clouds[:1]).embedding_.shape == (1, 200, 3)
    tiny = FastAlignedProjection(n_epochs=10).fit(clouds[:, :3]).embedding_
    assert tiny.shape == (4, 3, 3) and np.isfinite(tiny).all()
    same = np.ones((2, 30, 4), np.float32)  # every particle at one place
    assert np.isfinite(FastAlignedProjection(n_epochs=10).fit(same).embedding_).all()


def test_bad_input_is_a_one_line_error(clouds):
    with pytest.raises(ValueError, match="n_layers, n_points, d"):
        FastAlignedProjection().fit(clouds[0])
    with pytest.raises(ValueError, match="same shape"):
        FastAlignedProjection().fit([clouds[0], clouds[1][:10]])
    with pytest.raises(ValueError, match="unknown projection"):
        make_projection("tsne")


@pytest.mark.slow  # the first umap-learn call compiles its numba code (~25 s)
def test_too_few_points_for_umap_is_a_one_line_error(clouds):
    with pytest.raises(ValueError, match="at least 2 layers"):
        AlignedUMAPProjection().fit(clouds[:, :10])
