"""Pure timing and motion for layer-time movies: which layer and token step each frame shows."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from layerscan.core.errors import LayerscanError


class Frame(NamedTuple):
    """One movie frame: where in layer-time and token-time it sits."""

    step: int
    """Token-time step index."""
    layer: float
    """Layer position in [0, n_layers]; fractional between two layers."""
    azimuth: float
    """Camera orbit angle in degrees, relative to the start."""


def ease(t: np.ndarray | float) -> np.ndarray | float:
    """Smoothstep: 0 → 0, 1 → 1, zero velocity at both ends, so each layer gets a short rest."""
    return t * t * (3.0 - 2.0 * t)


def plan_frames(
    n_layers: int,
    n_steps: int = 1,
    frames_per_layer: float = 8,
    hold_frames: int = 0,
    token_sweep: bool = False,
    orbit_degrees: float = 0.0,
) -> list[Frame]:
    """The frame sequence of a movie.

    Without a token sweep the cloud travels layer 0 → last layer of the final token step.
    With a sweep it travels layer-time once per token step (each step adds one token).

    Args:
        n_layers: transformer blocks of the scan (it shows n_layers+1 hidden states).
        n_steps: token-time steps in the scan.
        frames_per_layer: frames spent moving from one layer to the next (fractional: the
            frames fall between layers, and the movie lasts as long at any fps).
        hold_frames: extra still frames at the start, and on the last layer of each pass.
        token_sweep: play every token step instead of only the last one.
        orbit_degrees: total camera orbit over the whole movie.
    """
    if n_layers < 0 or n_steps < 1:
        raise LayerscanError("nothing to render: the scan has no layers or no token steps")
    if frames_per_layer < 1:
        raise LayerscanError(f"frames per layer must be at least 1, got {frames_per_layer}")
    steps = range(n_steps) if token_sweep else [n_steps - 1]
    plan: list[tuple[int, float]] = []
    for i, step in enumerate(steps):
        plan += [(step, 0.0)] * (hold_frames if i == 0 else 0)
        travel = max(int(round(n_layers * frames_per_layer)), 1 if n_layers else 0)
        plan += [(step, n_layers * i / max(travel, 1)) for i in range(travel + 1)]
        plan += [(step, float(n_layers))] * hold_frames
    n = len(plan)
    return [
        Frame(step, layer, orbit_degrees * i / max(n - 1, 1))
        for i, (step, layer) in enumerate(plan)
    ]


def frames_per_layer_for(
    duration: float,
    fps: float,
    n_layers: int,
    n_steps: int = 1,
    hold_frames: int = 0,
    token_sweep: bool = False,
) -> float:
    """Frames per layer (fractional) that make a movie last about `duration` seconds at `fps`."""
    if duration <= 0 or fps <= 0:
        raise LayerscanError(f"duration and fps must be positive, got {duration} s at {fps} fps")
    passes = n_steps if token_sweep else 1
    budget = duration * fps / passes - 1 - 2 * hold_frames
    return max(1.0, budget / max(n_layers, 1))


def layer_pair(layer: float, n_layers: int) -> tuple[int, int, float]:
    """The two layers around a fractional layer in [0, n_layers] and the eased blend weight
    of the second."""
    layer = float(np.clip(layer, 0, n_layers))
    lo = int(np.floor(layer))
    hi = min(lo + 1, n_layers)
    return lo, hi, float(ease(layer - lo))


def interpolate(values: np.ndarray, layer: float) -> np.ndarray:
    """Blend per-layer values at a fractional layer.

    Args:
        values: (n_layers+1, ...) per-layer arrays, e.g. positions (n_layers+1, n_particles, 3).
        layer: fractional layer in [0, n_layers].

    Returns:
        (...) the eased linear blend of the two surrounding layers.
    """
    lo, hi, t = layer_pair(layer, values.shape[0] - 1)
    if t == 0.0 or lo == hi:
        return values[lo]
    return values[lo] + (values[hi] - values[lo]) * np.float32(t)


def nearest_layer(layer: float, n_layers: int) -> int:
    """The layer index whose overlays and connectivity a fractional layer shows."""
    lo, hi, t = layer_pair(layer, n_layers)
    return hi if t >= 0.5 else lo


def local_density(
    positions: np.ndarray, particle_tokens: np.ndarray | None = None, k: int = 10
) -> np.ndarray:
    """Local density at each particle, every token weighing 1, as a share of the densest.

    A Gaussian kernel density of the particles, each weighted 1 / (particles of its token),
    so a token routed two particles counts no more than one with a single particle (the
    routing's 1-or-2 pattern on long prompts is not the model's). The kernel's width is the
    median distance from a token's place to its k-th nearest other token's (at most a
    quarter of the other tokens, so a short prompt's density is not one blur).

    Args:
        positions: (n_layers+1, n_particles, 3) layouts.
        particle_tokens: (n_layers+1, n_particles) token of each particle; None: each
            particle its own token.
        k: neighbours that set the kernel width.

    Returns:
        (n_layers+1, n_particles) float32 in [0, 1]: density over the layer's 98th
        percentile (1 = densest, clipped); a uniform density is 1 everywhere.
    """
    import torch
    from scipy.spatial import cKDTree

    from layerscan.geometry.scan_file import token_centroids, token_weights

    n_frames, n_particles, _ = positions.shape
    if particle_tokens is None:
        particle_tokens = np.broadcast_to(np.arange(n_particles), (n_frames, n_particles))
    out = np.zeros((n_frames, n_particles), np.float32)
    for layer in range(n_frames):
        pts, owner = positions[layer].astype(np.float64), np.asarray(particle_tokens[layer])
        places, counts = token_centroids(pts, owner, int(owner.max()) + 1)
        places = places[counts > 0]  # (n_tokens, 3)
        kk = min(k, (len(places) - 1) // 4)  # a short prompt: its nearest tokens only
        if kk < 1:
            continue
        dist, _ = cKDTree(places).query(places, kk + 1)  # (n_tokens, kk+1)
        width = float(np.median(dist[:, -1]))
        if width <= 0:
            continue
        x = torch.from_numpy(pts)
        kernel = torch.exp(-0.5 * torch.cdist(x, x).square() / width**2)  # (n, n)
        density = (kernel @ torch.from_numpy(token_weights(owner))).numpy()  # (n_particles,)
        out[layer] = np.clip(density / max(np.percentile(density, 98), 1e-300), 0, 1)
    return out


def neighbor_lines(neighbors: np.ndarray, n_links: int = 2) -> np.ndarray:
    """VTK line connectivity joining each particle to its first `n_links` neighbours.

    Args:
        neighbors: (n_particles, k_neighbors) int neighbour indices of one layer.
        n_links: neighbours drawn per particle.

    Returns:
        (n_particles * n_links * 3,) int64 flat cells `[2, i, j, 2, i, j, ...]`, with each
        undirected pair drawn once.
    """
    n_particles = neighbors.shape[0]
    n_links = min(n_links, neighbors.shape[1])
    src = np.repeat(np.arange(n_particles), n_links)
    dst = neighbors[:, :n_links].reshape(-1).astype(np.int64)
    pairs = np.unique(np.sort(np.stack([src, dst], 1), 1), axis=0)  # (n_pairs, 2)
    pairs = pairs[(pairs[:, 0] != pairs[:, 1]) & (pairs[:, 1] >= 0) & (pairs[:, 1] < n_particles)]
    cells = np.empty((len(pairs), 3), np.int64)
    cells[:, 0] = 2
    cells[:, 1:] = pairs
    return cells.reshape(-1)


def bounds_of(positions: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and radius that hold every layer of a layout.

    Args:
        positions: (..., 3) points.

    Returns:
        centre (3,) and radius (robust: 99th percentile distance from the centre).
    """
    pts = positions.reshape(-1, 3)
    centre = np.median(pts, 0)
    radius = float(np.percentile(np.linalg.norm(pts - centre, axis=1), 99)) or 1.0
    return centre, radius


FRAMING_AZIMUTHS = 36
"""Orbit angles checked when framing: every 10 degrees."""
FRAMING_MAX_POINTS = 60_000
"""Above this many points, framing uses their convex hull's vertices only."""


def framing_distance(
    points: np.ndarray,
    centre: np.ndarray,
    elevation: float,
    tan_half: tuple[float, float],
    azimuths: np.ndarray | None = None,
) -> float:
    """The camera distance that keeps every point in view from any orbit angle.

    The camera looks at `centre` from `elevation` (radians) above the horizontal plane at any
    azimuth. A point q (relative to the centre) is in view when its sideways and upward offsets
    are within tan_half times its depth d - q·offset.

    Args:
        points: (n, 3) every point that must stay in view (all layers, all steps).
        centre: (3,) the focal point.
        elevation: camera elevation in radians.
        tan_half: tangents of the half view angles across (x) and up (y) of the free area.
        azimuths: the orbit angles (radians) to frame for; None: every FRAMING_AZIMUTHS-th.

    Returns:
        the smallest such distance.
    """
    q = np.asarray(points, np.float64).reshape(-1, 3) - centre
    if len(q) > FRAMING_MAX_POINTS:
        from scipy.spatial import ConvexHull, QhullError

        try:
            q = q[ConvexHull(q).vertices]
        except (QhullError, ValueError):
            q = q[:: len(q) // FRAMING_MAX_POINTS + 1]
    need = 0.0
    z = np.array([0.0, 0.0, 1.0])
    if azimuths is None:
        azimuths = np.linspace(0, 2 * np.pi, FRAMING_AZIMUTHS, endpoint=False)
    for a in azimuths:
        offset = np.array(
            [np.cos(elevation) * np.cos(a), np.cos(elevation) * np.sin(a), np.sin(elevation)]
        )
        right = np.cross(-offset, z)
        right /= np.linalg.norm(right)
        up = np.cross(right, -offset)
        depth = q @ offset  # (n,) towards the camera
        need = max(
            need,
            float(np.max(depth + np.abs(q @ right) / tan_half[0])),
            float(np.max(depth + np.abs(q @ up) / tan_half[1])),
        )
    return need
