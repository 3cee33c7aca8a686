"""Two prompts in one common space: joint layouts, per-particle displacement, divergence."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from layerscan.geometry.scan_file import diverges  # noqa: F401 - re-exported for callers


class CommonLayouts(NamedTuple):
    """Layouts of A and B fitted together, so that coordinates compare layer by layer."""

    positions_a: np.ndarray
    """(n_layers+1, n_particles, 3) float32"""
    positions_b: np.ndarray
    """(n_layers+1, n_particles, 3) float32"""


class Divergence(NamedTuple):
    """How far B's particles are from A's, layer by layer."""

    displacement_cloud: np.ndarray
    """(n_layers+1, n_particles) float32 |cloud_b - cloud_a|."""
    displacement_3d: np.ndarray
    """(n_layers+1, n_particles) float32 |pos_b - pos_a|."""
    divergence: np.ndarray
    """(n_layers+1,) float32 mean cloud displacement."""
    peak_layer: int
    """Layer where `divergence` peaks (the first, on ties)."""


def common_layouts(
    clouds_a: np.ndarray, clouds_b: np.ndarray, project: Callable[[np.ndarray], np.ndarray]
) -> CommonLayouts:
    """Lay out A and B in one space per layer by projecting their concatenated clouds.

    A particle whose cloud vector is identical in A and B gets the same 3D position in both,
    so a prompt diffed with itself has exactly zero displacement.

    Args:
        clouds_a, clouds_b: (n_layers+1, n_particles, d_particle).
        project: (n_layers+1, n_points, d) → (n_layers+1, n_points, 3) layouts.
    """
    n_particles = clouds_a.shape[1]
    if np.array_equal(clouds_a, clouds_b):
        layouts = project(clouds_a)  # (n_layers+1, n_particles, 3)
        return CommonLayouts(layouts, layouts.copy())
    joint = np.concatenate([clouds_a, clouds_b], axis=1)  # (n_layers+1, 2 n_particles, d)
    layouts = project(joint)  # (n_layers+1, 2 n_particles, 3)
    positions_a = layouts[:, :n_particles].copy()
    positions_b = layouts[:, n_particles:].copy()
    same = (clouds_a == clouds_b).all(-1)  # (n_layers+1, n_particles)
    positions_b[same] = positions_a[same]
    return CommonLayouts(positions_a, positions_b)


def divergence(
    clouds_a: np.ndarray, clouds_b: np.ndarray, positions_a: np.ndarray, positions_b: np.ndarray
) -> Divergence:
    """Per-particle displacement in the cloud and in 3D, and its mean per layer.

    Args:
        clouds_a, clouds_b: (n_layers+1, n_particles, d_particle).
        positions_a, positions_b: (n_layers+1, n_particles, 3) in one common space.
    """
    cloud = np.linalg.norm(clouds_b.astype(np.float64) - clouds_a, axis=-1)  # (L+1, N)
    space = np.linalg.norm(positions_b.astype(np.float64) - positions_a, axis=-1)  # (L+1, N)
    curve = cloud.mean(1)  # (n_layers+1,)
    return Divergence(
        cloud.astype(np.float32),
        space.astype(np.float32),
        curve.astype(np.float32),
        int(np.argmax(curve)),
    )


def token_divergence(hidden_a: np.ndarray, hidden_b: np.ndarray) -> np.ndarray:
    """Relative distance of the two prompts' hidden states at each shared token position.

    |h_a - h_b| / mean(|h_a|, |h_b|) per layer and position, over the shorter prompt. For a
    causal model, positions before the first differing token see identical inputs.

    Args:
        hidden_a: (n_layers+1, n_tokens_a, d_model); hidden_b: (n_layers+1, n_tokens_b, d_model).

    Returns:
        (n_layers+1, min(n_tokens_a, n_tokens_b)) float32.
    """
    n = min(hidden_a.shape[1], hidden_b.shape[1])
    a = hidden_a[:, :n].astype(np.float64)
    b = hidden_b[:, :n].astype(np.float64)
    scale = (np.linalg.norm(a, axis=-1) + np.linalg.norm(b, axis=-1)) / 2  # (L+1, n)
    distance = np.linalg.norm(a - b, axis=-1)  # (n_layers+1, n)
    return (distance / np.maximum(scale, 1e-12)).astype(np.float32)


def differing_tokens(ids_a: list[int], ids_b: list[int]) -> list[int]:
    """Positions, over the shorter prompt, where the token ids differ."""
    return [i for i, (x, y) in enumerate(zip(ids_a, ids_b, strict=False)) if x != y]
