"""The attention a capture keeps (numpy only, importable without torch): weights, queries, keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from layerscan.core.errors import LayerscanError

AttentionKind = Literal["weights", "value-weighted"]
FULL_ATTENTION_TOKENS = 256
"""Up to this many tokens a capture keeps every attention weight; beyond, the top keys only."""
TOP_KEYS = 32
"""Keys kept per query (the largest weights) when the full matrix is not kept."""


@dataclass
class AttentionRecord:
    """Per layer and head: what every query attends to, and the queries and keys it dots.

    Either `weights` (every weight) or `top_keys` + `top_weights` (the largest per query) is set.
    Causal models: row i has weights over keys 0..i only, as the model's mask allows.
    """

    queries: np.ndarray
    """(n_layers, n_heads, n_tokens, d_head) float16 queries as the model dots them (after rotary
    embedding)."""
    keys: np.ndarray
    """(n_layers, n_heads, n_tokens, d_head) float16 keys as dotted, grouped KV heads expanded
    to their query heads."""
    scaling: np.ndarray
    """(n_layers,) float32 the factor on q·k before the softmax (usually d_head^-0.5)."""
    kind: AttentionKind = "weights"
    """weights: the softmax weights; value-weighted: a_ij·|v_j| renormalised per query
    (Kobayashi et al. 2020)."""
    weights: np.ndarray | None = None
    """(n_layers, n_heads, n_tokens, n_tokens) float16 every weight (rows sum to 1)."""
    top_keys: np.ndarray | None = None
    """(n_layers, n_heads, n_tokens, k) int32 the keys of the largest weights, -1 past a row."""
    top_weights: np.ndarray | None = None
    """(n_layers, n_heads, n_tokens, k) float16 those weights, largest first (0 past a row)."""

    @property
    def n_layers(self) -> int:
        return self.queries.shape[0]

    @property
    def n_heads(self) -> int:
        return self.queries.shape[1]

    @property
    def n_tokens(self) -> int:
        return self.queries.shape[2]

    @property
    def nbytes(self) -> int:
        arrays = (self.queries, self.keys, self.weights, self.top_keys, self.top_weights)
        return sum(a.nbytes for a in arrays if a is not None)

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k largest weights per query: keys (L, H, T, k) int32 (-1 where a row has fewer)
        and weights (L, H, T, k) float32, largest first."""
        if self.weights is None:
            k = min(k, self.top_keys.shape[-1])
            return self.top_keys[..., :k], self.top_weights[..., :k].astype(np.float32)
        return top_k(self.weights.astype(np.float32), k)

    def prefix(self, n_tokens: int) -> AttentionRecord:
        """The attention of the first `n_tokens` tokens (exact for causal models)."""
        cut = slice(0, n_tokens)
        return AttentionRecord(
            queries=self.queries[:, :, cut],
            keys=self.keys[:, :, cut],
            scaling=self.scaling,
            kind=self.kind,
            weights=None if self.weights is None else self.weights[:, :, cut, cut],
            top_keys=None if self.top_keys is None else self.top_keys[:, :, cut],
            top_weights=None if self.top_weights is None else self.top_weights[:, :, cut],
        )

    def validate(self, n_layers: int, n_tokens: int) -> None:
        """Raise LayerscanError unless the arrays fit a capture of these sizes."""
        shape = self.queries.shape
        if len(shape) != 4 or shape[0] != n_layers or shape[2] != n_tokens:
            raise LayerscanError(
                f"capture attention queries have shape {shape}, expected "
                f"({n_layers}, n_heads, {n_tokens}, d_head)"
            )
        if self.keys.shape != shape or self.scaling.shape != (n_layers,):
            raise LayerscanError("capture attention keys or scaling do not match its queries")
        if self.kind not in ("weights", "value-weighted"):
            raise LayerscanError(f"capture attention has unknown kind {self.kind!r}")
        if self.weights is not None:
            if self.weights.shape != (*shape[:3], n_tokens):
                raise LayerscanError("capture attention weights do not match its queries")
        elif self.top_keys is None or self.top_weights is None:
            raise LayerscanError("capture attention holds neither full weights nor top keys")
        elif self.top_keys.shape != self.top_weights.shape or self.top_keys.shape[:3] != shape[:3]:
            raise LayerscanError("capture attention top keys do not match its queries")
        elif self.top_keys.size and not (
            (self.top_keys >= -1).all() and (self.top_keys < n_tokens).all()
        ):
            raise LayerscanError("capture attention top keys index past the tokens")

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of a capture file (names prefixed "attention_")."""
        fields = {
            "queries": self.queries,
            "keys": self.keys,
            "scaling": self.scaling,
            "weights": self.weights,
            "top_keys": self.top_keys,
            "top_weights": self.top_weights,
        }
        return {f"attention_{k}": v for k, v in fields.items() if v is not None}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], kind: str) -> AttentionRecord | None:
        """Read `arrays()` back; None when the file holds no attention."""
        if "attention_queries" not in arrays:
            return None
        try:
            return cls(
                queries=arrays["attention_queries"],
                keys=arrays["attention_keys"],
                scaling=arrays["attention_scaling"],
                kind=kind,
                weights=arrays.get("attention_weights"),
                top_keys=arrays.get("attention_top_keys"),
                top_weights=arrays.get("attention_top_weights"),
            )
        except KeyError as exc:
            raise LayerscanError(f"capture attention is missing {exc}") from exc


def top_k(weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest weights per row of (..., n_queries, n_keys) weights, largest first.

    Returns keys (..., n_queries, k) int32, -1 where a row has fewer than k positive weights
    (a causal row i has i+1 keys), and their weights (..., n_queries, k) float32 (0 there).
    """
    k = min(k, weights.shape[-1])
    part = np.argpartition(-weights, k - 1, axis=-1)[..., :k]  # (..., Q, k) unordered
    values = np.take_along_axis(weights, part, axis=-1)
    order = np.argsort(-values, axis=-1, kind="stable")
    keys = np.take_along_axis(part, order, axis=-1).astype(np.int32)
    values = np.take_along_axis(values, order, axis=-1).astype(np.float32)
    keys[values <= 0] = -1
    values[values <= 0] = 0
    return keys, values
