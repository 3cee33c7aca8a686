"""What a scan keeps of a capture's attention (top keys per query, entropy, sink share) and the
arcs a frame draws from it, pruned by top-k and cumulative mass (pure numpy; the scene draws)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from layerscan.autoencoder.capture.attention_record import AttentionRecord, top_k
from layerscan.core.errors import LayerscanError

SCAN_KEYS = 8
"""Keys kept per query, layer and head in a scan: the arcs draw at most this many."""
SINK = 0
"""The attention sink: the first token, which many heads park their attention on."""


@dataclass
class AttentionSummary:
    """A scan's attention: per block, per head and for the mean over heads, each query's top keys.

    Head index `n_heads` (the last) is the mean over heads.
    """

    top_keys: np.ndarray
    """(n_layers, n_heads+1, n_tokens, k) int32 keys of the largest weights, -1 past a row."""
    top_weights: np.ndarray
    """(n_layers, n_heads+1, n_tokens, k) float32 those weights, largest first."""
    entropy: np.ndarray
    """(n_layers, n_heads) float32 mean over queries of each row's entropy, in bits."""
    sink_share: np.ndarray
    """(n_layers, n_heads+1) float32 mean over queries 1.. of the weight on the first token."""
    kind: str = "weights"
    """weights or value-weighted (see AttentionRecord.kind)."""

    @property
    def n_layers(self) -> int:
        return self.top_keys.shape[0]

    @property
    def n_heads(self) -> int:
        """Heads per layer (the arrays hold one more: the mean)."""
        return self.top_keys.shape[1] - 1

    def validate(self, n_layers: int, n_tokens: int) -> None:
        """Raise LayerscanError unless the arrays fit a scan of these sizes."""
        shape = self.top_keys.shape
        if len(shape) != 4 or shape[0] != n_layers or shape[2] != n_tokens:
            raise LayerscanError(f"scan attention has shape {shape}, expected {n_layers} layers")
        if (
            self.top_weights.shape != shape
            or self.entropy.shape != (n_layers, shape[1] - 1)
            or self.sink_share.shape != shape[:2]
        ):
            raise LayerscanError("scan attention arrays disagree in shape")
        if self.top_keys.size and not (
            (self.top_keys >= -1).all() and (self.top_keys < n_tokens).all()
        ):
            raise LayerscanError("scan attention keys index past the tokens")
        if not np.isfinite(self.top_weights).all():
            raise LayerscanError("scan attention weights hold non-finite values")

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        names = ("top_keys", "top_weights", "entropy", "sink_share")
        return {f"{prefix}attention_{n}": np.asarray(getattr(self, n)) for n in names}

    @classmethod
    def from_arrays(cls, get: dict[str, np.ndarray], kind: str) -> AttentionSummary | None:
        if "attention_top_keys" not in get:
            return None
        try:
            return cls(
                top_keys=get["attention_top_keys"],
                top_weights=get["attention_top_weights"],
                entropy=get["attention_entropy"],
                sink_share=get["attention_sink_share"],
                kind=kind,
            )
        except KeyError as exc:
            raise LayerscanError(f"scan attention is missing {exc}") from exc


def _dense(record: AttentionRecord, layer: int) -> np.ndarray:
    """(n_heads, n_tokens, n_tokens) float32 weights of one block; from the top keys where the
    capture kept only those (the rest are zero)."""
    if record.weights is not None:
        return record.weights[layer].astype(np.float32)
    n_heads, n_tokens = record.top_keys.shape[1:3]
    dense = np.zeros((n_heads, n_tokens, n_tokens + 1), np.float32)  # column n_tokens: no key
    keys = np.where(record.top_keys[layer] < 0, n_tokens, record.top_keys[layer])
    np.put_along_axis(dense, keys, record.top_weights[layer].astype(np.float32), axis=-1)
    return dense[..., :n_tokens]


def summarize(record: AttentionRecord, k: int = SCAN_KEYS) -> AttentionSummary:
    """The scan's summary of a capture's attention: top-k keys per query, entropy, sink share.

    One block at a time, so a 1024-token capture needs (n_heads+1, 1024, 1024) floats at most.
    """
    keys, values, entropy, sink = [], [], [], []
    for layer in range(record.n_layers):
        weights = _dense(record, layer)  # (n_heads, n_tokens, n_tokens)
        with_mean = np.concatenate([weights, weights.mean(0, keepdims=True)])
        top_ids, top_values = top_k(with_mean, k)  # (n_heads+1, n_tokens, k)
        keys.append(top_ids)
        values.append(top_values)
        safe = np.where(weights > 0, weights, 1.0)
        entropy.append(-(weights * np.log2(safe)).sum(-1).mean(-1))  # (n_heads,)
        rows = with_mean[:, 1:, SINK] if weights.shape[-1] > 1 else with_mean[:, :, SINK]
        sink.append(rows.mean(-1))  # (n_heads+1,)
    return AttentionSummary(
        top_keys=np.stack(keys),
        top_weights=np.stack(values),
        entropy=np.stack(entropy).astype(np.float32),
        sink_share=np.stack(sink).astype(np.float32),
        kind=record.kind,
    )


class Arcs(NamedTuple):
    """The arcs one frame draws: query → key with a weight, and the mass they cover."""

    queries: np.ndarray
    """(n_arcs,) int token of each arc's query."""
    keys: np.ndarray
    """(n_arcs,) int token it attends to."""
    weights: np.ndarray
    """(n_arcs,) float32 its attention weight."""
    coverage: float
    """Drawn mass over all attention mass of the visible queries (each query's row sums to 1)."""
    sink_share: float
    """Mass on the first token over all mass of the visible queries other than the first."""


def select_arcs(
    summary: AttentionSummary,
    block: int,
    head: int | None,
    n_visible: int,
    top: int = 3,
    mass: float = 0.8,
    show_sink: bool = False,
    token: int | None = None,
) -> Arcs:
    """The arcs of one block and head, pruned by top-k and cumulative mass.

    Per query (each visible token), its keys in order of weight: self-attention and, unless
    `show_sink`, the first token are skipped (no arc can show them); the rest are drawn while
    fewer than `top` are drawn and the query's drawn mass is below `mass`.

    Args:
        block: 0-based transformer block (scan frame block+1 shows its output).
        head: head index, or None for the mean over heads.
        n_visible: tokens shown (a token-time step shows a prefix).
        token: only the arcs from and to this token (a picked token), or None for all.
    """
    column = summary.n_heads if head is None else head
    keys = summary.top_keys[block, column, :n_visible]  # (n_visible, k)
    weights = summary.top_weights[block, column, :n_visible]
    queries = np.broadcast_to(np.arange(n_visible)[:, None], keys.shape)
    drawable = (keys >= 0) & (keys < n_visible) & (keys != queries)
    if not show_sink:
        drawable &= keys != SINK
    if token is not None:
        drawable &= (queries == token) | (keys == token)
    rank = np.cumsum(drawable, axis=1) - drawable  # arcs kept before this one, per query
    before = np.cumsum(np.where(drawable, weights, 0), axis=1) - np.where(drawable, weights, 0)
    keep = drawable & (rank < top) & (before < mass)
    sink = weights[1:] * (keys[1:] == SINK)
    return Arcs(
        queries=queries[keep].astype(np.int64),
        keys=keys[keep].astype(np.int64),
        weights=weights[keep].astype(np.float32),
        coverage=float(weights[keep].sum() / max(n_visible, 1)),
        sink_share=float(sink.sum() / max(n_visible - 1, 1)),
    )


def head_table(summary: AttentionSummary) -> str:
    """Per block and head: attention entropy (bits) and the sink share, for picking heads."""
    n_heads = summary.n_heads
    heads = " ".join(f"{h:>4}" for h in range(n_heads))
    lines = [
        f"attention per head ({summary.kind}): entropy in bits (low = focused) | share on the "
        f"first token (the sink)",
        f"{'block':>6}  {heads} | {heads}  mean",
    ]
    for b in range(summary.n_layers):
        entropy = " ".join(f"{e:4.1f}" for e in summary.entropy[b])
        sink = " ".join(f"{100 * s:3.0f}%" for s in summary.sink_share[b, :n_heads])
        lines.append(
            f"{b + 1:>6}  {entropy} | {sink}  {100 * summary.sink_share[b, n_heads]:3.0f}%"
        )
    focused = np.where(summary.sink_share[:, :n_heads] < 0.5, summary.entropy, np.inf)
    picks = np.argsort(focused, axis=None)[:3]
    named = [
        f"block {b + 1} head {h} ({summary.entropy[b, h]:.1f} bits, sink "
        f"{100 * summary.sink_share[b, h]:.0f}%)"
        for b, h in zip(*np.unravel_index(picks, focused.shape), strict=True)
        if np.isfinite(focused[b, h])
    ]
    if named:
        lines.append("most focused heads off the sink: " + "; ".join(named))
    return "\n".join(lines)
