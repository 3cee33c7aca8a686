"""The per-layer activation image: layers x hidden dimensions, of one model or of B - A."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np

from layerscan.core.errors import LayerscanError

if TYPE_CHECKING:  # the scene draws a Heatmap; this module never imports capture at run time
    from layerscan.autoencoder.capture.capture_file import Capture

TokenMode = Literal["last", "mean"]
TOKEN_MODES = ("last", "mean")


@dataclass(frozen=True)
class HeatmapOptions:
    """What the activation image shows and how its colours are scaled."""

    token: TokenMode = "last"
    """last: the last token's state at every layer; mean: the mean over the prompt's tokens."""
    clip_percentile: float = field(default=99.0, metadata={"metavar": "P"})
    """The colour scale runs symmetrically from -v to +v, v = this percentile of |value| over
    the whole image; larger values saturate (100: v = the largest |value|)."""
    window_size: tuple[int, int] = field(default=(1280, 720), metadata={"flag": "resolution"})
    """Image size in pixels."""

    def __post_init__(self) -> None:
        if self.token not in TOKEN_MODES:
            raise LayerscanError(f"unknown --token {self.token!r}: use last or mean")
        if not (math.isfinite(self.clip_percentile) and 0 < self.clip_percentile <= 100):
            raise LayerscanError(
                f"--clip-percentile must be in (0, 100], got {self.clip_percentile}"
            )
        if len(self.window_size) != 2 or min(self.window_size) < 150:
            raise LayerscanError(
                f"--resolution must be WIDTHxHEIGHT, at least 200x150, got {self.window_size}"
            )


@dataclass
class Heatmap:
    """One activation image, ready to draw (the scene reads this record only)."""

    values: np.ndarray
    """(n_layers+1, d_model) float32: row 0 the embeddings, then block 1, 2, ..."""
    layer_names: list[str]
    """(n_layers+1,) "embeddings", "block 1", ..."""
    title: str
    """What the image shows: model(s), token mode, normalization."""
    prompt: str
    limit: float
    """The colour scale runs from -limit to +limit (see HeatmapOptions.clip_percentile)."""
    clip_percentile: float
    difference: bool = False
    """Whether `values` is model B minus model A."""

    @property
    def n_layers(self) -> int:
        return self.values.shape[0] - 1

    @property
    def d_model(self) -> int:
        return self.values.shape[1]


def activations(hidden: np.ndarray, token: TokenMode) -> np.ndarray:
    """(n_layers+1, n_tokens, d_model) states → (n_layers+1, d_model) per-layer image rows."""
    if token not in TOKEN_MODES:
        raise LayerscanError(f"unknown --token {token!r}: use last or mean")
    hidden = np.asarray(hidden, np.float32)
    return hidden[:, -1] if token == "last" else hidden.mean(axis=1)  # (L+1, d_model)


def color_limit(values: np.ndarray, percentile: float) -> float:
    """The symmetric colour limit: `percentile` of |values|; 1.0 for an all-zero image."""
    limit = float(np.percentile(np.abs(values), percentile)) if values.size else 0.0
    if limit <= 0:
        limit = float(np.abs(values).max()) if values.size else 0.0
    return limit if limit > 0 else 1.0


def heatmap_captures(
    capture_a: Capture, capture_b: Capture | None = None, options: HeatmapOptions | None = None
) -> Heatmap:
    """The activation image of one capture, or B - A of two captures of the same shapes.

    Args:
        capture_a: the prompt through model A.
        capture_b: the same prompt through model B (a fine-tune or adapter of A), or None.
        options: token mode and colour scale.
    """
    options = options or HeatmapOptions()
    values = activations(capture_a.hidden, options.token)  # (n_layers+1, d_model)
    what = "last token" if options.token == "last" else "mean over tokens"
    title = f"{capture_a.model_id} · {what} · {capture_a.normalization}"
    if capture_b is not None:
        if (
            capture_b.hidden.shape[0] != capture_a.hidden.shape[0]
            or capture_b.d_model != capture_a.d_model
        ):
            raise LayerscanError(
                f"{capture_b.model_id} and {capture_a.model_id} differ in "
                f"shape; a difference image needs the same layers and hidden "
                f"size"
            )
        values = activations(capture_b.hidden, options.token) - values  # (n_layers+1, d_model)
        title = f"B - A · B {capture_b.model_id} · A {capture_a.model_id} · {what}"
    return Heatmap(
        values=values.astype(np.float32),
        layer_names=list(capture_a.layer_names),
        title=title,
        prompt=capture_a.prompt,
        limit=color_limit(values, options.clip_percentile),
        clip_percentile=options.clip_percentile,
        difference=capture_b is not None,
    )
