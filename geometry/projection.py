"""Aligned 3D projections of every layer's particle cloud: a fast torch mode and umap references."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from layerscan.geometry.estimator import Estimator, seed_of
from layerscan.geometry.neighbors import (
    fuzzy_graph,
    nearest_neighbors,
    neighborhood_overlap,
)
from layerscan.geometry.scan_options import PROJECTION_MODES, ProjectionMode

UMAP_A, UMAP_B = 1.576943460405378, 0.8950608781227859
"""UMAP's output-kernel curve for min_dist=0.1, spread=1 (AlignedUMAP's own defaults)."""
CLIP = 4.0
"""UMAP clips every per-edge gradient to ±4."""
INIT_SCALE = 10.0
"""Initial layouts span ±10, as UMAP's."""


def as_clouds(clouds) -> np.ndarray:
    """Validate a list of (n_points, d) arrays or one (n_layers, n_points, d) array.

    Non-finite rows are replaced by their layer's mean of finite rows, so one bad particle
    never poisons a layout.

    Returns:
        (n_layers, n_points, d) float32.
    """
    try:
        arr = np.asarray(clouds, dtype=np.float32)
    except ValueError as exc:
        raise ValueError(f"clouds must all have the same shape ({exc})") from exc
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(
            f"clouds must be (n_layers, n_points, d) and non-empty, got shape {arr.shape}"
        )
    bad = ~np.isfinite(arr).all(-1)  # (n_layers, n_points)
    if bad.any():
        arr = arr.copy()
        for layer in np.nonzero(bad.any(1))[0]:
            good = arr[layer][~bad[layer]]
            arr[layer][bad[layer]] = good.mean(0) if len(good) else 0.0
    return arr


def procrustes_rotation(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The orthogonal (d, d) matrix R minimising |(source - mean) R - (target - mean)|."""
    u, _, vt = np.linalg.svd((source - source.mean(0)).T @ (target - target.mean(0)))
    return u @ vt


def pca_layouts(clouds: np.ndarray, n_components: int = 3) -> np.ndarray:
    """PCA of each layer, each rotated onto the previous one (identity relations), ±10 wide.

    Args:
        clouds: (n_layers, n_points, d).

    Returns:
        (n_layers, n_points, n_components) float32.
    """
    n_layers, n_points, d = clouds.shape
    out = np.zeros((n_layers, n_points, n_components), np.float64)
    for layer in range(n_layers):
        x = clouds[layer].astype(np.float64)
        x = x - x.mean(0)
        # eigenvectors of the (d, d) covariance: much cheaper than an SVD of the points
        _, vecs = np.linalg.eigh(x.T @ x)
        basis = vecs[:, ::-1][:, :n_components]  # (d, <= n_components), largest first
        basis = basis * np.where(
            basis[np.abs(basis).argmax(0), range(basis.shape[1])] < 0, -1.0, 1.0
        )  # a deterministic sign per axis
        proj = x @ basis  # (n_points, <= n_components)
        y = np.zeros((n_points, n_components))
        y[:, : proj.shape[1]] = proj
        if layer > 0:
            y = (y - y.mean(0)) @ procrustes_rotation(y, out[layer - 1])
        span = np.abs(y).max()
        out[layer] = y * (INIT_SCALE / span) if span > 0 else y
    return out.astype(np.float32)


def fill_nonfinite(layouts: np.ndarray, clouds: np.ndarray, k: int = 5) -> np.ndarray:
    """Place non-finite layout points at the mean position of their nearest finite cloud
    neighbours (UMAP leaves points disconnected from its graph at NaN)."""
    layouts = np.array(layouts, dtype=np.float32)
    for layer in range(layouts.shape[0]):
        bad = ~np.isfinite(layouts[layer]).all(-1)
        if not bad.any():
            continue
        good = np.nonzero(~bad)[0]
        if len(good) == 0:
            layouts[layer] = 0.0
            continue
        d = np.linalg.norm(clouds[layer][bad][:, None] - clouds[layer][good][None], axis=-1)
        near = good[np.argsort(d, axis=1, kind="stable")[:, :k]]  # (n_bad, <= k)
        layouts[layer][bad] = layouts[layer][near].mean(1)
    return layouts


def transform_init(
    clouds: np.ndarray, ref_clouds: np.ndarray, ref_layouts: np.ndarray, k: int = 5
) -> np.ndarray:
    """Place new clouds in an existing layout: each point at the inverse-distance weighted mean
    of its k nearest reference points of the same layer (UMAP's transform start).

    A point identical to a reference point lands exactly on it.

    Args:
        clouds: (n_layers, n_points, d) new clouds.
        ref_clouds: (n_layers, n_ref, d) clouds the layout was fitted on.
        ref_layouts: (n_layers, n_ref, 3) their layout.

    Returns:
        (n_layers, n_points, 3) float32.
    """
    out = np.zeros((*clouds.shape[:2], ref_layouts.shape[-1]), np.float32)
    k = min(k, ref_clouds.shape[1])
    for layer in range(len(clouds)):
        d = torch.cdist(
            torch.from_numpy(clouds[layer]).double(), torch.from_numpy(ref_clouds[layer]).double()
        )  # (n_points, n_ref)
        near = torch.topk(d, k, dim=1, largest=False)
        w = 1.0 / near.values.clamp_min(1e-12)  # (n_points, k)
        w = torch.where(near.values[:, :1] <= 1e-12, (near.values <= 1e-12).double(), w)
        pos = torch.from_numpy(ref_layouts[layer]).double()[near.indices]  # (n_points, k, 3)
        out[layer] = ((w[..., None] * pos).sum(1) / w.sum(1, keepdim=True)).numpy()
    return out


class FastAlignedProjection(Estimator):
    """The aligned-UMAP objective for every layer at once, optimised in torch.

    Each layer gets UMAP's fuzzy kNN graph; all layers are optimised jointly, one full batch
    of edges per epoch: attraction along graph edges, negative-sampled repulsion, and
    AlignedUMAP's pull of particle i towards particle i in neighbouring layers (weighted by
    how much its neighbourhood overlaps). The start is a PCA of every layer, rotated onto the
    previous layer, or a given layout (warm start). Runs on the GPU when `device` says so.

    Attributes:
        embedding_: (n_layers, n_points, n_components) float32 finite layouts.
        n_layers_, n_points_: the fitted shape.
        n_edges_: edges in the joint graph.
    """

    def __init__(
        self,
        n_components: int = 3,
        n_neighbors: int = 10,
        n_epochs: int = 150,
        learning_rate: float = 1.0,
        negative_sample_rate: int = 8,
        n_negative: int = 8,
        alignment_regularisation: float = 0.03,
        alignment_window_size: int = 2,
        repulsion_strength: float = 1.0,
        random_state: int | None = 0,
        device: str = "cpu",
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.n_epochs = n_epochs
        self.learning_rate = learning_rate
        self.negative_sample_rate = negative_sample_rate
        self.n_negative = n_negative
        self.alignment_regularisation = alignment_regularisation
        self.alignment_window_size = alignment_window_size
        self.repulsion_strength = repulsion_strength
        self.random_state = random_state
        self.device = device

    def fit(self, X, y=None, init: np.ndarray | None = None) -> FastAlignedProjection:
        """Lay out every layer.

        Args:
            X: list of (n_points, d) clouds or an (n_layers, n_points, d) array.
            y: ignored.
            init: optional (n_layers, n_points, n_components) warm start.
        """
        clouds = as_clouds(X)  # (n_layers, n_points, d)
        n_layers, n_points, _ = clouds.shape
        self.n_layers_, self.n_points_ = n_layers, n_points
        if init is None:
            start = pca_layouts(clouds, self.n_components)
        else:
            start = np.asarray(init, dtype=np.float32)
            if start.shape != (n_layers, n_points, self.n_components):
                raise ValueError(
                    f"init layout has shape {start.shape}, expected "
                    f"{(n_layers, n_points, self.n_components)}"
                )
            start = fill_nonfinite(start, clouds)
        generator = torch.Generator().manual_seed(seed_of(self.random_state))
        if n_points <= 3 or self.n_epochs <= 0:
            self.n_edges_ = 0
            self.embedding_ = start
            return self
        neighbors = nearest_neighbors(torch.from_numpy(clouds), self.n_neighbors)
        graph = fuzzy_graph(neighbors, drop_below=1.0 / max(self.n_epochs, 1))
        self.n_edges_ = int(graph.heads.numel())
        overlaps = [
            neighborhood_overlap(neighbors.indices, o)
            for o in range(1, min(self.alignment_window_size, n_layers - 1) + 1)
        ]
        layout = self._optimize(torch.from_numpy(start), graph, overlaps, generator)
        self.embedding_ = fill_nonfinite(layout, clouds)
        return self

    def fit_transform(self, X, y=None, init: np.ndarray | None = None) -> np.ndarray:
        return self.fit(X, y, init=init).embedding_

    @torch.no_grad()
    def _optimize(
        self, start: torch.Tensor, graph, overlaps: list[torch.Tensor], generator: torch.Generator
    ) -> np.ndarray:
        device = torch.device(self.device)
        n_layers, n_points, dim = start.shape
        n_total = n_layers * n_points
        # coordinates as rows (dim, n_total): every elementwise op runs on long vectors
        y = start.reshape(-1, dim).T.contiguous().to(device)
        # the graph is symmetric: keep each edge once and move both of its ends
        once = graph.heads < graph.tails
        heads, tails = graph.heads[once].to(device), graph.tails[once].to(device)
        n_edges = int(heads.numel())
        # scatter matrix (n_total, n_edges): +w at an edge's head, -w at its tail. A sparse
        # CSR product sums forces per point ~10x faster than index_add_ on CPU.
        weights = graph.weights[once]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            scatter = (
                torch.sparse_coo_tensor(
                    torch.stack(
                        [
                            torch.cat([graph.heads[once], graph.tails[once]]),
                            torch.arange(n_edges).repeat(2),
                        ]
                    ),
                    torch.cat([weights, -weights]),
                    (n_total, n_edges),
                )
                .coalesce()
                .to_sparse_csr()
            )
        scatter = scatter.to(device)
        # expected negative samples per point per epoch, spread over n_negative draws
        neg_scale = (self.negative_sample_rate * graph.degree / self.n_negative).to(device)
        layer_base = (torch.arange(n_total) // n_points * n_points).to(device)
        # one random pool of partners, shifted by a random amount each epoch (cheap draws)
        pool = torch.randint(0, n_points, (n_total, self.n_negative), generator=generator)
        shifts = torch.randint(0, n_points, (self.n_epochs,), generator=generator).tolist()
        pool = pool.to(device)
        # the alignment pull acts once per attraction sample of a point, as in AlignedUMAP
        samples = (2.0 * graph.degree).to(device).reshape(n_layers, n_points)
        pulls = [
            (o, self.alignment_regularisation * math.exp(-(o - 1)) * overlap.to(device))
            for o, overlap in enumerate(overlaps, start=1)
        ]
        a, b, gamma = UMAP_A, UMAP_B, self.repulsion_strength
        for epoch in range(self.n_epochs):
            alpha = self.learning_rate * (1.0 - epoch / self.n_epochs)
            # attraction along edges; d2^b = exp(b log d2) saves a pow
            diff = y.index_select(1, heads) - y.index_select(1, tails)  # (dim, n_edges)
            d2 = (diff * diff).sum(0).clamp_min_(1e-12)  # (n_edges,)
            d2b = torch.exp(b * torch.log(d2))
            coeff = -2.0 * a * b * d2b / (d2 * (a * d2b + 1.0))
            force = (diff * coeff).clamp_(-CLIP, CLIP)  # (dim, n_edges)
            grad = (scatter @ force.T).T  # (dim, n_total)
            # repulsion from random points of the same layer
            neg = (pool + shifts[epoch]).remainder_(n_points).add_(layer_base[:, None])
            diff = y[:, :, None] - y.index_select(1, neg.reshape(-1)).reshape(
                dim, n_total, self.n_negative
            )  # (dim, n_total, n_negative)
            d2 = (diff * diff).sum(0)  # (n_total, n_negative)
            d2b = torch.exp(b * torch.log(d2.clamp_min(1e-12)))
            coeff = torch.where(d2 > 0, 2.0 * gamma * b / ((0.001 + d2) * (a * d2b + 1.0)), 0.0)
            grad += (coeff * diff).clamp_(-CLIP, CLIP).sum(2) * neg_scale
            # alignment: particle i towards particle i in the layers around it
            y3 = y.view(dim, n_layers, n_points)
            g3 = grad.view(dim, n_layers, n_points)
            for o, weight in pulls:
                pull = (weight * (y3[:, o:] - y3[:, :-o])).clamp_(-CLIP, CLIP)
                g3[:, :-o] += pull * samples[:-o]
                g3[:, o:] -= pull * samples[o:]
            y += alpha * grad.clamp_(-CLIP, CLIP)
        return y.T.reshape(n_layers, n_points, dim).cpu().numpy()


class AlignedUMAPProjection(Estimator):
    """The reference: umap-learn's AlignedUMAP with identity relations between layers.

    Slow (minutes for 31 layers × 1024 particles on 2 cores); kept to measure the fast mode
    against. Points UMAP leaves disconnected (NaN) are placed among their cloud neighbours.

    Attributes:
        embedding_: (n_layers, n_points, n_components) float32 finite layouts.
    """

    def __init__(
        self,
        n_components: int = 3,
        n_neighbors: int = 15,
        n_epochs: int = 200,
        alignment_regularisation: float = 1e-2,
        alignment_window_size: int = 3,
        random_state: int | None = 0,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.n_epochs = n_epochs
        self.alignment_regularisation = alignment_regularisation
        self.alignment_window_size = alignment_window_size
        self.random_state = random_state

    def fit(self, X, y=None) -> AlignedUMAPProjection:
        from umap import AlignedUMAP

        clouds = as_clouds(X)
        n_layers, n_points, _ = clouds.shape
        if n_layers < 2 or n_points <= self.n_neighbors:
            raise ValueError(
                f"aligned-umap needs at least 2 layers and more than "
                f"{self.n_neighbors} particles; got {clouds.shape[:2]}"
            )
        relations = [{i: i for i in range(n_points)} for _ in range(n_layers - 1)]
        mapper = AlignedUMAP(
            n_components=self.n_components,
            n_neighbors=self.n_neighbors,
            n_epochs=self.n_epochs,
            random_state=self.random_state,
            alignment_regularisation=self.alignment_regularisation,
            alignment_window_size=self.alignment_window_size,
        )
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
            mapper.fit(list(clouds), relations=relations)
        self.embedding_ = fill_nonfinite(np.stack(mapper.embeddings_), clouds)
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).embedding_


class IndependentUMAPProjection(Estimator):
    """umap-learn's UMAP on each layer separately, each layout rotated onto the previous one.

    Attributes:
        embedding_: (n_layers, n_points, n_components) float32 finite layouts.
    """

    def __init__(
        self,
        n_components: int = 3,
        n_neighbors: int = 15,
        n_epochs: int = 200,
        random_state: int | None = 0,
    ):
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.n_epochs = n_epochs
        self.random_state = random_state

    def fit(self, X, y=None) -> IndependentUMAPProjection:
        from umap import UMAP

        clouds = as_clouds(X)
        layouts = []
        for cloud in clouds:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
                emb = UMAP(
                    n_components=self.n_components,
                    n_neighbors=self.n_neighbors,
                    n_epochs=self.n_epochs,
                    random_state=self.random_state,
                ).fit_transform(cloud)
            emb = fill_nonfinite(emb[None], cloud[None])[0]
            if layouts:
                emb = (emb - emb.mean(0)) @ procrustes_rotation(emb, layouts[-1])
            layouts.append(emb.astype(np.float32))
        self.embedding_ = np.stack(layouts)
        return self

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).embedding_


def make_projection(mode: ProjectionMode, random_state: int | None = 0, **params) -> Estimator:
    """The estimator for a projection mode ("fast", "aligned-umap" or "independent")."""
    classes = {
        "fast": FastAlignedProjection,
        "aligned-umap": AlignedUMAPProjection,
        "independent": IndependentUMAPProjection,
    }
    if mode not in classes:
        raise ValueError(f"unknown projection {mode!r}: use {', '.join(PROJECTION_MODES)}")
    return classes[mode](random_state=random_state, **params)
