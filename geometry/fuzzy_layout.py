"""The token layout's objective for long prompts: UMAP's fuzzy cross-entropy, stress and a pull
between layers, estimated from nearest neighbours and random pairs (cost linear in tokens).

From about 60 tokens, t-SNE's divergence over every pair is both slower and less faithful
than UMAP's fuzzy-set cross-entropy (per-layer UMAP-3 kept neighbourhoods better than it from
~130 tokens). Here each layer gets UMAP's fuzzy neighbour graph: its edges
attract, a few random tokens per token repel (negative sampling), a scale-free stress over a
fixed sample of pairs keeps the global arrangement (distance correlation), and a pull of each
token towards its own place in the neighbouring layers keeps layers aligned.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from layerscan.geometry.neighbors import fuzzy_graph, nearest_neighbors, pairwise_distances

FUZZY_MIN_TOKENS = 64
"""From this many tokens the layout fits this objective; shorter prompts use t-SNE's
divergence over every pair (`TokenLayout`). On prefixes of the tuning prompts the fuzzy
objective kept neighbourhoods better from about 60 tokens and not reliably at 45."""
FUZZY_NEIGHBORS = 10
"""Nearest neighbours per token in the fuzzy graph."""
FUZZY_ITERATIONS = 150
"""Adam steps, the step size decaying linearly to 0 (as UMAP's)."""
FUZZY_LEARNING_RATE = 0.15
"""Adam's first step, in units of the ±10 frame."""
NEGATIVES = 5
"""Random tokens per token that repel it, drawn afresh each step (UMAP's negative samples)."""
STRESS_PARTNERS = 12
"""Random partners per token for the stress, fixed for the fit."""
STRESS_PER_TOKEN = 40.0
"""The stress weighs this much per token (times `TokenLayout.stress_weight`): less lets
distance correlation fall below PCA-3's on prompts of a few hundred tokens."""
ALIGNMENT_SCALE = 120.0
"""The pull between layers weighs `ALIGNMENT_SCALE * TokenLayout.alignment * n ** 1.5`: the
cross-entropy's forces grow with the tokens; a weaker pull (70) let consecutive layers differ
more than the t-SNE layout's did (Procrustes disparity 5-20 % higher on held-out prompts)."""
UMAP_A, UMAP_B = 1.576943460405378, 0.8950608781227859
"""UMAP's output kernel 1 / (1 + a d^2b) for min_dist=0.1, spread=1."""


class FuzzyPairs(NamedTuple):
    """The pairs a long prompt's layout is fitted on; points are flat (layer * n + token)."""

    heads: torch.Tensor
    """(n_edges,) flat index of each fuzzy-graph edge's point (both directions stored)."""
    tails: torch.Tensor
    """(n_edges,) flat index of its neighbour (same layer)."""
    weights: torch.Tensor
    """(n_edges,) membership strength in [0, 1]."""
    degree: torch.Tensor
    """(n_layers, n) summed membership of each token: how hard random tokens repel it."""
    partners: torch.Tensor
    """(n_layers, n, STRESS_PARTNERS) the stress's random partners."""
    target: torch.Tensor
    """(n_layers, n * STRESS_PARTNERS) hidden distances to those partners."""


def random_partners(n_layers: int, n: int, m: int, generator: torch.Generator) -> torch.Tensor:
    """(n_layers, n, m) random other tokens of every token (never itself)."""
    other = torch.randint(0, n - 1, (n_layers, n, m), generator=generator)
    return other + (other >= torch.arange(n)[:, None]).long()


def fuzzy_pairs(states: np.ndarray, generator: torch.Generator) -> FuzzyPairs:
    """UMAP's fuzzy graph and random stress partners of every layer.

    Args:
        states: (n_layers, n, d) token states.
    """
    x = torch.from_numpy(np.asarray(states, np.float32))  # (n_layers, n, d)
    n_layers, n, _ = x.shape
    graph = fuzzy_graph(nearest_neighbors(x, FUZZY_NEIGHBORS))
    partners = random_partners(n_layers, n, STRESS_PARTNERS, generator)
    target = torch.stack(
        [
            pairwise_distances(layer).gather(1, others)  # one layer's matrix at a time
            for layer, others in zip(x, partners, strict=True)
        ]
    )  # (n_layers, n, STRESS_PARTNERS)
    return FuzzyPairs(
        graph.heads,
        graph.tails,
        graph.weights,
        graph.degree.view(n_layers, n),
        partners,
        target.flatten(1),
    )


def _gathered_d2(y: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """(n_layers, n, dim), (n_layers, n, m) → (n_layers, n, m) squared distances."""
    n_layers, n, dim = y.shape
    m = others.shape[-1]
    gathered = y.gather(1, others.reshape(n_layers, n * m, 1).expand(-1, -1, dim))
    return (y[:, :, None] - gathered.view(n_layers, n, m, dim)).square().sum(-1)


def fuzzy_loss(
    y: torch.Tensor,
    pairs: FuzzyPairs,
    generator: torch.Generator,
    stress_weight: float,
    alignment: float,
) -> torch.Tensor:
    """Cross-entropy + stress + pull between layers of layouts y: (n_layers, n, dim), ±10."""
    n_layers, n, dim = y.shape
    flat = y.reshape(n_layers * n, dim)
    ends = [flat.gather(0, i[:, None].expand(-1, dim)) for i in (pairs.heads, pairs.tails)]
    d2 = (ends[0] - ends[1]).square().sum(-1).clamp_min(1e-12)  # (n_edges,)
    attraction = (pairs.weights * torch.log1p(UMAP_A * d2.pow(UMAP_B))).sum()
    # -log(1 - q) of random pairs, each token's share scaled by its degree (UMAP samples
    # negatives per sampled edge); 1e-3 keeps coincident points finite, as UMAP's
    kernel = UMAP_A * _gathered_d2(y, random_partners(n_layers, n, NEGATIVES, generator))
    kernel = kernel.clamp_min(1e-12).pow(UMAP_B)  # (n_layers, n, NEGATIVES)
    repulsion = (pairs.degree[..., None] * (torch.log1p(kernel) - torch.log(kernel + 1e-3))).sum()
    dist = (_gathered_d2(y, pairs.partners) + 1e-12).sqrt().flatten(1)
    cos = (dist * pairs.target).sum(-1) / (dist.norm(dim=-1) * pairs.target.norm(dim=-1)).clamp_min(
        1e-300
    )
    stress = (1.0 - cos.square()).sum()  # scale-free: 1 - cos² after the best scale
    radius2 = (y - y.mean(1, keepdim=True)).square().sum(-1).mean(-1)  # (n_layers,)
    step = (y[1:] - y[:-1]).square().sum(-1).mean(-1)  # (n_layers-1,)
    drift = (step / (0.5 * (radius2[1:] + radius2[:-1])).clamp_min(1e-300)).sum()
    return (
        attraction
        + repulsion
        + stress_weight * STRESS_PER_TOKEN * n * stress
        + alignment * ALIGNMENT_SCALE * n**1.5 * drift
    )


def fit_fuzzy(
    states: np.ndarray,
    start: np.ndarray,
    n_iter: int,
    stress_weight: float,
    alignment: float,
) -> np.ndarray:
    """Optimise layouts from `start` (n_layers, n, dim) ±10 on `states` (n_layers, n, d).

    Deterministic (seeded draws), float32.

    Returns:
        (n_layers, n, dim) float64 layouts.
    """
    generator = torch.Generator().manual_seed(0)
    pairs = fuzzy_pairs(states, generator)
    y = torch.from_numpy(np.asarray(start, np.float32)).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([y], lr=FUZZY_LEARNING_RATE)
    for step in range(n_iter):
        for group in optimizer.param_groups:
            group["lr"] = FUZZY_LEARNING_RATE * (1.0 - step / n_iter)
        optimizer.zero_grad()
        fuzzy_loss(y, pairs, generator, stress_weight, alignment).backward()
        optimizer.step()
    return y.detach().double().numpy()
