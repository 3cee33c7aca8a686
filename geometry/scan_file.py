"""The `Scan` record (aligned 3D layer-time layouts of a prompt, or a diff of two) and its file."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from layerscan.autoencoder.capture.component_record import Components
from layerscan.core.errors import LayerscanError
from layerscan.core.tensor_file import read_tensor_file, write_tensor_file
from layerscan.geometry.attention_summary import AttentionSummary

SCAN_KIND = "scan"
SCAN_FORMAT_VERSION = 3


TOKEN_FIGURES = (
    "token_trust",
    "distance_correlation",
    "token_spread",
    "baseline_trust",
    "baseline_correlation",
    "token_continuity",
    "baseline_continuity",
    "chance_trust",
)
"""Per-layer end-to-end faithfulness figures every scan stores (hidden states -> 3D)."""
DIAGNOSTICS = ("trustworthiness", "continuity", "disparity")
"""The particle stage's figures, measured only when asked (`ScanOptions.diagnostics`): all
NaN when not."""
LAYER_FIGURES = ("reconstruction_r2", "prompt_r2", *DIAGNOSTICS, *TOKEN_FIGURES)
"""(n_steps, n_layers+1) per-layer figures a scan stores (the autoencoder's R², the cloud-to-3D
diagnostics, then the end-to-end ones)."""
ARRAY_FIELDS = ("clouds", "positions", "neighbors", "particle_tokens", *LAYER_FIGURES)
META_FIELDS = (
    "prompt",
    "model_id",
    "tokens",
    "n_prompt_tokens",
    "layer_names",
    "step_lengths",
    "lens_tokens",
    "settings",
)
"""The header fields every scan stores (`step_layouts`, `attention_kind` and `components`
are optional)."""


def token_centroids(
    points: np.ndarray, particle_tokens: np.ndarray, n_tokens: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each token's centroid: the mean of its particles, in one layout or one cloud.

    Args:
        points: (n_particles, d) one layer's positions (d = 3) or particle vectors.
        particle_tokens: (n_particles,) int token of each particle (< n_tokens).
        n_tokens: tokens of the step.

    Returns:
        (n_tokens, d) float64 centroids (zero for a token without particles) and
        (n_tokens,) int particle counts.
    """
    counts = np.bincount(particle_tokens, minlength=n_tokens)[:n_tokens]
    sums = np.zeros((n_tokens, points.shape[1]))
    np.add.at(sums, particle_tokens, points.astype(np.float64))
    return sums / np.maximum(counts, 1)[:, None], counts


def token_weights(particle_tokens: np.ndarray) -> np.ndarray:
    """Each particle's share of its token: 1 / (particles of its token), so every token weighs
    1 in a density however many particles the autoencoder routed to it.

    Args:
        particle_tokens: (..., n_particles) int token of each particle.

    Returns:
        (..., n_particles) float64.
    """
    owners = np.asarray(particle_tokens)
    flat = owners.reshape(-1, owners.shape[-1])  # (rows, n_particles)
    return np.stack([1.0 / np.bincount(row)[row] for row in flat]).reshape(owners.shape)


SAME_PROMPT_TOLERANCE = 1e-4
"""Largest mean relative hidden-state distance that still counts as no divergence at all: a
shared prefix computed within two sequences of different lengths differs by float noise
(about 1e-6 relative in float32)."""


def diverges(divergence_by_layer: np.ndarray) -> bool:
    """Whether two prompts diverge at any layer (a prompt diffed with itself does not).

    Args:
        divergence_by_layer: (n_layers+1,) mean relative distance of aligned tokens per layer.
    """
    values = np.asarray(divergence_by_layer, np.float64)
    return bool(values.size) and float(values.max()) > SAME_PROMPT_TOLERANCE


class Surface(NamedTuple):
    """A triangle mesh; both arrays are empty when a layer has no usable surface."""

    vertices: np.ndarray
    """(n_vertices, 3) float32"""
    faces: np.ndarray
    """(n_faces, 3) int32 indices into `vertices`"""


@dataclass
class Scan:
    """Everything render, view and diff need about one prompt, so they never recompute.

    A scan has one or more token-time steps; step s shows the first `step_lengths[s]` tokens.
    A plain scan has one step holding every token.
    """

    prompt: str
    model_id: str
    tokens: list[str]
    """(n_tokens,) prompt tokens followed by generated tokens."""
    n_prompt_tokens: int
    layer_names: list[str]
    """(n_layers+1,) "embeddings", "block 1", ..."""
    step_lengths: list[int]
    """(n_steps,) tokens visible at each token-time step."""
    clouds: np.ndarray
    """(n_steps, n_layers+1, n_particles, d_particle) float32 autoencoder particle clouds."""
    positions: np.ndarray
    """(n_steps, n_layers+1, n_particles, 3) float32 aligned 3D layouts, always finite."""
    neighbors: np.ndarray
    """(n_steps, n_layers+1, n_particles, k_neighbors) int32 nearest particles in the cloud."""
    reconstruction_r2: np.ndarray
    """(n_steps, n_layers+1) float32 autoencoder R² of this prompt's hidden states, SST
    around the corpus mean of the layer."""
    prompt_r2: np.ndarray
    """(n_steps, n_layers+1) float32 the same R² with SST around the prompt's own mean: the
    honest figure (how much of what sets the tokens apart the particles keep)."""
    trustworthiness: np.ndarray
    """(n_steps, n_layers+1) float32 diagnostic of one stage: 3D layout vs cloud (k=10);
    NaN where not measured (`ScanOptions.diagnostics` off)."""
    continuity: np.ndarray
    """(n_steps, n_layers+1) float32 diagnostic of one stage: 3D layout vs cloud (k=10);
    NaN where not measured."""
    disparity: np.ndarray
    """(n_steps, n_layers+1) float32 Procrustes disparity to the previous layer (0 at layer 0);
    NaN where not measured."""
    particle_tokens: np.ndarray
    """(n_steps, n_layers+1, n_particles) int32 the token each particle belongs to."""
    token_trust: np.ndarray
    """(n_steps, n_layers+1) float32 end to end: trustworthiness of the tokens' 3D places
    (their particles' centroids) against their hidden states (k: see faithfulness.token_k)."""
    distance_correlation: np.ndarray
    """(n_steps, n_layers+1) float32 Spearman correlation of 3D vs hidden pairwise token
    distances."""
    token_spread: np.ndarray
    """(n_steps, n_layers+1) float32 mean distance of a particle from its token's centroid,
    over the layout's mean radius (0 = every token one point)."""
    baseline_trust: np.ndarray
    """(n_steps, n_layers+1) float32 token trust of PCA-3 of the token states (the baseline)."""
    baseline_correlation: np.ndarray
    """(n_steps, n_layers+1) float32 distance correlation of that PCA-3 baseline."""
    token_continuity: np.ndarray
    """(n_steps, n_layers+1) float32 continuity of the token places (hidden-state neighbours
    that stay 3D neighbours: trustworthiness with the roles swapped, same k)."""
    baseline_continuity: np.ndarray
    """(n_steps, n_layers+1) float32 continuity of the PCA-3 baseline."""
    chance_trust: np.ndarray
    """(n_steps, n_layers+1) float32 expected token trust (and continuity) of a random
    placement of the step's tokens: what 0 information reads as (about 0.5)."""
    surfaces: list[list[Surface]]
    """[n_steps][n_layers+1] density isosurface per layer."""
    lens_tokens: list[list[list[str]]] | None = None
    """(n_layers+1, n_tokens, top_k) logit-lens tokens, None for models without an LM head."""
    lens_probs: np.ndarray | None = None
    """(n_layers+1, n_tokens, top_k) float32 their probabilities."""
    settings: dict = field(default_factory=dict)
    """How the scan was made: projection mode, seeds, normalization, autoencoder, versions."""
    step_layouts: list[str] = field(default_factory=list)
    """(n_steps,) the layout each step shows: "tokens" (the token layout beat PCA-3), "pca"
    (nothing beat the aligned PCA-3 of the token states) or the particle projection's name;
    empty when unknown."""
    attention: AttentionSummary | None = None
    """Per block and head, each query's top keys, entropy and sink share (with --attention)."""
    components: Components | None = None
    """Attention and MLP writes per block and token, KV cache, attention split (--components)."""

    @property
    def n_steps(self) -> int:
        return self.positions.shape[0]

    @property
    def n_layers(self) -> int:
        """Transformer blocks; the scan has n_layers+1 layer frames."""
        return self.positions.shape[1] - 1

    @property
    def n_particles(self) -> int:
        return self.positions.shape[2]

    def validate(self) -> None:
        """Raise LayerscanError when arrays disagree in shape or hold non-finite points."""
        n_steps, n_frames, n_particles, three = self.positions.shape
        expected = {
            "clouds": (n_steps, n_frames, n_particles),
            "neighbors": (n_steps, n_frames, n_particles),
            "reconstruction_r2": (n_steps, n_frames),
            "prompt_r2": (n_steps, n_frames),
            "trustworthiness": (n_steps, n_frames),
            "continuity": (n_steps, n_frames),
            "disparity": (n_steps, n_frames),
            "particle_tokens": (n_steps, n_frames, n_particles),
            **{name: (n_steps, n_frames) for name in TOKEN_FIGURES},
        }
        if three != 3:
            raise LayerscanError(f"scan positions must end in 3, got {self.positions.shape}")
        for name, shape in expected.items():
            if getattr(self, name).shape[: len(shape)] != shape:
                raise LayerscanError(
                    f"scan {name} has shape {getattr(self, name).shape}, expected {shape}"
                )
        if len(self.layer_names) != n_frames or len(self.step_lengths) != n_steps:
            raise LayerscanError("scan layer names or step lengths do not match its layouts")
        layouts = self.step_layouts
        if layouts and (len(layouts) != n_steps or not all(isinstance(x, str) for x in layouts)):
            raise LayerscanError("scan step layouts do not match its steps")
        if len(self.surfaces) != n_steps or any(len(s) != n_frames for s in self.surfaces):
            raise LayerscanError("scan surfaces do not match its layouts")
        if not np.isfinite(self.positions).all():
            raise LayerscanError("scan positions hold non-finite values")
        if self.attention is not None:
            self.attention.validate(n_frames - 1, len(self.tokens))
        if self.components is not None:
            self.components.validate(n_frames - 1, len(self.tokens))

    def arrays_and_meta(self, prefix: str) -> tuple[dict[str, np.ndarray], dict]:
        arrays = {f"{prefix}{name}": np.asarray(getattr(self, name)) for name in ARRAY_FIELDS}
        flat = [surface for step in self.surfaces for surface in step]
        arrays[f"{prefix}surface_vertices"] = _concat([s.vertices for s in flat], 3, np.float32)
        arrays[f"{prefix}surface_faces"] = _concat([s.faces for s in flat], 3, np.int32)
        arrays[f"{prefix}surface_counts"] = np.array(
            [[len(s.vertices), len(s.faces)] for s in flat], dtype=np.int64
        ).reshape(-1, 2)
        if self.lens_probs is not None:
            arrays[f"{prefix}lens_probs"] = np.asarray(self.lens_probs, dtype=np.float32)
        if self.attention is not None:
            arrays.update(self.attention.arrays(prefix))
        if self.components is not None:
            arrays.update(self.components.arrays(f"{prefix}components/"))
        meta = {name: getattr(self, name) for name in (*META_FIELDS, "step_layouts")}
        if self.attention is not None:
            meta["attention_kind"] = self.attention.kind
        meta["components"] = None if self.components is None else self.components.meta()
        return arrays, meta

    @classmethod
    def _fromarrays_and_meta(cls, arrays: dict[str, np.ndarray], meta: dict, prefix: str) -> Scan:
        get = {
            name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)
        }
        n_steps, n_frames = get["positions"].shape[:2]
        counts = get["surface_counts"]
        v_ends, f_ends = np.cumsum(counts[:, 0]), np.cumsum(counts[:, 1])
        flat = [
            Surface(
                get["surface_vertices"][v_end - nv : v_end],
                get["surface_faces"][f_end - nf : f_end],
            )
            for (nv, nf), v_end, f_end in zip(counts, v_ends, f_ends, strict=True)
        ]
        surfaces = [flat[s * n_frames : (s + 1) * n_frames] for s in range(n_steps)]
        meta = dict(meta)
        kind = meta.pop("attention_kind", "weights")
        meta["components"] = Components.from_file(get, meta.get("components"), "components/")
        scan = cls(
            attention=AttentionSummary.from_arrays(get, kind),
            surfaces=surfaces,
            lens_probs=get.get("lens_probs"),
            **{name: get[name] for name in ARRAY_FIELDS},
            **meta,
        )
        scan.validate()
        return scan

    def save(self, path: str | os.PathLike) -> Path:
        """Write the scan to one safetensors file with JSON metadata, atomically."""
        self.validate()
        arrays, meta = self.arrays_and_meta("")
        return write_tensor_file(
            path, SCAN_KIND, SCAN_FORMAT_VERSION, arrays, {"type": "scan", "scan": meta}
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Scan:
        """Read a scan file; diff files, other versions and corrupt files raise LayerscanError."""
        arrays, meta = read_scan_file(path)
        if meta.get("type") != "scan":
            raise LayerscanError(
                f"{path}: is a diff scan; open it with `layerscan diff` or DiffScan.load"
            )
        return cls._fromarrays_and_meta(arrays, meta["scan"], "")


def read_scan_file(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and header of a scan or diff file, validated (geometry.scan_checks)."""
    from layerscan.geometry.scan_checks import check_diff, check_scan

    arrays, meta = read_tensor_file(path, SCAN_KIND, SCAN_FORMAT_VERSION)
    if meta.get("type") == "diff":
        check_diff(path, arrays, meta)
    elif meta.get("type") == "scan":
        if set(meta) != {"type", "scan"}:
            raise LayerscanError(
                f"{path}: corrupt or edited scan file: its header's keys are "
                f"{sorted(meta)}, expected type and scan; recreate it"
            )
        check_scan(path, arrays, meta["scan"])
    else:
        raise LayerscanError(f"{path}: scan file has no scan type")
    return arrays, meta


def _concat(parts: list[np.ndarray], width: int, dtype: type) -> np.ndarray:
    parts = [np.asarray(p, dtype=dtype).reshape(-1, width) for p in parts]
    return np.concatenate(parts) if parts else np.zeros((0, width), dtype)
