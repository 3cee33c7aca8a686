"""Small synthetic `Scan` and `DiffScan` objects (real arrays, real hull surfaces) for tests."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

from layerscan.geometry.scan_file import DiffScan, Scan, Surface

WORDS = [
    "The",
    " quick",
    " brown",
    " fox",
    " jumps",
    " over",
    " the",
    " lazy",
    " dog",
    " because",
    " it",
    " was",
]


def _hull(points: np.ndarray) -> Surface:
    """Convex hull of (n, 3) points as a triangle mesh."""
    hull = ConvexHull(points)
    used = np.unique(hull.simplices)
    remap = np.full(len(points), -1, np.int64)
    remap[used] = np.arange(len(used))
    return Surface(points[used].astype(np.float32), remap[hull.simplices].astype(np.int32))


def make_scan(
    n_layers: int = 4,
    n_particles: int = 256,
    n_tokens: int = 6,
    n_steps: int = 1,
    d_particle: int = 8,
    k_neighbors: int = 5,
    top_k: int = 5,
    with_lens: bool = True,
    seed: int = 0,
    shift: float = 0.0,
) -> Scan:
    """A scan whose cloud turns from a ball into a twisted ring of lumps through layer-time.

    Args:
        n_layers: transformer blocks; the scan has n_layers+1 layer frames.
        n_particles: particles per cloud.
        n_tokens: tokens of the prompt (all prompt tokens).
        n_steps: token-time steps; step s shows the first n_tokens-n_steps+1+s tokens.
        d_particle: particle feature size.
        k_neighbors: nearest neighbours stored per particle.
        top_k: logit-lens tokens per position.
        with_lens: include logit-lens tokens and probabilities.
        seed: random seed.
        shift: moves every particle by this much per layer along x (for diffs).
    """
    rng = np.random.default_rng(seed)
    n_frames = n_layers + 1
    tokens = [WORDS[i % len(WORDS)] for i in range(n_tokens)]
    step_lengths = list(range(n_tokens - n_steps + 1, n_tokens + 1))
    base = rng.normal(size=(n_particles, 3)).astype(np.float32)  # (n_particles, 3)
    # each step routes particle i to token floor(i * n / N), as the autoencoder does
    particle_tokens = np.stack(
        [
            np.broadcast_to(
                (np.arange(n_particles) * n // n_particles).astype(np.int32),
                (n_frames, n_particles),
            )
            for n in step_lengths
        ]
    )  # (n_steps, n_layers+1, n_particles)
    angle = np.arange(n_tokens) * (2 * np.pi / max(n_tokens, 1))
    centres = np.stack([np.cos(angle), np.sin(angle), np.zeros_like(angle)], 1) * 4.0
    group = particle_tokens[-1, 0] % 4
    positions = np.empty((n_steps, n_frames, n_particles, 3), np.float32)
    for s in range(n_steps):
        for layer in range(n_frames):
            t = layer / max(n_layers, 1)
            twist = t * np.pi * 0.5
            rot = np.array(
                [[np.cos(twist), -np.sin(twist), 0], [np.sin(twist), np.cos(twist), 0], [0, 0, 1]],
                np.float32,
            )
            own = centres[particle_tokens[s, layer]] * (0.3 + 0.7 * t)  # (n_particles, 3)
            pts = (own + base * (0.6 - 0.4 * t)) @ rot.T
            pts[:, 0] += shift * layer
            positions[s, layer] = pts
    clouds = np.concatenate(
        [positions, rng.normal(size=positions.shape[:3] + (d_particle - 3,))], -1
    ).astype(np.float32)  # (n_steps, n_layers+1, n_particles, d_particle)
    neighbors = np.empty((n_steps, n_frames, n_particles, k_neighbors), np.int32)
    for s in range(n_steps):
        for layer in range(n_frames):
            _, idx = cKDTree(positions[s, layer]).query(positions[s, layer], k_neighbors + 1)
            neighbors[s, layer] = idx[:, 1:]
    metric = np.linspace(0.8, 0.97, n_frames, dtype=np.float32)
    surfaces = [
        [_hull(positions[s, layer][group == 0]) for layer in range(n_frames)]
        for s in range(n_steps)
    ]
    lens_tokens = lens_probs = None
    if with_lens:
        lens_tokens = [
            [[WORDS[(i + layer + j) % len(WORDS)] for j in range(top_k)] for i in range(n_tokens)]
            for layer in range(n_frames)
        ]
        raw = rng.random((n_frames, n_tokens, top_k)).astype(np.float32)
        lens_probs = -np.sort(-raw / raw.sum(-1, keepdims=True) * 0.9, axis=-1)
    scan = Scan(
        prompt="".join(tokens),
        model_id="synthetic",
        tokens=tokens,
        n_prompt_tokens=n_tokens,
        layer_names=["embeddings"] + [f"block {i}" for i in range(1, n_frames)],
        step_lengths=step_lengths,
        clouds=clouds,
        positions=positions,
        neighbors=neighbors,
        reconstruction_r2=np.tile(metric, (n_steps, 1)),
        prompt_r2=np.tile(metric - 0.03, (n_steps, 1)),
        trustworthiness=np.tile(metric[::-1].copy(), (n_steps, 1)),
        continuity=np.tile(metric, (n_steps, 1)),
        disparity=np.tile(np.linspace(0, 0.1, n_frames, dtype=np.float32), (n_steps, 1)),
        particle_tokens=particle_tokens,
        token_trust=np.tile(metric, (n_steps, 1)),
        distance_correlation=np.tile(metric - 0.1, (n_steps, 1)),
        token_spread=np.full((n_steps, n_frames), 0.1, np.float32),
        baseline_trust=np.tile(metric - 0.05, (n_steps, 1)),
        baseline_correlation=np.tile(metric - 0.2, (n_steps, 1)),
        token_continuity=np.tile(metric - 0.02, (n_steps, 1)),
        baseline_continuity=np.tile(metric - 0.06, (n_steps, 1)),
        chance_trust=np.full((n_steps, n_frames), 0.52, np.float32),
        surfaces=surfaces,
        lens_tokens=lens_tokens,
        lens_probs=None if lens_probs is None else lens_probs.astype(np.float32),
        settings={"synthetic": True, "seed": seed},
    )
    scan.validate()
    return scan


def make_diff(
    n_layers: int = 4, n_particles: int = 256, n_tokens: int = 6, seed: int = 0
) -> DiffScan:
    """Two synthetic scans in one space that drift apart from layer 1 on."""
    a = make_scan(n_layers, n_particles, n_tokens, seed=seed)
    b = make_scan(n_layers, n_particles, n_tokens, seed=seed, shift=0.4)
    b.tokens = list(b.tokens)
    b.tokens[2] = " red"
    b.prompt = "".join(b.tokens)
    disp_cloud = np.linalg.norm(b.clouds[0] - a.clouds[0], axis=-1)  # (n_layers+1, n_particles)
    token_div = np.zeros((n_layers + 1, n_tokens), np.float32)
    token_div[1:, 2:] = np.linspace(0.1, 1.0, n_layers)[:, None]
    token_div[:, 2] = np.linspace(0.6, 1.2, n_layers + 1)  # the changed token
    divergence = np.delete(token_div, 2, axis=1).mean(-1).astype(np.float32)  # (n_layers+1,)
    aligned = np.array([[i, i] for i in range(n_tokens) if i != 2], np.int32)
    return DiffScan(
        a=a,
        b=b,
        aligned_tokens=aligned,
        divergence=divergence,
        token_divergence_a=token_div.copy(),
        token_divergence_b=token_div,
        peak_layer=int(np.argmax(divergence)),
        joint_trust=np.full((2, n_layers + 1), 0.9, np.float32),
        joint_correlation=np.full((2, n_layers + 1), 0.8, np.float32),
        fallback_layers=np.zeros(n_layers + 1, bool),
        cka=np.linspace(1.0, 0.7, n_layers + 1).astype(np.float32),
        displacement_cloud=disp_cloud.astype(np.float32),
    )
