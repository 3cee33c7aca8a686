"""Small synthetic `Scan` and `DiffScan` objects (real arrays, real hull surfaces) for tests."""

from __future__ import annotations

import numpy as np
from scipy.spatial import ConvexHull, cKDTree

from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.scan_file import Scan, Surface

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


def causal_attention(n_layers: int, n_heads: int, n_tokens: int, seed: int = 0):
    """Random causal attention (rows sum to 1) with a strong first-token sink, as a record."""
    from layerscan.autoencoder.capture.attention_record import AttentionRecord

    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(n_layers, n_heads, n_tokens, n_tokens))
    logits[..., 0] += 1.5
    upper = np.triu_indices(n_tokens, 1)
    logits[..., upper[0], upper[1]] = -np.inf
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)  # (n_layers, n_heads, n_tokens, n_tokens)
    empty = np.zeros((n_layers, n_heads, n_tokens, 4), np.float16)
    return AttentionRecord(
        queries=empty,
        keys=empty,
        scaling=np.full(n_layers, 0.5, np.float32),
        weights=weights.astype(np.float16),
    )


def synthetic_components(n_layers: int, n_tokens: int, n_prompt: int, seed: int = 0):
    """Component writes that grow through the blocks, a split that sums to 1, a growing cache."""
    from layerscan.autoencoder.capture.component_record import Components

    rng = np.random.default_rng(seed)
    attention = rng.uniform(0.5, 2.0, (n_layers, n_tokens)).astype(np.float32)
    mlp = (attention * np.linspace(1.0, 3.0, n_layers)[:, None]).astype(np.float32)
    split = rng.uniform(0.1, 1.0, (n_layers, n_tokens, 3)).astype(np.float32)
    split[..., 1] *= np.arange(n_tokens) >= n_prompt  # prompt tokens attend to no generated one
    split /= split.sum(-1, keepdims=True)
    share = (attention / (attention + mlp)).astype(np.float32)
    return Components(
        attention_write=attention,
        mlp_write=mlp,
        update=attention + mlp,
        attention_share=share,
        mlp_share=1 - share,
        attention_split=split,
        kv_tokens=np.arange(1, n_tokens + 1, dtype=np.int64),
        kv_bytes=np.arange(1, n_tokens + 1, dtype=np.int64) * 30_720,
    )


def make_activity_scan(
    n_layers: int = 3, n_tokens: int = 7, n_prompt: int = 5, n_heads: int = 2, **kwargs
) -> Scan:
    """A synthetic scan made as with --attention --components (the last tokens generated)."""
    import dataclasses

    from layerscan.geometry.attention_summary import summarize

    scan = make_scan(n_layers=n_layers, n_tokens=n_tokens, **kwargs)
    scan = dataclasses.replace(
        scan,
        n_prompt_tokens=n_prompt,
        attention=summarize(causal_attention(n_layers, n_heads, n_tokens)),
        components=synthetic_components(n_layers, n_tokens, n_prompt),
    )
    scan.validate()
    return scan
