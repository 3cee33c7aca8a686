"""The token layout's objective for long prompts: UMAP's fuzzy cross-entropy, stress and a pull
between layers, estimated from nearest neighbours and random pairs (cost linear in tokens).

From about 50 tokens, t-SNE's divergence over every pair is both slower and less faithful
than UMAP's fuzzy-set cross-entropy (per-layer UMAP-3 kept neighbourhoods better than it from
~130 tokens). Here each layer gets UMAP's fuzzy neighbour graph: its edges
attract (twice as hard for the first steps), a few random tokens per token repel (negative
sampling), a scale-free stress against the ranks of a fixed sample of pair distances keeps the
global order (distance correlation), and a pull of each token towards its own place in the
neighbouring layers keeps layers aligned.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from layerscan.geometry.neighbors import fuzzy_graph, nearest_neighbors, pairwise_distances

FUZZY_MIN_TOKENS = 48
"""From this many tokens the layout fits this objective; shorter prompts use t-SNE's
divergence over every pair (`TokenLayout`). On 24-56-token prefixes of the tuning prompts
(`scripts/tuning_long_prompts.txt`) this objective beat t-SNE's on mean trust on all six
(by 0.02 on average), on worst-layer trust on all six (five at 56 tokens) and on distance
correlation (by about 0.08), at a fraction of the cost;
48 is the cautious step the held-out 20-60-token bench was checked at."""
FUZZY_NEIGHBORS = 10
"""Nearest neighbours per token in the fuzzy graph."""
FUZZY_ITERATIONS = 180
"""Adam steps, the step size decaying linearly to 0 (as UMAP's)."""
EXAGGERATION = 2.0
"""The attraction counts this many times over for the first EXAGGERATED_SHARE of the steps
(t-SNE's early exaggeration): tokens that PCA-3 flattened together gather into their own
neighbourhoods before the repulsion spreads them (tuning prompts: worst-layer trust +0.004)."""
EXAGGERATED_SHARE = 0.25
"""Share of the steps with the attraction exaggerated."""
FUZZY_LEARNING_RATE = 0.15
"""Adam's first step, in units of the ±10 frame."""
NEGATIVES = 5
"""Random tokens per token that repel it, drawn afresh each step (UMAP's negative samples)."""
STRESS_PARTNERS = 12
"""Random partners per token for the stress, fixed for the fit."""
STRESS_PER_TOKEN = 20.0
"""The stress weighs this much per token (times `TokenLayout.stress_weight`). Against ranks
(`FuzzyPairs.target`) half the former weight (40 against raw distances) still keeps distance
correlation about 0.1-0.2 above PCA-3's on the tuning prompts; 10 gave up half that margin for
no more trust."""
ALIGNMENT_SCALE = 120.0
"""The pull between layers weighs `ALIGNMENT_SCALE * TokenLayout.alignment * n ** 1.5`: the
cross-entropy's forces grow with the tokens; a weaker pull (70) let consecutive layers differ
more than the t-SNE layout's did (Procrustes disparity 5-20 % higher on held-out prompts)."""
UMAP_A, UMAP_B = 1.576943460405378, 0.8950608781227859
"""UMAP's output kernel 1 / (1 + a d^2b) for min_dist=0.1, spread=1."""


class FuzzyPairs(NamedTuple):
    """The pairs a long prompt's layout is fitted on; points are flat (layer * n + token)."""

    heads: torch.Tensor
    """(n_edges,) flat index of each fuzzy-graph edge's point (each edge once)."""
    tails: torch.Tensor
    """(n_edges,) flat index of its neighbour (same layer)."""
    weights: torch.Tensor
    """(n_edges,) twice the membership strength in [0, 1]: the edge pulls both ways."""
    degree: torch.Tensor
    """(n_layers, n) summed membership of each token: how hard random tokens repel it."""
    partners: torch.Tensor
    """(n_layers, n, STRESS_PARTNERS) the stress's random partners."""
    target: torch.Tensor
    """(n_layers, n * STRESS_PARTNERS) rank (1 = nearest) of the hidden distance to each
    partner among the layer's sampled pairs. Distance correlation is Spearman's, and hidden
    distances are concentrated (their spread is 10-20 % of their mean), so 1 - cos² against
    raw distances barely tells near from far; against ranks the layout's distance correlation
    rose by 0.1-0.2 on the tuning prompts."""


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
    once = graph.heads < graph.tails  # the graph is symmetric: half the gathers per step
    partners = random_partners(n_layers, n, STRESS_PARTNERS, generator)
    target = torch.stack(
        [
            pairwise_distances(layer).gather(1, others)  # one layer's matrix at a time
            for layer, others in zip(x, partners, strict=True)
        ]
    ).flatten(1)  # (n_layers, n * STRESS_PARTNERS)
    ranks = target.argsort(-1).argsort(-1).float() + 1.0  # (n_layers, n * STRESS_PARTNERS)
    return FuzzyPairs(
        graph.heads[once],
        graph.tails[once],
        2.0 * graph.weights[once],
        graph.degree.view(n_layers, n),
        partners,
        ranks,
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
    alignment: torch.Tensor,
    exaggeration: float = 1.0,
) -> torch.Tensor:
    """Cross-entropy (its attraction times `exaggeration`) + stress + pull between layers of
    layouts y: (n_layers, n, dim), ±10; `alignment` (n_layers-1,) weighs each pair's pull."""
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
    drift = (alignment * step / (0.5 * (radius2[1:] + radius2[:-1])).clamp_min(1e-300)).sum()
    return (
        exaggeration * attraction
        + repulsion
        + stress_weight * STRESS_PER_TOKEN * n * stress
        + ALIGNMENT_SCALE * n**1.5 * drift
    )


def fit_fuzzy(
    states: np.ndarray,
    start: np.ndarray,
    n_iter: int,
    stress_weight: float,
    alignment: np.ndarray | float,
) -> np.ndarray:
    """Optimise layouts from `start` (n_layers, n, dim) ±10 on `states` (n_layers, n, d);
    `alignment`: the pull between each two consecutive layers (n_layers-1,), or one for all.

    Deterministic (seeded draws), float32.

    Returns:
        (n_layers, n, dim) float64 layouts.
    """
    generator = torch.Generator().manual_seed(0)
    pairs = fuzzy_pairs(states, generator)
    y = torch.from_numpy(np.asarray(start, np.float32)).clone().requires_grad_(True)
    pull = torch.tensor(np.broadcast_to(alignment, (len(start) - 1,)), dtype=torch.float32)
    optimizer = torch.optim.Adam([y], lr=FUZZY_LEARNING_RATE)
    for step in range(n_iter):
        for group in optimizer.param_groups:
            group["lr"] = FUZZY_LEARNING_RATE * (1.0 - step / n_iter)
        exaggeration = EXAGGERATION if step < EXAGGERATED_SHARE * n_iter else 1.0
        optimizer.zero_grad()
        fuzzy_loss(y, pairs, generator, stress_weight, pull, exaggeration).backward()
        optimizer.step()
    return y.detach().double().numpy()
