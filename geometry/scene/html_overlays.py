"""What the HTML page needs to draw a scan's attention arcs and component strip: the scan's own
top keys and writes, and the pruning the MP4 uses (viewer.js selects and draws)."""

from __future__ import annotations

import base64

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.geometry.attention_summary import SINK
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene.attention_arcs import ARC_COLOR, ARC_LIFT, SINK_COLOR, WIDTH_BINS
from layerscan.geometry.scene.component_strip import (
    ATTENTION_COLOR,
    MLP_COLOR,
    SCALE_PERCENTILE,
    SPLIT_COLORS,
    kv_text,
)

ALL_HEADS_BYTES = 12_000_000
"""Above this many bytes of top keys and weights, the page carries only the mean over heads."""


def _b64(array: np.ndarray, dtype: type) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype).tobytes()).decode("ascii")


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(255 * float(c)):02x}" for c in rgb)


def attention_data(scan: Scan, options) -> dict | None:
    """The page's arcs: per block, head and query the scan's top keys, and the pruning.

    Args:
        scan: the scan exported (its last step: every token).
        options: SceneOptions (show_attention, arc_top_k, arc_mass, arc_head, arc_sink).

    Raises:
        LayerscanError: arc_head names a head the scan does not have.
    """
    summary = scan.attention
    if summary is None or not options.show_attention:
        return None
    n_heads = summary.n_heads
    head = options.arc_head
    if head is not None and not 0 <= head < n_heads:
        raise LayerscanError(f"--arc-head {head}: the scan has heads 0..{n_heads - 1}")
    keys = summary.top_keys  # (n_layers, n_heads+1, n_tokens, k), the mean last
    weights = summary.top_weights
    all_heads = keys.size * 8 <= ALL_HEADS_BYTES or head is not None
    if not all_heads:
        keys, weights = keys[:, -1:], weights[:, -1:]  # (n_layers, 1, n_tokens, k)
    return {
        "keys": _b64(keys, np.int32),
        "weights": _b64(weights, np.float32),
        "shape": list(keys.shape),
        "n_heads": n_heads,
        "all_heads": bool(all_heads),
        "head": head,
        "top": int(options.arc_top_k),
        "mass": float(options.arc_mass),
        "sink": bool(options.arc_sink),
        "sink_token": SINK,
        "kind": summary.kind,
        "entropy": np.round(summary.entropy, 2).tolist(),
        "lift": ARC_LIFT,
        "width_bins": [list(b) for b in WIDTH_BINS],
        "color": [int(c) for c in ARC_COLOR],
        "sink_color": _hex(SINK_COLOR),
    }


def components_data(scan: Scan, options) -> dict | None:
    """The page's strip: per block and token the attention and MLP writes, the attention split,
    the KV cache, and the full-bar scale the MP4 uses."""
    parts = scan.components
    if parts is None or not options.show_components:
        return None
    writes = np.concatenate([parts.attention_write.ravel(), parts.mlp_write.ravel()])
    scale = float(max(np.percentile(writes, SCALE_PERCENTILE), 1e-12))
    return {
        "attention": _b64(parts.attention_write, np.float32),  # (n_layers, n_tokens)
        "mlp": _b64(parts.mlp_write, np.float32),
        "split": _b64(parts.attention_split, np.float32),  # (n_layers, n_tokens, 3)
        "n_layers": parts.n_layers,
        "n_tokens": parts.n_tokens,
        "n_prompt": scan.n_prompt_tokens,
        "scale": scale,
        "kv": [
            kv_text(int(t), int(b)) for t, b in zip(parts.kv_tokens, parts.kv_bytes, strict=True)
        ],
        "units": (
            f"bar = |write|, L2 in the residual stream · full bar = {scale:.3g} "
            f"(p{SCALE_PERCENTILE:g} of the scan)"
        ),
        "parallel": bool(parts.parallel),
        "colors": {
            "attention": _hex(ATTENTION_COLOR),
            "mlp": _hex(MLP_COLOR),
            "split": [_hex(c) for c in SPLIT_COLORS],
        },
    }
