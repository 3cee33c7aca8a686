"""The `Capture` record: one prompt's hidden states at every layer, its file format, and the
options a capture is asked for (`CaptureOptions`, importable without torch)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from layerscan.autoencoder.capture.attention_record import AttentionRecord
from layerscan.autoencoder.capture.component_record import ARRAYS as COMPONENT_ARRAYS
from layerscan.autoencoder.capture.component_record import Components
from layerscan.core.errors import LayerscanError
from layerscan.core.limits import check_number, check_size
from layerscan.core.tensor_file import read_tensor_file, write_tensor_file

Normalization = Literal["final-norm", "standardize", "raw"]
"""How captured states are normalized: the one list every other module reads."""
NORMALIZATIONS: tuple[str, ...] = get_args(Normalization)

CAPTURE_KIND = "capture"
CAPTURE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class CaptureOptions:
    """What a capture keeps: normalization, generated tokens and the logit lens."""

    normalization: Normalization = "final-norm"
    """final-norm: the model's final norm on every layer, as the logit lens does; standardize:
    zero mean, unit variance per token and layer; raw: the residual stream as it is."""
    generate: int = field(default=0, metadata={"metavar": "N"})
    """Continue the prompt by N tokens and capture them too (causal models)."""
    sample: bool = False
    """Sample the generated tokens instead of greedy decoding."""
    temperature: float = 0.8
    """Sampling temperature (with --sample)."""
    chat: bool = False
    """Wrap the prompt in the model's chat template as a user message."""
    top_k: int = 5
    """Logit-lens tokens kept per layer and position (0 turns the lens off)."""
    lens_last: int = field(default=256, metadata={"metavar": "N"})
    """Logit lens of the last N tokens only (0: every token). Each token's lens is a pass of
    every layer through the LM head: for a 1024-token prompt, every token's takes longer than
    the rest of the scan."""
    seed: int = 0
    """Random seed for sampling."""
    attention: bool = False
    """Also capture attention: per layer and head the weights, queries and keys (the model runs
    eager attention for it; hidden states unchanged)."""
    value_weighted: bool = False
    """With --attention: keep the value-weighted attention a_ij·|v_j| (renormalised per query;
    Kobayashi et al. 2020) instead of the raw weights."""
    attention_all: bool = False
    """With --attention: keep every weight past 256 tokens too (else the top 32 keys per
    query)."""
    components: bool = False
    """Also measure, per block and token, what attention and the MLP write into the residual
    stream, the KV cache as it grows, and how each token's attention splits between the prompt
    and earlier generated tokens (one extra eager pass; decoders in the architecture table)."""

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise LayerscanError(
                f"unknown normalization {self.normalization!r}: use {', '.join(NORMALIZATIONS)}"
            )
        if self.generate < 0:
            raise LayerscanError(f"--generate must be 0 or more, got {self.generate}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise LayerscanError(f"--temperature must be a positive number, got {self.temperature}")
        if self.top_k < 0:
            raise LayerscanError(f"--top-k must be 0 (no logit lens) or more, got {self.top_k}")
        if self.lens_last < 0:
            raise LayerscanError(
                f"--lens-last must be 0 (every token) or more, got {self.lens_last}"
            )
        check_size(self.generate, "generate", "--generate", low=0)
        check_size(self.top_k, "top_k", "--top-k", low=0)
        check_size(self.seed, "seed", "--seed", low=0)
        check_number(self.temperature, "--temperature", 0, 100, low_open=True)
        if (self.value_weighted or self.attention_all) and not self.attention:
            raise LayerscanError("--value-weighted and --attention-all need --attention")


def layer_names(n_layers: int) -> list[str]:
    """The n_layers+1 hidden states' names: "embeddings", then "block 1".."block n_layers"."""
    return ["embeddings"] + [f"block {i}" for i in range(1, n_layers + 1)]


@dataclass
class Capture:
    """Hidden states of one prompt (and the tokens generated after it) at every layer."""

    hidden: np.ndarray
    """(n_layers+1, n_tokens, d_model) float32: embeddings, then the output of every block."""
    token_ids: list[int]
    """(n_tokens,) ids of the prompt tokens followed by any generated tokens."""
    tokens: list[str]
    """(n_tokens,) the same tokens as readable strings."""
    n_prompt_tokens: int
    """How many of the tokens are the prompt; the rest were generated."""
    model_id: str
    """The model as the user named it (hub id, folder or "embedded:…")."""
    revision: str | None
    """Hub commit or file hash of the weights, when known."""
    architecture: str
    """transformers `model_type`, e.g. "llama"."""
    normalization: Normalization
    """How `hidden` was normalized: the model's final norm on every layer, per-layer
    standardization, or raw residual-stream states."""
    is_causal: bool
    """Causal models give token-time for free: prefix p's states are `hidden[:, :p]`."""
    prompt: str = ""
    """The text as the user gave it (before any chat template)."""
    lens_ids: np.ndarray | None = None
    """(n_layers+1, n_tokens, top_k) int64 logit-lens top next-token ids, or None without a head."""
    lens_probs: np.ndarray | None = None
    """(n_layers+1, n_tokens, top_k) float32 their probabilities."""
    lens_tokens: list[list[list[str]]] | None = None
    """(n_layers+1, n_tokens, top_k) the logit-lens tokens as strings."""
    extra: dict = field(default_factory=dict)
    """Free-form settings (generation options, chat template used, ...)."""
    attention: AttentionRecord | None = None
    """Per layer and head: attention weights, queries and keys (with --attention)."""
    components: Components | None = None
    """Attention and MLP writes per block and token, KV cache, attention split (--components)."""

    @property
    def n_layers(self) -> int:
        """Number of transformer blocks (the hidden states hold one more: the embeddings)."""
        return self.hidden.shape[0] - 1

    @property
    def n_tokens(self) -> int:
        return self.hidden.shape[1]

    @property
    def d_model(self) -> int:
        return self.hidden.shape[2]

    @property
    def layer_names(self) -> list[str]:
        return layer_names(self.n_layers)

    def prefix(self, n_tokens: int) -> Capture:
        """The capture of the first `n_tokens` tokens (exact for causal models)."""
        if not self.is_causal:
            raise LayerscanError("prefixes of a capture are only exact for causal models")
        if not 1 <= n_tokens <= self.n_tokens:
            raise LayerscanError(f"prefix length {n_tokens} outside 1..{self.n_tokens}")
        cut = slice(0, n_tokens)
        return Capture(
            hidden=self.hidden[:, cut],
            token_ids=self.token_ids[cut],
            tokens=self.tokens[cut],
            n_prompt_tokens=min(self.n_prompt_tokens, n_tokens),
            model_id=self.model_id,
            revision=self.revision,
            architecture=self.architecture,
            normalization=self.normalization,
            is_causal=True,
            prompt=self.prompt,
            lens_ids=None if self.lens_ids is None else self.lens_ids[:, cut],
            lens_probs=None if self.lens_probs is None else self.lens_probs[:, cut],
            lens_tokens=None if self.lens_tokens is None else [t[cut] for t in self.lens_tokens],
            extra=dict(self.extra),
            attention=None if self.attention is None else self.attention.prefix(n_tokens),
            components=None if self.components is None else self.components.prefix(n_tokens),
        )

    def validate(self) -> None:
        """Raise LayerscanError if the fields disagree with each other."""
        if self.hidden.ndim != 3:
            raise LayerscanError(f"capture hidden states must be 3-D, got {self.hidden.shape}")
        n = self.n_tokens
        if len(self.token_ids) != n or len(self.tokens) != n:
            raise LayerscanError(
                f"capture has {n} token states but {len(self.token_ids)} ids "
                f"and {len(self.tokens)} token strings"
            )
        if not 0 <= self.n_prompt_tokens <= n:
            raise LayerscanError(f"capture n_prompt_tokens={self.n_prompt_tokens} outside 0..{n}")
        if self.normalization not in NORMALIZATIONS:
            raise LayerscanError(f"unknown normalization {self.normalization!r}")
        if self.lens_ids is not None:
            expected = self.hidden.shape[:2]
            if (
                self.lens_ids.shape[:2] != expected
                or self.lens_probs is None
                or self.lens_probs.shape != self.lens_ids.shape
            ):
                raise LayerscanError("capture logit-lens arrays do not match the hidden states")
        if self.attention is not None:
            self.attention.validate(self.n_layers, n)
        if self.components is not None:
            self.components.validate(self.n_layers, n)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the capture to one safetensors file (arrays) with JSON metadata."""
        self.validate()
        arrays = {
            "hidden": self.hidden.astype(np.float32),
            "token_ids": np.asarray(self.token_ids, dtype=np.int64),
        }
        if self.lens_ids is not None:
            arrays["lens_ids"] = self.lens_ids.astype(np.int64)
            arrays["lens_probs"] = self.lens_probs.astype(np.float32)
        if self.attention is not None:
            arrays.update(self.attention.arrays())
        if self.components is not None:
            arrays.update(self.components.arrays())
        meta = {
            "tokens": self.tokens,
            "n_prompt_tokens": self.n_prompt_tokens,
            "model_id": self.model_id,
            "revision": self.revision,
            "architecture": self.architecture,
            "normalization": self.normalization,
            "is_causal": self.is_causal,
            "prompt": self.prompt,
            "lens_tokens": self.lens_tokens,
            "extra": self.extra,
            "components": None if self.components is None else self.components.meta(),
        }
        if self.attention is not None:
            meta["attention_kind"] = self.attention.kind
        return write_tensor_file(path, CAPTURE_KIND, CAPTURE_FORMAT_VERSION, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Capture:
        """Read a file written by `save`; a foreign, old or corrupt file raises LayerscanError."""
        arrays, meta = read_tensor_file(path, CAPTURE_KIND, CAPTURE_FORMAT_VERSION)
        check_capture(path, arrays, meta)
        kind = meta.pop("attention_kind", "weights")
        meta["components"] = Components.from_file(arrays, meta.get("components"))
        capture = cls(
            attention=AttentionRecord.from_arrays(arrays, kind),
            hidden=arrays["hidden"],
            token_ids=arrays["token_ids"].tolist(),
            lens_ids=arrays.get("lens_ids"),
            lens_probs=arrays.get("lens_probs"),
            **meta,
        )
        capture.validate()
        return capture


CAPTURE_META = ("tokens", "n_prompt_tokens", "model_id", "revision", "architecture")
CAPTURE_META_REST = (
    "normalization",
    "is_causal",
    "prompt",
    "lens_tokens",
    "extra",
    "attention_kind",
    "components",
)
ATTENTION_ARRAYS = (
    "attention_queries",
    "attention_keys",
    "attention_scaling",
    "attention_weights",
    "attention_top_keys",
    "attention_top_weights",
)


def check_capture(path: str | os.PathLike, arrays: dict, meta: dict) -> None:
    """The one validation of a capture file at load: header fields and types, array dtypes,
    shapes against each other, bounded sizes, finite states; a one-line LayerscanError."""
    from layerscan.core.file_checks import FLOATS, INTS, FileCheck
    from layerscan.core.limits import LIMITS

    check = FileCheck(path, "capture")
    check.keys(meta, CAPTURE_META, CAPTURE_META_REST, "capture header")
    components = tuple(f"components/{name}" for name in COMPONENT_ARRAYS)
    check.only_arrays(
        arrays, ("hidden", "token_ids", "lens_ids", "lens_probs", *ATTENTION_ARRAYS, *components)
    )
    check.value(meta.get("components"), (dict, type(None)), "components")
    hidden = check.array(arrays, "hidden", FLOATS, (None, None, None))
    frames, n_tokens, d_model = hidden.shape
    for size, name in ((frames - 1, "n_layers"), (n_tokens, "n_tokens"), (d_model, "d_model")):
        if not 1 <= size <= LIMITS[name]:
            raise check.fail(f"its hidden states have {size} {name}, expected 1 to {LIMITS[name]}")
    check.array(arrays, "token_ids", INTS, (n_tokens,), low=0)
    check.strings(meta["tokens"], "tokens", n_tokens)
    check.integer(meta["n_prompt_tokens"], "n_prompt_tokens", 0, n_tokens)
    for name in ("model_id", "architecture"):
        check.value(meta[name], str, name)
    check.value(meta["revision"], (str, type(None)), "revision")
    if meta.get("normalization", "final-norm") not in NORMALIZATIONS:
        raise check.fail(f"unknown normalization {meta['normalization']!r}")
    check.value(meta.get("is_causal", True), bool, "is_causal")
    check.value(meta.get("prompt", ""), str, "prompt")
    check.value(meta.get("extra", {}), dict, "extra")
    ids = check.array(arrays, "lens_ids", INTS, (frames, n_tokens, None), low=0, required=False)
    probs = check.array(arrays, "lens_probs", FLOATS, (frames, n_tokens, None), required=False)
    lens = meta.get("lens_tokens")
    if (ids is None) != (probs is None) or (ids is not None and ids.shape != probs.shape):
        raise check.fail("its logit-lens ids and probabilities do not match")
    if lens is not None:
        if ids is None:
            raise check.fail("it has logit-lens tokens but no lens_ids")
        check.value(lens, list, "lens_tokens")
        if len(lens) != frames or any(
            not isinstance(layer, list) or len(layer) != n_tokens for layer in lens
        ):
            raise check.fail("its lens_tokens do not match its hidden states")
        for layer in lens:
            for row in layer:
                check.strings(row, "lens_tokens[layer][position]", ids.shape[2])
    _check_attention(check, arrays, meta, frames - 1, n_tokens)


def _check_attention(check, arrays: dict, meta: dict, n_layers: int, n_tokens: int) -> None:
    """Optional attention arrays: float queries and keys of one shape, finite, top keys within
    the tokens (-1 past a row), a known kind (AttentionRecord.validate checks the rest)."""
    from layerscan.core.file_checks import FLOATS, INTS

    if meta.get("attention_kind", "weights") not in ("weights", "value-weighted"):
        raise check.fail(f"unknown attention kind {meta['attention_kind']!r}")
    halves = (np.float16, *FLOATS)  # queries, keys and weights are stored as float16
    present = [name for name in ATTENTION_ARRAYS if name in arrays]
    if not present:
        return
    queries = check.array(arrays, "attention_queries", halves, (n_layers, None, n_tokens, None))
    check.array(arrays, "attention_keys", halves, queries.shape)
    check.array(arrays, "attention_scaling", FLOATS, (n_layers,))
    n_heads = queries.shape[1]
    check.array(
        arrays, "attention_weights", halves, (n_layers, n_heads, n_tokens, n_tokens), required=False
    )
    top = (n_layers, n_heads, n_tokens, None)
    check.array(arrays, "attention_top_keys", INTS, top, low=-1, high=n_tokens, required=False)
    check.array(arrays, "attention_top_weights", halves, top, required=False)
