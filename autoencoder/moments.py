"""Per-layer corpus statistics of hidden states (mean, scale, covariance), summed in one pass."""

from __future__ import annotations

import torch


class StateMoments:
    """Running count, sum and outer-product sum of every layer's states (float64).

    The sums are taken around a shift (each layer's mean of the first states added), so that a
    large mean costs no precision; `statistics` moves them to any centre exactly.

    Args:
        n_layers: transformer blocks (layers seen: n_layers + 1).
        d_model: hidden size.
    """

    def __init__(self, n_layers: int, d_model: int) -> None:
        self.count = 0
        self.shift = torch.zeros(n_layers + 1, d_model, dtype=torch.float64)
        self.total = torch.zeros(n_layers + 1, d_model, dtype=torch.float64)
        self.outer = torch.zeros(n_layers + 1, d_model, d_model, dtype=torch.float64)

    def add(self, states: torch.Tensor) -> None:
        """Add one window's states, (n_layers+1, n_tokens, d_model)."""
        if self.count == 0:
            self.shift = states.double().mean(1)  # (n_layers+1, d_model)
        shifted = states.double() - self.shift[:, None]  # (n_layers+1, n_tokens, d_model)
        self.total += shifted.sum(1)
        self.outer.baddbmm_(shifted.transpose(1, 2), shifted)  # (n_layers+1, d_model, d_model)
        self.count += states.shape[1]

    def mean(self) -> torch.Tensor:
        """(n_layers+1, d_model) float64 mean state of each layer."""
        return self.shift + self.total / self.count

    def statistics(
        self, mean: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What `ParticleAutoencoder.set_statistics` takes, around `mean` (default: their own).

        Returns:
            mean (n_layers+1, d_model); scale (n_layers+1,), the RMS distance of the states
            from the mean; covariance (n_layers+1, d_model, d_model) of the states centred on
            the mean and divided by the scale. All float32.
        """
        if self.count == 0:
            raise ValueError("no states were added")
        mean = self.mean() if mean is None else mean.double()
        delta = mean - self.shift  # (n_layers+1, d_model)
        # with x' = x - shift and d = m - shift:
        # sum (x - m)(x - m)^T = sum x'x'^T - s' d^T - d s'^T + n d d^T, s' = sum x'
        cross = self.total[:, :, None] * delta[:, None]  # (n_layers+1, d_model, d_model)
        scatter = (
            self.outer
            - cross
            - cross.transpose(1, 2)
            + self.count * delta[:, :, None] * delta[:, None]
        )
        variance = scatter.diagonal(dim1=1, dim2=2).sum(-1) / (self.count * mean.shape[1])
        covariance = scatter / (self.count * variance.clamp_min(1e-12)[:, None, None])
        return mean.float(), variance.sqrt().float(), covariance.float()
