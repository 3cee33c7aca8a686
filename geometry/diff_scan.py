"""The diff of two prompts (or two models) as a record: both scans in one shared space, the
token alignment and the divergences measured on the hidden states; its file and `load_any`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.tensor_file import write_tensor_file
from layerscan.geometry.diff_tokens import DIVERGENCE_THRESHOLD, check_alignment, status_of
from layerscan.geometry.scan_file import (
    SCAN_FORMAT_VERSION,
    SCAN_KIND,
    Scan,
    read_scan_file,
)

DIFF_FORMAT_VERSION = 3
"""Version of a diff's own fields (inside the scan container): 3 aligns the tokens and measures
the divergence on the hidden states; 2 and older compared particle slots."""


@dataclass
class DiffScan:
    """Two prompts (or two models) through one autoencoder, laid out in ONE common 3D space.

    The tokens are aligned (`aligned_tokens`); every divergence is measured on the hidden
    states as captured, pair by pair. `a.positions` and `b.positions` share coordinates layer
    by layer, and a token state both prompts share (a causal prefix) has one place. Both scans
    have a single token-time step.
    """

    a: Scan
    b: Scan
    aligned_tokens: np.ndarray
    """(n_pairs, 2) int32 token index in A and in B of each aligned pair (same token)."""
    divergence: np.ndarray
    """(n_layers+1,) float32 mean over aligned pairs of |h_a - h_b| / mean(|h_a|, |h_b|)."""
    token_divergence_a: np.ndarray
    """(n_layers+1, n_tokens_a) float32 each A token's relative distance to its aligned B token
    (unaligned: to its nearest B token of the layer)."""
    token_divergence_b: np.ndarray
    """(n_layers+1, n_tokens_b) float32 the same for B's tokens."""
    peak_layer: int
    """Layer index where `divergence` peaks."""
    threshold: float = DIVERGENCE_THRESHOLD
    """Relative distance past which a token counts as diverged (`first_over`)."""
    joint_trust: np.ndarray | None = None
    """(2, n_layers+1) float32 token trust of A's / B's tokens in a joint PCA-3 of both
    prompts' token states: the fair baseline of the one shared space."""
    joint_correlation: np.ndarray | None = None
    """(2, n_layers+1) float32 distance correlation of that joint PCA-3, A and B."""
    fallback_layers: np.ndarray | None = None
    """(n_layers+1,) bool layers drawn from the joint PCA-3 (the layout did not beat it)."""
    cka: np.ndarray | None = None
    """(n_layers+1,) float32 linear CKA of the aligned token states of A and B."""
    displacement_cloud: np.ndarray | None = None
    """(n_layers+1, n_particles) float32 diagnostic: |cloud_b - cloud_a| slot by slot."""

    @property
    def status(self) -> tuple[np.ndarray, np.ndarray]:
        """(n_tokens_a,), (n_tokens_b,) int8 ALIGNED / SUBSTITUTED / ONLY_HERE per token."""
        return status_of(self.aligned_tokens, len(self.a.tokens), len(self.b.tokens))

    @property
    def changed(self) -> tuple[list[int], list[int]]:
        """A's and B's tokens that are not aligned (substituted, deleted, inserted)."""
        status_a, status_b = self.status
        return np.flatnonzero(status_a).tolist(), np.flatnonzero(status_b).tolist()

    @property
    def differing_tokens(self) -> list[int]:
        """B's changed tokens (substituted or inserted)."""
        return self.changed[1]

    def validate(self) -> None:
        """Raise LayerscanError when the diff's arrays disagree with its scans."""
        n_frames = self.a.n_layers + 1
        n_a, n_b = len(self.a.tokens), len(self.b.tokens)
        problem = check_alignment(self.aligned_tokens, n_a, n_b)
        if problem:
            raise LayerscanError(f"diff: {problem}")
        expected = {
            "divergence": (n_frames,),
            "token_divergence_a": (n_frames, n_a),
            "token_divergence_b": (n_frames, n_b),
            "joint_trust": (2, n_frames),
            "joint_correlation": (2, n_frames),
            "fallback_layers": (n_frames,),
            "cka": (n_frames,),
        }
        for name, shape in expected.items():
            value = getattr(self, name)
            if value is not None and np.shape(value) != shape:
                raise LayerscanError(f"diff {name} has shape {np.shape(value)}, expected {shape}")
            if value is not None and not np.isfinite(np.asarray(value, np.float64)).all():
                raise LayerscanError(f"diff {name} holds non-finite values")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the diff to one safetensors file with JSON metadata, atomically."""
        self.validate()
        arrays_a, meta_a = self.a.arrays_and_meta("a/")
        arrays_b, meta_b = self.b.arrays_and_meta("b/")
        arrays = {**arrays_a, **arrays_b}
        for name in DIFF_ARRAYS:
            value = getattr(self, name)
            if value is not None:
                arrays[name] = np.asarray(value, DIFF_ARRAYS[name])
        meta = {
            "type": "diff",
            "diff_version": DIFF_FORMAT_VERSION,
            "a": meta_a,
            "b": meta_b,
            "peak_layer": int(self.peak_layer),
            "threshold": float(self.threshold),
        }
        return write_tensor_file(path, SCAN_KIND, SCAN_FORMAT_VERSION, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> DiffScan:
        """Read a diff file; scans, older diffs and corrupt files raise LayerscanError."""
        arrays, meta = read_scan_file(path)
        if meta.get("type") != "diff":
            raise LayerscanError(f"{path}: is a single-prompt scan, not a diff")
        return cls._fromarrays_and_meta(arrays, meta, path)

    @classmethod
    def _fromarrays_and_meta(cls, arrays: dict[str, np.ndarray], meta: dict, path) -> DiffScan:
        if meta.get("diff_version") != DIFF_FORMAT_VERSION:
            raise LayerscanError(
                f"{path}: a diff from an older layerscan (particle slots compared one by one, "
                f"diff version {meta.get('diff_version', 2)}); this one aligns the tokens "
                f"(version {DIFF_FORMAT_VERSION}): recreate it with "
                "`layerscan diff A B -o FILE.scan`"
            )
        missing = [n for n in DIFF_ARRAYS if n not in arrays and n in REQUIRED_DIFF_ARRAYS]
        if missing:
            raise LayerscanError(f"{path}: diff file lacks {', '.join(missing)}")
        diff = cls(
            a=Scan._fromarrays_and_meta(arrays, meta["a"], "a/"),
            b=Scan._fromarrays_and_meta(arrays, meta["b"], "b/"),
            peak_layer=int(meta["peak_layer"]),
            threshold=float(meta.get("threshold", DIVERGENCE_THRESHOLD)),
            **{name: arrays.get(name) for name in DIFF_ARRAYS},
        )
        diff.validate()
        return diff


DIFF_ARRAYS = {
    "aligned_tokens": np.int32,
    "divergence": np.float32,
    "token_divergence_a": np.float32,
    "token_divergence_b": np.float32,
    "joint_trust": np.float32,
    "joint_correlation": np.float32,
    "fallback_layers": np.bool_,
    "cka": np.float32,
    "displacement_cloud": np.float32,
}
"""The diff's own arrays and their stored types."""
REQUIRED_DIFF_ARRAYS = ("aligned_tokens", "divergence", "token_divergence_a", "token_divergence_b")


def load_any(path: str | os.PathLike) -> Scan | DiffScan:
    """Load a scan or a diff scan, whichever the file holds."""
    arrays, meta = read_scan_file(path)
    if meta.get("type") == "diff":
        return DiffScan._fromarrays_and_meta(arrays, meta, path)
    return Scan._fromarrays_and_meta(arrays, meta["scan"], "")
