"""Attention capture: each layer's weights, queries and keys, taken as the model computes them.

transformers routes every attention call of most architectures through its `AttentionInterface`
(`query`, `key`, `value` after rotary embedding and the KV cache, and the mask). On request,
`recording_attention` registers one more implementation there that calls the model's own eager
attention function (the only one that returns weights) and keeps what it was given and what it
returned; nothing of the model is re-implemented. Without `--attention` the model keeps its
sdpa/flash attention.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from layerscan.autoencoder.capture.architectures import attention_modules
from layerscan.autoencoder.capture.attention_record import (
    FULL_ATTENTION_TOKENS,
    TOP_KEYS,
    AttentionKind,
    AttentionRecord,
    top_k,
)
from layerscan.core.errors import LayerscanError

IMPLEMENTATION = "layerscan_capture"
"""The name the recording attention is registered under in transformers' interfaces."""


class _Recorder:
    """Per layer, the pieces of each forward pass: queries, new keys, weights of new queries."""

    def __init__(self, layer_of: dict[int, int], kind: AttentionKind) -> None:
        self.layer_of = layer_of
        self.kind = kind
        self.pieces: list[list[tuple[torch.Tensor, ...]]] = [[] for _ in range(len(layer_of))]
        self.scaling = np.zeros(len(layer_of), np.float32)

    def __call__(self, module, query, key, value, attention_mask, **kwargs) -> tuple[Any, Any]:
        eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
        if eager is None:
            raise LayerscanError(
                f"{type(module).__name__} has no eager attention function; --attention "
                f"cannot record it"
            )
        output, weights = eager(module, query, key, value, attention_mask, **kwargs)
        layer = self.layer_of.get(id(module))
        if layer is None:  # an attention module the table does not list (cross-attention, ...)
            return output, weights
        n_queries = query.shape[2]
        groups = query.shape[1] // key.shape[1]
        # (heads, queries, d_head); keys (heads, queries, d_head): only those new in this pass
        queries = query[0].detach()
        keys = key[0, :, -n_queries:].detach().repeat_interleave(groups, dim=0)
        rows = weights[0].detach().float()  # (heads, queries, keys so far)
        if self.kind == "value-weighted":  # |a_ij v_j| = a_ij |v_j|, renormalised per query
            norms = value[0].detach().float().norm(dim=-1).repeat_interleave(groups, dim=0)
            rows = rows * norms[:, None, :]  # (heads, queries, keys)
            rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-30)
        scaling = kwargs.get("scaling")
        self.scaling[layer] = query.shape[-1] ** -0.5 if scaling is None else float(scaling)
        self.pieces[layer].append((queries.cpu(), keys.cpu(), rows.half().cpu()))
        return output, weights

    def record(self, keep_all: bool) -> AttentionRecord:
        """Stitch the passes (the prompt, then one per generated token) into one record."""
        if any(not pieces for pieces in self.pieces):
            raise LayerscanError("--attention: some layers' attention did not go through the hook")
        queries = torch.stack([torch.cat([p[0] for p in ps], dim=1) for ps in self.pieces])
        keys = torch.stack([torch.cat([p[1] for p in ps], dim=1) for ps in self.pieces])
        n_layers, n_heads, n_tokens, _ = queries.shape  # (n_layers, n_heads, n_tokens, d_head)
        full = keep_all or n_tokens <= FULL_ATTENTION_TOKENS
        k = min(TOP_KEYS, n_tokens)
        if full:
            weights = np.zeros((n_layers, n_heads, n_tokens, n_tokens), np.float16)
        else:
            top_keys = np.full((n_layers, n_heads, n_tokens, k), -1, np.int32)
            top_weights = np.zeros((n_layers, n_heads, n_tokens, k), np.float16)
        for layer, pieces in enumerate(self.pieces):
            start = 0
            for _, _, rows in pieces:  # rows: (heads, new queries, keys so far)
                stop = start + rows.shape[1]
                if full:
                    weights[layer, :, start:stop, : rows.shape[2]] = rows.numpy()
                else:
                    ids, values = top_k(rows.numpy(), k)
                    top_keys[layer, :, start:stop, : ids.shape[-1]] = ids
                    top_weights[layer, :, start:stop, : ids.shape[-1]] = values
                start = stop
        record = AttentionRecord(
            queries=queries.half().numpy(),
            keys=keys.half().numpy(),
            scaling=self.scaling.copy(),
            kind=self.kind,
            weights=weights if full else None,
            top_keys=None if full else top_keys,
            top_weights=None if full else top_weights,
        )
        record.validate(n_layers, n_tokens)
        return record


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(IMPLEMENTATION, _dispatch)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)  # the mask eager attention uses


_ACTIVE: list[_Recorder] = []
"""The recorder of the capture running now (one at a time: capture runs under inference mode
on one thread)."""


def _dispatch(module, query, key, value, attention_mask, **kwargs):
    if not _ACTIVE:
        raise LayerscanError("layerscan's attention recorder was called outside a capture")
    return _ACTIVE[-1](module, query, key, value, attention_mask, **kwargs)


def check_attention_supported(model: Any) -> None:
    """Raise a one-line LayerscanError when --attention cannot record this model's attention."""
    can_set = getattr(model, "_can_set_attn_implementation", None)
    if can_set is None or not can_set():
        raise LayerscanError(
            f"--attention: {model.config.model_type!r} does not route its attention through "
            f"transformers' AttentionInterface, so layerscan cannot record it; drop --attention"
        )
    attention_modules(model)  # raises, naming the table, for an unknown architecture


@contextlib.contextmanager
def recording_attention(model: Any, kind: AttentionKind = "weights") -> Iterator[_Recorder]:
    """Inside the block the model runs eager attention and every layer's attention is recorded.

    The model's own attention implementation (sdpa, flash) is restored on exit.
    """
    check_attention_supported(model)
    _register()
    modules = attention_modules(model)
    recorder = _Recorder({id(m): layer for layer, m in enumerate(modules)}, kind)
    before = model.config._attn_implementation
    model.set_attn_implementation(IMPLEMENTATION)
    _ACTIVE.append(recorder)
    try:
        yield recorder
    finally:
        _ACTIVE.pop()
        model.set_attn_implementation(before)


@contextlib.contextmanager
def maybe_recording(model: Any, options: Any) -> Iterator[_Recorder | None]:
    """`recording_attention` when CaptureOptions ask for --attention; else nothing (None)."""
    if not options.attention:
        yield None
        return
    kind = "value-weighted" if options.value_weighted else "weights"
    with recording_attention(model, kind) as recorder:
        yield recorder
