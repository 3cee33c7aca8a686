"""Token places in 3D, set by the hidden states, and each token's particles grouped around them.

The picture's geometry is the model's: every token gets one place per layer, laid out from the
token hidden states themselves, and its particles form a small group around that place whose
arrangement shows the particles' own detail. Two tokens close in 3D are tokens whose hidden
states are close (measured end to end by `faithfulness.token_figures`).
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator

from layerscan.geometry.projection import pca_layouts

PERPLEXITY_MAX = 10.0
"""Perplexity of the neighbour probabilities for long prompts (short ones use (n - 1) / 3)."""


def _neighbor_probabilities(distances: torch.Tensor, perplexity: float) -> torch.Tensor:
    """t-SNE's symmetric joint probabilities of each layer, by bisection on the precision.

    Args:
        distances: (n_layers, n, n) pairwise distances.

    Returns:
        (n_layers, n, n) P, summing to 1 per layer, zero diagonal.
    """
    n = distances.shape[-1]
    d2 = distances.square()
    d2 = d2 / d2.sum((-1, -2), keepdim=True).clamp_min(1e-300) * n * (n - 1)  # mean 1
    eye = torch.eye(n, dtype=torch.bool)
    low = torch.full(d2.shape[:-1], 1e-6, dtype=d2.dtype)
    high = torch.full_like(low, 1e6)
    target = np.log(perplexity)
    for _ in range(60):  # geometric bisection of the precision beta, row by row
        beta = (low * high).sqrt()
        logits = (-d2 * beta[..., None]).masked_fill(eye, -torch.inf)
        p = torch.softmax(logits, -1)
        entropy = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)
        too_flat = entropy > target  # too many neighbours: sharpen
        low = torch.where(too_flat, beta, low)
        high = torch.where(too_flat, high, beta)
    p = (p + p.transpose(-1, -2)) / (2 * n)
    return p


class TokenLayout(BaseEstimator):
    """Aligned 3D places of every layer's tokens, fitted to their hidden states.

    Starts from PCA-3 of each layer (rotated onto the previous layer), the simplest faithful
    picture, and improves it with full-batch gradient steps on three terms: t-SNE's
    neighbourhood divergence (neighbours in the model stay neighbours in 3D), the
    scale-free stress of all pairwise distances (far stays far, so groups keep their global
    arrangement), and a pull of each token towards its own place in the neighbouring layers
    (smooth layer-time). Exact and deterministic: no sampling, float64.

    Attributes:
        embedding_: (n_layers, n_tokens, n_components) float32, about ±10 wide.
    """

    def __init__(self, n_components: int = 3, n_iter: int = 400, learning_rate: float = 0.05,
                 stress_weight: float = 1.0, alignment: float = 0.05,
                 perplexity: float | None = None):
        self.n_components = n_components
        self.n_iter = n_iter
        self.learning_rate = learning_rate
        self.stress_weight = stress_weight
        self.alignment = alignment
        self.perplexity = perplexity

    def fit(self, X, y=None) -> TokenLayout:
        """Lay out X: (n_layers, n_tokens, d) token states."""
        states = np.asarray(X, dtype=np.float64)
        n_layers, n_tokens, _ = states.shape
        start = pca_layouts(states.astype(np.float32), self.n_components).astype(np.float64)
        if n_tokens < 4 or self.n_iter == 0:
            self.embedding_ = start.astype(np.float32)
            return self
        x = torch.from_numpy(states)
        distances = torch.cdist(x, x)  # (n_layers, n, n)
        perplexity = self.perplexity or min(PERPLEXITY_MAX, max(2.0, (n_tokens - 1) / 3))
        p = _neighbor_probabilities(distances, perplexity)
        target = distances / distances.square().mean((-1, -2), keepdim=True).sqrt().clamp_min(
            1e-300)  # (n_layers, n, n) unit RMS
        y = torch.from_numpy(start / 10.0).requires_grad_(True)
        optimizer = torch.optim.Adam([y], lr=self.learning_rate)
        upper = torch.triu(torch.ones(n_tokens, n_tokens, dtype=torch.bool), 1)
        for _ in range(self.n_iter):
            optimizer.zero_grad()
            loss = self._loss(y, p, target, upper)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            out = y.detach()
            out = out - out.mean(1, keepdim=True)
            out = out * (10.0 / out.abs().amax().clamp_min(1e-300))
        self.embedding_ = out.numpy().astype(np.float32)
        return self

    def _loss(self, y: torch.Tensor, p: torch.Tensor, target: torch.Tensor,
              upper: torch.Tensor) -> torch.Tensor:
        d2 = (y[:, :, None] - y[:, None]).square().sum(-1)  # (n_layers, n, n)
        kernel = 1.0 / (1.0 + d2)
        kernel = kernel.masked_fill(torch.eye(y.shape[1], dtype=torch.bool), 0.0)
        q = kernel / kernel.sum((-1, -2), keepdim=True)
        divergence = (p * (torch.log(p.clamp_min(1e-300)) - torch.log(q.clamp_min(1e-300))))
        divergence = divergence.sum((-1, -2))  # (n_layers,)
        dist = (d2 + 1e-12).sqrt()[:, upper]  # (n_layers, n_pairs)
        ref = target[:, upper]
        # 1 - cos² between layout and hidden distances: stress after the best scale
        cos = (dist * ref).sum(-1) / (dist.norm(dim=-1) * ref.norm(dim=-1)).clamp_min(1e-300)
        stress = 1.0 - cos.square()
        radius2 = (y - y.mean(1, keepdim=True)).square().sum(-1).mean(-1)  # (n_layers,)
        step = (y[1:] - y[:-1]).square().sum(-1).mean(-1)  # (n_layers-1,)
        drift = (step / (0.5 * (radius2[1:] + radius2[:-1])).clamp_min(1e-300)).sum()
        return (divergence.sum() + self.stress_weight * y.shape[1] * stress.sum()
                + self.alignment * y.shape[1] * drift)


def group_offsets(clouds: np.ndarray, particle_tokens: np.ndarray, places: np.ndarray,
                  spread: float) -> np.ndarray:
    """Each particle's 3D offset from its token's place: its cloud offset from the token's
    centroid in the cloud, through the principal 3D directions of all layers' offsets.

    Every token's offsets sum to zero, so a token's particles have its place as centroid.

    Args:
        clouds: (n_layers, n_particles, d_particle).
        particle_tokens: (n_particles,) token of each particle.
        places: (n_layers, n_tokens, 3) token places.
        spread: mean particle distance from its token's place, as a share of the layout's
            mean radius.

    Returns:
        (n_layers, n_particles, 3) float64.
    """
    n_layers, _, d = clouds.shape
    n_tokens = places.shape[1]
    counts = np.bincount(particle_tokens, minlength=n_tokens)[:, None]  # (n_tokens, 1)
    offsets = np.empty(clouds.shape)
    for layer in range(n_layers):
        sums = np.zeros((n_tokens, d))
        np.add.at(sums, particle_tokens, clouds[layer].astype(np.float64))
        offsets[layer] = clouds[layer] - (sums / np.maximum(counts, 1))[particle_tokens]
    flat = offsets.reshape(-1, d)
    _, vecs = np.linalg.eigh(flat.T @ flat)  # one set of directions for every layer
    axes = vecs[:, ::-1][:, :3]
    axes = axes * np.where(axes[np.abs(axes).argmax(0), range(axes.shape[1])] < 0, -1.0, 1.0)
    out = np.zeros((n_layers, clouds.shape[1], 3))
    out[..., :axes.shape[1]] = offsets @ axes
    radius = np.linalg.norm(places - places.mean(1, keepdims=True), axis=-1).mean(-1)
    size = np.linalg.norm(out, axis=-1).mean(-1)  # (n_layers,)
    scale = np.where(size > 0, spread * radius / np.maximum(size, 1e-300), 0.0)
    return out * scale[:, None, None]
