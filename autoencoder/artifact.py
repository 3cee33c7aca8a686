"""A trained autoencoder as a folder (config.json + weights.safetensors): export, load, encode."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch

from layerscan.autoencoder.basis_cache import basis_key, basis_path, read_basis, write_basis
from layerscan.autoencoder.capture.capture_file import NORMALIZATIONS
from layerscan.autoencoder.config import ModelConfig, from_dict
from layerscan.autoencoder.model import ParticleAutoencoder
from layerscan.core.errors import LayerscanError
from layerscan.core.limits import check_size
from layerscan.core.outputs import atomic_path

if TYPE_CHECKING:
    from layerscan.autoencoder.capture.capture_file import Capture

ARTIFACT_FORMAT = "layerscan-autoencoder"
ARTIFACT_FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME = "config.json", "weights.safetensors"
DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "pretrained" / "smollm2-135m-instruct"
"""The packaged autoencoder for the embedded SmolLM2-135M-Instruct."""
ROWS_PER_BATCH = 256
"""Prompt-layer rows encoded per forward pass (bounds memory for long prefix series)."""


@dataclass
class ArtifactConfig:
    """What an exported autoencoder records about itself (config.json)."""

    model_id: str
    """The language model whose hidden states it encodes."""
    d_model: int
    """Its hidden size."""
    n_layers: int
    """Its number of transformer blocks (clouds: n_layers + 1, the embeddings first)."""
    normalization: str
    """Capture normalization the states had in training: final-norm, standardize or raw."""
    model: ModelConfig
    """Autoencoder shape (n_particles, d_particle, max_len, ...)."""
    revision: str | None = None
    """Revision of the language model's weights, when known."""
    architecture: str = ""
    """transformers model_type of the language model."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Validation metrics: r2 per layer, mean-pool bound, R² by prompt length, ..."""
    training: dict[str, Any] = field(default_factory=dict)
    """How it was trained: run config, corpus, steps, minutes."""

    @property
    def n_particles(self) -> int:
        return self.model.n_particles

    @property
    def d_particle(self) -> int:
        return self.model.d_particle

    @property
    def max_len(self) -> int:
        """Longest prompt the decoder's network was trained on."""
        return self.model.max_len

    @property
    def max_tokens(self) -> int:
        """Longest prompt it encodes: one particle a token."""
        return self.model.n_particles

    def to_json(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        return {"format": ARTIFACT_FORMAT, "format_version": ARTIFACT_FORMAT_VERSION, **values}

    @classmethod
    def from_json(cls, values: dict[str, Any], where: str) -> ArtifactConfig:
        if values.get("format") != ARTIFACT_FORMAT:
            raise LayerscanError(f"{where}: not a layerscan autoencoder config")
        if values.get("format_version") != ARTIFACT_FORMAT_VERSION:
            raise LayerscanError(
                f"{where}: autoencoder format version "
                f"{values.get('format_version')}; this layerscan reads "
                f"{ARTIFACT_FORMAT_VERSION}. Retrain or re-export it."
            )
        values = {k: v for k, v in values.items() if k not in ("format", "format_version")}
        try:
            values["model"] = from_dict(ModelConfig, values["model"], ".model")
            config = cls(**values)
        except (KeyError, TypeError) as exc:
            raise LayerscanError(f"{where}: autoencoder config is incomplete ({exc})") from exc
        except LayerscanError as exc:
            raise LayerscanError(f"{where}: {exc}") from None
        config.check(where)
        return config

    def check(self, where: str) -> None:
        """Types and bounded sizes of the fields read from config.json (before any weights
        are allocated); a one-line LayerscanError that states the bound."""
        for name in ("model_id", "normalization", "architecture"):
            if not isinstance(getattr(self, name), str):
                raise LayerscanError(f"{where}: {name} must be text, got {getattr(self, name)!r}")
        if self.normalization not in NORMALIZATIONS:
            raise LayerscanError(f"{where}: unknown normalization {self.normalization!r}")
        check_size(self.d_model, "d_model", f"{where}: d_model")
        check_size(self.n_layers, "n_layers", f"{where}: n_layers")
        for name in ("metrics", "training"):
            if not isinstance(getattr(self, name), dict):
                raise LayerscanError(f"{where}: {name} must be an object")


class EncodedLayers(NamedTuple):
    """One prompt's clouds at every layer, with how well they reconstruct it."""

    clouds: np.ndarray
    """(n_layers+1, n_particles, d_particle) float32 particle clouds."""
    reconstruction_r2: np.ndarray
    """(n_layers+1,) float32 R² = 1 - SSE/SST of this prompt's states, per layer; SST is
    taken around the corpus mean of the layer (so the mean of the prompt scores above 0)."""
    particle_tokens: np.ndarray
    """(n_particles,) int32 the token each particle belongs to (the same at every layer)."""
    prompt_r2: np.ndarray
    """(n_layers+1,) float32 the same R² with SST around the prompt's own mean state: the
    share of what sets this prompt's tokens apart that the particles keep (lower; a
    one-token prompt, whose own spread is 0, gets `reconstruction_r2`)."""


class TrainedAutoencoder:
    """A trained `ParticleAutoencoder` in eval mode, with its record.

    Args:
        model: the network (statistics already set).
        config: what it encodes and how well.
    """

    def __init__(self, model: ParticleAutoencoder, config: ArtifactConfig) -> None:
        self.model = model.eval()
        self.config = config

    def check_compatible(self, capture: Capture, shapes_only: bool = False) -> None:
        """Raise a one-line LayerscanError if `capture` is not from this autoencoder's model.

        Args:
            capture: the states to encode.
            shapes_only: accept another model of the same hidden size, layer count and
                normalization (a fine-tune or adapter of the autoencoder's model, whose id
                differs). Only model-vs-model comparisons ask for this, for their side B.
        """
        c = self.config
        if (
            (capture.model_id != c.model_id and not shapes_only)
            or capture.d_model != c.d_model
            or capture.n_layers != c.n_layers
        ):
            raise LayerscanError(
                f"the autoencoder was trained on {c.model_id} (hidden size {c.d_model}, "
                f"{c.n_layers} layers) but the capture is from {capture.model_id} (hidden size "
                f"{capture.d_model}, {capture.n_layers} layers); train one for this model with "
                f"`layerscan train --set data.language_model=...` and pass it with "
                f"--autoencoder"
            )
        if capture.normalization != c.normalization:
            raise LayerscanError(
                f"the autoencoder was trained on {c.normalization!r} states but the capture "
                f"used {capture.normalization!r}; capture with --normalization "
                f"{c.normalization}"
            )

    def _check_hidden(self, hidden: np.ndarray) -> np.ndarray:
        hidden = np.asarray(hidden)
        expected = (self.config.n_layers + 1, self.config.d_model)
        if hidden.ndim != 3 or (hidden.shape[0], hidden.shape[2]) != expected:
            raise LayerscanError(
                f"hidden states of shape {hidden.shape} do not fit this autoencoder, which "
                f"expects (n_layers+1={expected[0]}, n_tokens, d_model={expected[1]}) from "
                f"{self.config.model_id}"
            )
        if hidden.shape[1] < 1:
            raise LayerscanError("cannot encode a prompt with no tokens")
        if hidden.shape[1] > self.config.max_tokens:
            raise LayerscanError(
                f"the capture has {hidden.shape[1]} tokens but this autoencoder encodes at "
                f"most {self.config.max_tokens} (one particle a token); shorten the prompt "
                f"(generated tokens count too)"
            )
        if not np.isfinite(hidden).all():
            raise LayerscanError("hidden states contain NaN or infinite values")
        return hidden.astype(np.float32, copy=False)

    def encode(self, hidden: np.ndarray) -> EncodedLayers:
        """Encode one prompt at every layer.

        Args:
            hidden: (n_layers+1, n_tokens, d_model) float32 states, n_tokens <= n_particles.
        """
        hidden = self._check_hidden(hidden)
        return self.encode_prefixes(hidden, [hidden.shape[1]])[0]

    def encode_prefixes(self, hidden: np.ndarray, lengths: list[int]) -> list[EncodedLayers]:
        """Encode the prefixes hidden[:, :p] for each p in `lengths`, batched (token-time).

        Args:
            hidden: (n_layers+1, n_tokens, d_model) float32 states of a causal prompt.
            lengths: prefix lengths in 1..n_tokens.

        Returns:
            One EncodedLayers per length, in order.
        """
        hidden = self._check_hidden(hidden)
        n_layers, n_tokens = hidden.shape[0] - 1, hidden.shape[1]
        for p in lengths:
            if not 1 <= int(p) <= n_tokens:
                raise LayerscanError(f"prefix length {p} outside 1..{n_tokens}")
        rows = [(int(p), layer) for p in lengths for layer in range(n_layers + 1)]
        device = self.model.mean.device
        states = torch.from_numpy(np.ascontiguousarray(hidden)).to(device)  # (n_layers+1, T, d)
        clouds, r2, own_r2 = [], [], []
        with torch.inference_mode():
            layers = torch.arange(n_layers + 1, device=device)
            codes = self.model.token_codes(states, layers)  # (n_layers+1, T, n_ranks, d_particle)
            for start in range(0, len(rows), ROWS_PER_BATCH):
                chunk = rows[start : start + ROWS_PER_BATCH]
                lens = torch.tensor([p for p, _ in chunk], device=device)
                layer = torch.tensor([lay for _, lay in chunk], device=device)
                longest = int(lens.max())
                cloud = self.model.route(codes[layer, :longest], lens)  # (rows, N, k)
                recon = self.model.decode(cloud, layer, lens)  # (rows, longest, d_model)
                mask = torch.arange(longest, device=device)[None] < lens[:, None]
                clouds.append(cloud.float().cpu())
                hidden = states[layer, :longest]  # (rows, longest, d_model)
                r2.append(layer_r2(self.model, hidden, recon, layer, mask).cpu())
                own_r2.append(prompt_r2(hidden, recon, mask).cpu())
        clouds_t = torch.cat(clouds).view(len(lengths), n_layers + 1, *clouds[0].shape[1:])
        r2_t = torch.cat(r2).view(len(lengths), n_layers + 1)
        own_t = torch.cat(own_r2).view(len(lengths), n_layers + 1)
        own_t = torch.where(torch.tensor(lengths)[:, None] > 1, own_t, r2_t)  # 1 token: no SST
        return [
            EncodedLayers(
                clouds=c.numpy().astype(np.float32),
                reconstruction_r2=r.numpy().astype(np.float32),
                particle_tokens=self.model.particle_tokens(p).numpy().astype(np.int32),
                prompt_r2=o.numpy().astype(np.float32),
            )
            for c, r, p, o in zip(clouds_t, r2_t, lengths, own_t, strict=True)
        ]


def layer_r2(
    model: ParticleAutoencoder,
    hidden: torch.Tensor,
    reconstruction: torch.Tensor,
    layer: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """(batch,) R² per row: 1 - SSE / SST, SST around the layer's corpus mean.

    Args:
        hidden, reconstruction: (batch, n_tokens, d_model); mask: (batch, n_tokens) bool.
    """
    from layerscan.autoencoder.evaluation import r2_terms

    sse, sst = r2_terms(hidden, reconstruction, model.mean[layer, None], mask)  # (batch,)
    return 1.0 - sse / sst.clamp_min(1e-12)


def prompt_r2(
    hidden: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """(batch,) R² per row with SST around the row's own mean over its real tokens.

    Args:
        hidden, reconstruction: (batch, n_tokens, d_model); mask: (batch, n_tokens) bool.
    """
    from layerscan.autoencoder.evaluation import r2_terms

    keep = mask[..., None].to(hidden.dtype)  # (batch, n_tokens, 1)
    mean = (hidden * keep).sum(1, keepdim=True) / keep.sum(1, keepdim=True).clamp_min(1)
    sse, sst = r2_terms(hidden, reconstruction, mean, mask)  # (batch,)
    return 1.0 - sse / sst.clamp_min(1e-12)


def export_autoencoder(
    model: ParticleAutoencoder,
    config: ArtifactConfig,
    folder: str | os.PathLike,
    half: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write `folder/config.json` and `folder/weights.safetensors`, atomically (temp + rename).

    Args:
        half: store weights as float16 (half the size; the per-layer statistics and the
            anchor variances stay float32). Loading always computes in float32.
        overwrite: replace an autoencoder folder that layerscan wrote before.
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        exact = ("mean", "scale", "variances")
        state = {
            k: v if k in exact or not v.is_floating_point() else v.half() for k, v in state.items()
        }
    with atomic_path(
        folder, suffix="", folder=True, overwrite=overwrite, kind="autoencoder"
    ) as tmp:
        tmp.mkdir()
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": ARTIFACT_FORMAT})
        (tmp / CONFIG_NAME).write_text(
            json.dumps(_jsonable(config.to_json()), indent=2), encoding="utf-8"
        )
        for path in (tmp, tmp / WEIGHTS_NAME, tmp / CONFIG_NAME):
            path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def load_autoencoder(
    folder: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    cache_bases: bool = True,
) -> TrainedAutoencoder:
    """Load an exported autoencoder; None loads the packaged one for the embedded model.

    Missing or corrupt folders raise a one-line LayerscanError. Never unpickles. The per-layer
    bases derived from the weights are cached under the layerscan cache dir, keyed by a hash
    of the artifact's files (see `basis_cache`); `cache_bases=False` derives them afresh.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from layerscan.core.tensor_file import check_container

    folder = DEFAULT_ARTIFACT if folder is None else Path(folder)
    config_file, weights_file = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not config_file.is_file() or not weights_file.is_file():
        raise LayerscanError(
            f"{folder}: not an autoencoder folder (needs {CONFIG_NAME} and "
            f"{WEIGHTS_NAME}); train one with `layerscan train`"
        )
    try:
        values = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LayerscanError(f"{config_file}: corrupt autoencoder config ({exc})") from exc
    if not isinstance(values, dict):
        raise LayerscanError(f"{config_file}: corrupt autoencoder config")
    config = ArtifactConfig.from_json(values, str(config_file))
    check_container(weights_file, "autoencoder weights")
    model = ParticleAutoencoder(config.model, config.d_model, config.n_layers)
    try:
        state = {
            k: v.float() if v.is_floating_point() else v
            for k, v in load_file(str(weights_file)).items()
        }
        if "encode_weight" in state:
            raise LayerscanError(
                f"{weights_file}: an autoencoder of the first design (learned "
                f"projections), which this layerscan no longer reads; retrain "
                f"it with `layerscan train`"
            )
        _check_shapes(model, state, config, weights_file)
        key = basis_key(config_file, weights_file)
        cached_at = basis_path(key) if cache_bases else None
        cached = None if cached_at is None else read_basis(cached_at, key, model.basis)
        model.derive_basis_on_load = cached is None  # a cached basis skips the per-layer eighs
        model.load_state_dict(state, strict=True)
        model.derive_basis_on_load = True
    except (OSError, SafetensorError, RuntimeError, ValueError) as exc:
        raise LayerscanError(
            f"{weights_file}: corrupt or mismatched autoencoder weights "
            f"({str(exc).splitlines()[0][:200]}); re-export or retrain it"
        ) from exc
    if not all(torch.isfinite(v).all() for v in state.values()):
        raise LayerscanError(f"{weights_file}: weights contain NaN or infinite values")
    if cached is not None:
        model.basis.copy_(cached)
    elif cached_at is not None:
        write_basis(cached_at, key, model.basis)
    return TrainedAutoencoder(model.to(device), config)


def _check_shapes(
    model: ParticleAutoencoder,
    state: dict[str, torch.Tensor],
    config: ArtifactConfig,
    weights_file: Path,
) -> None:
    """Name the first way the weights differ from what config.json describes, in one line."""
    expected = model.state_dict()
    if (
        "mean" in state
        and state["mean"].ndim == 2
        and tuple(state["mean"].shape) != tuple(expected["mean"].shape)
    ):
        n_seen, hidden = state["mean"].shape  # (n_layers+1, d_model)
        raise LayerscanError(
            f"{weights_file.parent}: config.json and {weights_file.name} disagree: hidden "
            f"{config.d_model} vs {hidden}, layers {config.n_layers} vs {n_seen - 1} (config vs "
            f"weights); re-export the autoencoder or restore its config.json"
        )
    for key, value in state.items():
        if key in expected and tuple(value.shape) != tuple(expected[key].shape):
            raise LayerscanError(
                f"{weights_file.parent}: config.json and {weights_file.name} disagree: {key} is "
                f"{tuple(expected[key].shape)} by the config vs {tuple(value.shape)} in the "
                f"weights; re-export the autoencoder or restore its config.json"
            )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
