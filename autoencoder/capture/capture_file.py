"""The `Capture` record: one prompt's hidden states at every layer, its file format, and the
options a capture is asked for (`CaptureOptions`, importable without torch)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np

from layerscan.autoencoder.capture.component_record import Components
from layerscan.core.errors import LayerscanError
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
        return write_tensor_file(path, CAPTURE_KIND, CAPTURE_FORMAT_VERSION, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Capture:
        """Read a file written by `save`; a foreign, old or corrupt file raises LayerscanError."""
        arrays, meta = read_tensor_file(path, CAPTURE_KIND, CAPTURE_FORMAT_VERSION)
        meta["components"] = Components.from_file(arrays, meta.get("components"))
        try:
            capture = cls(
                hidden=arrays["hidden"],
                token_ids=arrays["token_ids"].tolist(),
                lens_ids=arrays.get("lens_ids"),
                lens_probs=arrays.get("lens_probs"),
                **meta,
            )
        except (KeyError, TypeError) as exc:
            raise LayerscanError(f"{path}: capture file is missing fields ({exc})") from exc
        capture.validate()
        return capture
