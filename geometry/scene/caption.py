"""The frame's one-line caption: the figures line explained in words (no plotter here)."""

from __future__ import annotations

import numpy as np

from layerscan.geometry.scene.figures_text import r2_warning

CAPTIONS = (
    "token trust: share of each token's nearest neighbours in the model that stay nearest in "
    "3D · distance corr.: how well 3D distances follow the model's · PCA-3: the same for a "
    "plain 3-axis projection, the baseline",
    "token trust: share of each token's model neighbours kept near it in 3D · distance corr.: "
    "3D vs model distances · PCA-3: plain projection (baseline)",
    "trust: model neighbours kept in 3D · corr.: 3D vs model distances · PCA-3: baseline",
    "trust, corr.: how faithful 3D is · PCA-3: baseline",
)
"""The caption, longest first: the longest that fits the frame's width is shown."""
FALLBACK_NOTE = "the layout is PCA-3 itself (no better layout found), so its figures equal PCA-3's"
"""Shown instead of the caption when the layout fell back to its PCA start."""


def is_pca_fallback(scan) -> bool:
    """Whether the picture is PCA-3 itself: as the scan records (`step_layouts`, last step), or
    for scans without that record, when its figures equal PCA-3's at every layer."""
    layouts = getattr(scan, "step_layouts", None)
    if layouts:
        return layouts[-1] == "pca"
    pairs = (
        (scan.token_trust, scan.baseline_trust),
        (scan.distance_correlation, scan.baseline_correlation),
    )
    return all(np.allclose(np.asarray(a), np.asarray(b), atol=1e-6) for a, b in pairs)


def caption_for(scan, fits) -> str:
    """The caption line of a scan.

    Args:
        scan: the Scan drawn.
        fits: `fits(text) -> bool`, whether a text fits the frame's width.

    Returns:
        the PCA-fallback note when the layout is PCA-3 itself, else the longest explanation
        of the figures that fits.
    """
    if is_pca_fallback(scan):
        return FALLBACK_NOTE
    for text in CAPTIONS:
        if fits(text):
            return text
    return CAPTIONS[-1]


def warning_for(scan) -> str | None:
    """A warning line when the autoencoder keeps under half of the prompt's states at some
    layer (prompt-centred R², last step: figures_text.r2_warning), else None."""
    return r2_warning(np.asarray(scan.prompt_r2)[-1]) or None
