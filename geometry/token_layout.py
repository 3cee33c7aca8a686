"""Token places in 3D, set by the hidden states, and each token's particles grouped around them.

The picture's geometry is the model's: every token gets one place per layer, laid out from the
token hidden states themselves, and its particles form a small group around that place whose
arrangement shows the particles' own detail. Two tokens close in 3D are tokens whose hidden
states are close (measured end to end by `faithfulness.token_figures`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from layerscan.geometry.estimator import Estimator
from layerscan.geometry.faithfulness import (
    distance_correlations,
    mean_ranks,
    pca_baseline,
    token_k,
    trustworthiness_of,
)
from layerscan.geometry.fuzzy_layout import FUZZY_ITERATIONS, FUZZY_MIN_TOKENS, fit_fuzzy
from layerscan.geometry.neighbors import pairwise_distances
from layerscan.geometry.projection import procrustes_rotation
from layerscan.geometry.rank_polish import POLISH_MAX_TOKENS, POLISH_STEPS, polish
from layerscan.geometry.scan_file import token_centroids

PERPLEXITY_MAX = 10.0
"""Perplexity of the neighbour probabilities for long prompts (short ones use (n - 1) / 3)."""
DENSE_ITERATIONS = 200
"""Adam steps over every pair of a short prompt (`n_iter` left None)."""
STRESS_TOKENS = 32
"""The stress counts as much as the divergence times the number of tokens, up to this many:
past it, more weight flattened the neighbourhoods (measured with the earlier sparse t-SNE
path at 1024 tokens)."""


PULL_POWER = 8.0
"""How sharply the pull between two layers weakens where the model changes its geometry
(`layer_pull`); 0 pulls every pair of layers alike. 4, 8 and 16 were tried on our short and
held-out prompts of up to 61 tokens: 8 took the last layer's distance correlation from 0.013
below PCA-3's (mean) to 0.014 above, 4 to 0.008 above with less disparity, 16 to 0.017 above
with more."""
PULL_TOKENS = 200
"""Tokens the pull's Spearman correlations are measured on, evenly spaced through a longer
prompt (every pair among them: a weight needs no more)."""


def layer_pull(states: np.ndarray) -> np.ndarray:
    """(n_layers-1,) weight in [0, 1] of the pull between each two consecutive layers: how much
    of the model's own distance order survives from one layer to the next (Spearman of the two
    layers' token distances, over PULL_TOKENS tokens at most), against the prompt's typical pair
    of layers, to PULL_POWER.

    Most pairs of layers keep their order almost whole (0.95-0.99), but a few do not: the
    first blocks, and the last state, which the model's final norm reshapes (0.3-0.85 on our
    prompts). A uniform pull dragged the last layer's picture towards the one before it, so
    the frame shown by default was the least faithful (distance correlation 0.62 where PCA-3 of
    the same layer gives 0.90, on a 61-token code prompt). Pairs as ordered as the typical one
    pull fully; a pair whose order breaks pulls as little as the model keeps. A layer whose
    tokens all share one state has no order to keep: its pairs pull fully, as before.
    """
    n_layers, n = states.shape[:2]
    if n_layers < 2 or n < 3:
        return np.ones(max(n_layers - 1, 0))
    tokens = np.unique(np.linspace(0, n - 1, min(n, PULL_TOKENS)).round().astype(int))
    first, second = np.triu_indices(len(tokens), 1)
    ranks = []
    for layer in torch.from_numpy(np.asarray(states[:, tokens], np.float64)):
        distances = pairwise_distances(layer).numpy()[first, second]
        scale = float(layer.norm(dim=-1).max())  # the matrix product leaves ~1e-8 of it
        ranks.append(mean_ranks(distances) if np.ptp(distances) > 1e-6 * scale else None)
    kept = np.array(
        [
            np.corrcoef(a, b)[0, 1] if a is not None and b is not None else np.nan
            for a, b in zip(ranks[:-1], ranks[1:], strict=True)
        ]
    )
    typical = float(np.nanmedian(kept)) if np.isfinite(kept).any() else np.nan
    if not typical > 0:
        return np.ones(n_layers - 1)
    return np.where(np.isfinite(kept), np.clip(kept / typical, 0.0, 1.0) ** PULL_POWER, 1.0)


def _conditional_probabilities(
    d2: torch.Tensor, perplexity: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """t-SNE's p(j | i) over the last axis, by bisection on each row's precision.

    Args:
        d2: (..., m) squared distances of each point to m candidates, about unit mean.
        mask: (..., m) bool candidates to leave out (a point itself), or None.
    """
    low = torch.full(d2.shape[:-1], 1e-6, dtype=d2.dtype)
    high = torch.full_like(low, 1e6)
    target = np.log(perplexity)
    for _ in range(60):  # geometric bisection of the precision beta, row by row
        beta = (low * high).sqrt()
        logits = -d2 * beta[..., None]
        if mask is not None:
            logits = logits.masked_fill(mask, -torch.inf)
        p = torch.softmax(logits, -1)
        entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
        too_flat = entropy > target  # too many neighbours: sharpen
        low = torch.where(too_flat, beta, low)
        high = torch.where(too_flat, high, beta)
    return p


def _neighbor_probabilities(distances: torch.Tensor, perplexity: float) -> torch.Tensor:
    """t-SNE's symmetric joint probabilities of each layer.

    Args:
        distances: (n_layers, n, n) pairwise distances.

    Returns:
        (n_layers, n, n) P, summing to 1 per layer, zero diagonal.
    """
    n = distances.shape[-1]
    d2 = distances.square()
    d2 = d2 / d2.sum((-1, -2), keepdim=True).clamp_min(1e-300) * n * (n - 1)  # mean 1
    p = _conditional_probabilities(d2, perplexity, torch.eye(n, dtype=torch.bool))
    return (p + p.transpose(-1, -2)) / (2 * n)


class TokenLayout(Estimator):
    """Aligned 3D places of every layer's tokens, fitted to their hidden states.

    Starts from PCA-3 of each layer (rotated onto the previous layer), the simplest faithful
    picture, and improves it with full-batch gradient steps on three terms: t-SNE's
    neighbourhood divergence (neighbours in the model stay neighbours in 3D), the
    scale-free stress of all pairwise distances (far stays far, so groups keep their global
    arrangement), and a pull of each token towards its own place in the neighbouring layers
    (smooth layer-time). Exact and deterministic: no sampling, float64. From
    FUZZY_MIN_TOKENS tokens the neighbourhood term is UMAP's fuzzy cross-entropy on a kNN
    graph instead, with sampled pairs (`fuzzy_layout`): linear cost, and it keeps
    neighbourhoods better than t-SNE's divergence at that length. The result is kept
    only if it is at least as faithful as its PCA start on each headline figure (mean and
    worst-layer token trust, mean distance correlation) and more faithful on their sum;
    otherwise the aligned PCA itself is the layout. Under
    POLISH_MAX_TOKENS tokens the one kept is then polished on the figures themselves
    (`rank_polish`: moves that make no figure of a layer worse), which is what lets short
    prompts, where no gradient layout beat PCA-3, improve on it.

    Attributes:
        embedding_: (n_layers, n_tokens, n_components) float32, about ±10 wide.
        pca_: (n_layers, n_tokens, n_components) float64 PCA of each layer (`pca_baseline`),
            before alignment: the baseline of the figures.
        start_: (n_layers, n_tokens, n_components) float64 the aligned PCA start (`aligned_pca`).
        improved_: whether the layout beat its PCA start (else it is the start).

    `n_iter` None: DENSE_ITERATIONS steps for short prompts, FUZZY_ITERATIONS for long ones.
    """

    def __init__(
        self,
        n_components: int = 3,
        n_iter: int | None = None,
        learning_rate: float = 0.08,
        stress_weight: float = 1.0,
        alignment: float = 0.05,
        perplexity: float | None = None,
        polish_steps: int = POLISH_STEPS,
    ):
        self.n_components = n_components
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.stress_weight = stress_weight
        self.alignment = alignment
        self.perplexity = perplexity
        self.polish_steps = polish_steps

    def fit(self, X, y=None) -> TokenLayout:
        """Lay out X: (n_layers, n_tokens, d) token states."""
        states = np.asarray(X, dtype=np.float64)
        n_layers, n_tokens, _ = states.shape
        self.pca_ = pca_baseline(states, self.n_components)
        start = aligned_pca(states, self.n_components, self.pca_)
        self.start_ = start
        self.improved_ = False
        self.embedding_ = start.astype(np.float32)
        if n_tokens < 4 or self.n_iter == 0:
            return self
        # each pair of layers' pull; none measured where there is no pull (attention heads)
        pull = self.alignment * layer_pull(states) if self.alignment else np.zeros(n_layers - 1)
        if n_tokens >= FUZZY_MIN_TOKENS:
            n_iter = FUZZY_ITERATIONS if self.n_iter is None else self.n_iter
            out = torch.from_numpy(fit_fuzzy(states, start, n_iter, self.stress_weight, pull))
        else:
            out = self._fit_dense(states, start, pull)
        out = out - out.mean(1, keepdim=True)
        out = out * (10.0 / out.abs().amax().clamp_min(1e-300))
        result = out.double().numpy()
        mine, pca = _figures(states, [result, start])
        # kept only if no headline figure falls below PCA-3's: a gain in one (the worst
        # layer's trust) must not pay for a loss in another (the distance correlation)
        best, figures = (result, mine) if _beats(mine, pca) else (start, pca)
        if n_tokens < POLISH_MAX_TOKENS and self.polish_steps:
            polished = polish(states, best, self.polish_steps)
            (polished_figures,) = _figures(states, [polished])
            if _beats(polished_figures, figures):
                best, figures = polished, polished_figures
        self.improved_ = _beats(figures, pca)
        self.embedding_ = best.astype(np.float32)
        return self

    def _fit_dense(self, states: np.ndarray, start: np.ndarray, pull: np.ndarray) -> torch.Tensor:
        """Adam on every pair's terms, from `start` (in tenths of the frame), float64."""
        loss = self.objective(states, pull)
        y = torch.from_numpy(start / 10.0).requires_grad_(True)
        optimizer = torch.optim.Adam([y], lr=self.learning_rate)
        for _ in range(DENSE_ITERATIONS if self.n_iter is None else self.n_iter):
            optimizer.zero_grad()
            loss(y).backward()
            optimizer.step()
        return y.detach()

    def objective(self, states: np.ndarray, pull: np.ndarray) -> functools.partial:
        """The loss of layouts of `states` (n_layers, n_tokens, d) over every pair of tokens,
        with `pull` (n_layers-1,) between each two consecutive layers; layouts are in tenths
        of the ±10 frame."""
        n_tokens = states.shape[1]
        x = torch.from_numpy(np.asarray(states, np.float64))
        perplexity = self.perplexity or min(PERPLEXITY_MAX, max(2.0, (n_tokens - 1) / 3))
        distances = torch.cdist(x, x)  # (n_layers, n, n)
        p = _neighbor_probabilities(distances, perplexity)
        target = distances / distances.square().mean((-1, -2), keepdim=True).sqrt().clamp_min(
            1e-300
        )  # (n_layers, n, n) unit RMS
        upper = torch.triu(torch.ones(n_tokens, n_tokens, dtype=torch.bool), 1)
        return functools.partial(
            self._loss, p=p, target=target, upper=upper, pull=torch.from_numpy(pull)
        )

    def _loss(
        self,
        y: torch.Tensor,
        p: torch.Tensor,
        target: torch.Tensor,
        upper: torch.Tensor,
        pull: torch.Tensor,
    ) -> torch.Tensor:
        """The three terms over every pair of tokens."""
        d2 = (y[:, :, None] - y[:, None]).square().sum(-1)  # (n_layers, n, n)
        kernel = 1.0 / (1.0 + d2)
        kernel = kernel.masked_fill(torch.eye(y.shape[1], dtype=torch.bool), 0.0)
        q = kernel / kernel.sum((-1, -2), keepdim=True)
        divergence = p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(1e-300)))
        divergence = divergence.sum((-1, -2))  # (n_layers,)
        dist = (d2 + 1e-12).sqrt()[:, upper]  # (n_layers, n_pairs)
        return self._total(y, divergence, _stress(dist, target[:, upper]), pull)

    def _total(
        self, y: torch.Tensor, divergence: torch.Tensor, stress: torch.Tensor, pull: torch.Tensor
    ) -> torch.Tensor:
        """KL + stress + the pull towards neighbouring layers, each (n_layers,) summed."""
        radius2 = (y - y.mean(1, keepdim=True)).square().sum(-1).mean(-1)  # (n_layers,)
        step = (y[1:] - y[:-1]).square().sum(-1).mean(-1)  # (n_layers-1,)
        drift = (pull * step / (0.5 * (radius2[1:] + radius2[:-1])).clamp_min(1e-300)).sum()
        n_tokens = y.shape[1]
        return (
            divergence.sum()
            + self.stress_weight * min(n_tokens, STRESS_TOKENS) * stress.sum()
            + n_tokens * drift
        )


def _stress(dist: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(n_layers,) 1 - cos² between layout and hidden distances: stress after the best scale."""
    cos = (dist * target).sum(-1) / (dist.norm(dim=-1) * target.norm(dim=-1)).clamp_min(1e-300)
    return 1.0 - cos.square()


def _figures(states: np.ndarray, layouts: list[np.ndarray]) -> list[np.ndarray]:
    """The three headline figures of each layout, (3,): mean token trust, worst-layer token
    trust, mean distance correlation (the states' distances computed once)."""
    trusts = trustworthiness_of(states, layouts, token_k(states.shape[1]))
    correlations = distance_correlations(states, layouts)
    return [
        np.array([np.mean(t), np.min(t), np.mean(c)], np.float64)
        for t, c in zip(trusts, correlations, strict=True)
    ]


def _beats(figures: np.ndarray, other: np.ndarray) -> bool:
    """No headline figure below `other`'s, and their sum above it."""
    return bool(np.all(figures >= other) and figures.sum() > other.sum())


def aligned_pca(
    states: np.ndarray, n_components: int = 3, pca: np.ndarray | None = None
) -> np.ndarray:
    """PCA of each layer's token states, each rotated onto the previous layer, ±10 wide.

    Args:
        states: (n_layers, n_tokens, d).
        pca: `pca_baseline(states, n_components)` where already computed (left unchanged).

    Returns:
        (n_layers, n_tokens, n_components) float64.
    """
    out = pca_baseline(states, n_components) if pca is None else pca.copy()
    for layer in range(1, len(out)):
        out[layer] = out[layer] @ procrustes_rotation(out[layer], out[layer - 1])
    span = np.abs(out).max()
    return out * (10.0 / span) if span > 0 else out


def group_offsets(
    clouds: np.ndarray, particle_tokens: np.ndarray, places: np.ndarray, spread: float
) -> np.ndarray:
    """Each particle's 3D offset from its token's place: its cloud offset from the token's
    centroid in the cloud, through the principal 3D directions of all layers' offsets.

    Every token's offsets sum to zero, so a token's particles have its place as centroid.

    Args:
        clouds: (n_layers, n_particles, d_particle).
        particle_tokens: (n_particles,) token of each particle.
        places: (n_layers, n_tokens, 3) token places.
        spread: mean distance from its token's place of a particle that shares its token,
            as a share of the layout's mean radius.

    Returns:
        (n_layers, n_particles, 3) float64.
    """
    n_layers, _, d = clouds.shape
    n_tokens = places.shape[1]
    offsets = np.stack(
        [
            cloud - token_centroids(cloud, particle_tokens, n_tokens)[0][particle_tokens]
            for cloud in clouds
        ]
    )  # (n_layers, n_particles, d_particle)
    flat = offsets.reshape(-1, d)
    _, vecs = np.linalg.eigh(flat.T @ flat)  # one set of directions for every layer
    axes = vecs[:, ::-1][:, :3]
    axes = axes * np.where(axes[np.abs(axes).argmax(0), range(axes.shape[1])] < 0, -1.0, 1.0)
    out = np.zeros((n_layers, clouds.shape[1], 3))
    out[..., : axes.shape[1]] = offsets @ axes
    radius = np.linalg.norm(places - places.mean(1, keepdims=True), axis=-1).mean(-1)
    # mean size over particles that share their token: a long prompt's lone particles sit
    # exactly at their token's place and must not blow up the few groups of two
    shared = np.bincount(particle_tokens, minlength=n_tokens)[particle_tokens] > 1
    size = (
        np.linalg.norm(out[:, shared], axis=-1).mean(-1) if shared.any() else np.zeros(n_layers)
    )  # (n_layers,)
    scale = np.where(size > 0, spread * radius / np.maximum(size, 1e-300), 0.0)
    return out * scale[:, None, None]


def grouped_positions(
    places: np.ndarray, clouds: np.ndarray, particle_tokens: np.ndarray, spread: float
) -> np.ndarray:
    """Particles at their token's place plus their group offset.

    Args:
        places: (n_layers, n_tokens, 3) token places.
        clouds: (n_layers, n_particles, d_particle).
        particle_tokens: (n_particles,) token of each particle (< n_tokens).
        spread: see `group_offsets`.

    Returns:
        (n_layers, n_particles, 3) float32.
    """
    offsets = group_offsets(clouds, particle_tokens, places, spread)
    return (places[:, particle_tokens] + offsets).astype(np.float32)
