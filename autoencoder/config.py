"""Typed configuration of the particle autoencoder and its training run, loaded from YAML."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerscan.autoencoder.capture.capture_file import NORMALIZATIONS, Normalization
from layerscan.core.errors import LayerscanError
from layerscan.core.limits import LIMITS, check_size

EXTRACTION_DTYPES = ("float32", "bfloat16", "float16", "auto")


@dataclass
class ModelConfig:
    """Shape of the particle autoencoder (the language model's sizes come from the data)."""

    n_particles: int = 1024
    """Particles per cloud (N)."""
    d_particle: int = 32
    """Features per particle."""
    max_len: int = 128
    """Longest prompt, in tokens, that one cloud encodes; longer documents are chunked."""
    d_pos: int = 32
    """Width of the position/length features that route tokens to particles."""
    n_ranks: int = 0
    """Distinct projections a token's particles can use; the rank-th particle of a token
    holds the rank-th projection (0: ceil(d_model / d_particle), enough for exact coding)."""
    n_anchors: int = 4
    """Corpus covariances of evenly spaced groups of layers; each layer's basis is the PCA of
    its mix of them (1: one basis for all layers). More anchors fit long prompts better but
    turn the bases more from layer to layer, so particles also move where the states do not."""
    detail_scale: float = 0.1
    """Distance of a token's particles from its main coordinates, as a share of their own
    coordinates: small keeps each token's particles a compact group in the cloud."""
    d_hidden: int = 512
    """Width of the decoder network that predicts the coordinates a token's particles cannot
    hold in long prompts (0: predict their corpus mean, zero)."""

    def __post_init__(self) -> None:
        if self.n_ranks < 0:
            raise LayerscanError(f"model.n_ranks must be >= 0, got {self.n_ranks}")
        for name in ("n_particles", "d_particle", "max_len", "d_pos", "n_anchors"):
            if getattr(self, name) < 1:
                raise LayerscanError(f"model.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.detail_scale <= 1:
            raise LayerscanError(f"model.detail_scale must be in (0, 1], got {self.detail_scale}")
        if self.n_particles < self.max_len:
            raise LayerscanError(
                f"model.n_particles ({self.n_particles}) must be >= "
                f"model.max_len ({self.max_len}): every token needs a particle"
            )
        if self.d_hidden < 0:
            raise LayerscanError(f"model.d_hidden must be >= 0, got {self.d_hidden}")
        for name, limit in (
            ("n_particles", LIMITS["n_particles"]),
            ("d_particle", LIMITS["d_particle"]),
            ("d_pos", LIMITS["d_particle"]),
            ("n_anchors", LIMITS["n_layers"]),
            ("d_hidden", LIMITS["d_hidden"]),
            ("n_ranks", self.n_particles),
        ):
            check_size(getattr(self, name), name, f"model.{name}", low=0, limit=limit)

    def ranks(self, d_model: int) -> int:
        """Projections per token: n_ranks, or ceil(d_model / d_particle) (enough to be exact)."""
        return min(self.n_ranks or -(-d_model // self.d_particle), self.n_particles)

    def exact_len(self, d_model: int) -> int:
        """Longest prompt whose every token holds all its projections (n_particles / ranks):
        up to it the autoencoder stores states exactly (28 tokens for 1024 x 16 and d=576)."""
        return self.n_particles // self.ranks(d_model)


@dataclass
class DataConfig:
    """Where the training text comes from and how its hidden states are cached."""

    corpus: str = "default"
    """"default" (seed prompts written for layerscan, continued by the language model), a .txt
    file (one document per line), a .jsonl file, a folder of .txt files, or "hf:NAME" for a
    Hugging Face dataset (needs the hub or its cache)."""
    text_field: str = "text"
    """Field that holds the text in .jsonl files and Hugging Face datasets."""
    hf_split: str = "train"
    """Split of a Hugging Face dataset."""
    max_documents: int = 0
    """Use at most this many documents (0: all)."""
    language_model: str = "embedded"
    """The transformer whose hidden states are encoded: "embedded", a folder, or a hub id."""
    normalization: Normalization = "final-norm"
    """How hidden states are normalized at capture; must match at use."""
    device: str = "auto"
    """Device that runs the language model during extraction (`train --device`)."""
    dtype: str = "float32"
    """Precision of the language model during extraction: float32, bfloat16, float16 or auto
    (bfloat16 on a GPU) (`train --dtype`); the cache is float16 either way."""
    trust_remote_code: bool = False
    """Allow the language model repository's own Python code to run."""
    extract_batch_size: int = 16
    """Windows per batched forward pass of the language model when building the cache."""
    val_fraction: float = 0.1
    """Share of documents held out for validation (split by document, never by window)."""
    batch_size: int = 16
    """Windows per training batch (each window contributes `layers_per_window` layers)."""
    layers_per_window: int = 8
    """Layers sampled from each window per batch (all layers are used in validation)."""
    min_len: int = 1
    """Shortest training prefix; each window is cut to a random length in min_len..max_len."""
    num_workers: int = 0
    """DataLoader worker processes."""
    continuation_tokens: int = 64
    """Default corpus: tokens the language model writes after each seed prompt."""
    continuations_per_seed: int = 3
    """Default corpus: sampled continuations per seed prompt."""

    def __post_init__(self) -> None:
        if not 0.0 < self.val_fraction < 1.0:
            raise LayerscanError(f"data.val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in (
            "batch_size",
            "layers_per_window",
            "min_len",
            "extract_batch_size",
            "continuation_tokens",
            "continuations_per_seed",
        ):
            if getattr(self, name) < 1:
                raise LayerscanError(f"data.{name} must be >= 1, got {getattr(self, name)}")
        if self.normalization not in NORMALIZATIONS:
            raise LayerscanError(
                f"data.normalization {self.normalization!r}: use {', '.join(NORMALIZATIONS)}"
            )
        if self.dtype not in EXTRACTION_DTYPES:
            raise LayerscanError(f"data.dtype {self.dtype!r}: use {', '.join(EXTRACTION_DTYPES)}")


@dataclass
class TrainConfig:
    """Optimizer, schedule and Lightning Trainer settings."""

    max_epochs: int = 40
    """Upper bound on epochs; early stopping or max_minutes usually ends sooner."""
    max_minutes: float = 0.0
    """Stop after this many minutes of training (0: no limit)."""
    steps_per_epoch: int = 0
    """Training batches per epoch (0: one pass over the training windows)."""
    lr: float = 3e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear warm-up steps before cosine decay."""
    gradient_clip: float = 1.0
    """Gradient norm clip (0: off)."""
    early_stopping_patience: int = 5
    """Epochs without a better validation loss before stopping (0: off)."""
    precision: str = "32-true"
    """Lightning precision: 32-true, bf16-mixed or 16-mixed (the last two on GPU)."""
    accelerator: str = "auto"
    """Lightning accelerator: auto, cpu, gpu."""
    devices: str = "auto"
    """Lightning devices per machine: auto, a count like 2 (-1: all), or ids like "0,1". More
    than one (or num_nodes > 1) also extracts the hidden states data-parallel."""
    num_nodes: int = 1
    """Machines of a multi-node run (Lightning num_nodes); each runs the same command, started
    by torchrun or SLURM, and --cache-dir must be a folder they share."""
    strategy: str = "auto"
    """Lightning strategy: auto, ddp, ddp_spawn, ... (DDP on CPU uses the gloo backend)."""
    seed: int = 0
    """Seed for weights, data order and prefix lengths."""
    checkpoint_every_n_steps: int = 50
    """Write `last.ckpt` every this many steps, so a killed run resumes mid-epoch."""
    log_every_n_steps: int = 10
    """How often training metrics are logged."""
    progress_bar: bool = True
    """Show Lightning's progress bar."""

    def __post_init__(self) -> None:
        if self.max_epochs < 1:
            raise LayerscanError(f"train.max_epochs must be >= 1, got {self.max_epochs}")
        if self.lr <= 0:
            raise LayerscanError(f"train.lr must be > 0, got {self.lr}")
        if self.precision not in ("32-true", "32", "bf16-mixed", "16-mixed", "64-true"):
            raise LayerscanError(
                f"train.precision {self.precision!r}: use 32-true, bf16-mixed or 16-mixed"
            )
        if self.num_nodes < 1:
            raise LayerscanError(
                f"train.num_nodes (--num-nodes) must be >= 1, got {self.num_nodes}"
            )
        self.lightning_devices()  # raises on a bad value

    def lightning_devices(self) -> str | int | list[int]:
        """`devices` as Lightning takes it: "auto", a count, or a list of device ids."""
        value = self.devices.strip()
        try:
            if value == "auto":
                return value
            if "," in value:
                ids = [int(v) for v in value.split(",") if v.strip()]
                if ids and min(ids) >= 0 and len(set(ids)) == len(ids):
                    return ids
            elif int(value) >= 1 or int(value) == -1:
                return int(value)
        except ValueError:
            pass
        raise LayerscanError(
            f"train.devices (--devices) {self.devices!r}: use auto, a count "
            f"like 2 (-1: all), or distinct device ids like 0,1"
        )

    def data_parallel(self) -> bool:
        """Whether more than one process is asked for (not "auto": that extracts in one)."""
        devices = self.lightning_devices()
        several = (
            devices == -1
            or (isinstance(devices, int) and devices > 1)
            or (isinstance(devices, list) and len(devices) > 1)
        )
        return several or self.num_nodes > 1


@dataclass
class RunConfig:
    """Everything `layerscan train` needs: model shape, data and training settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Autoencoder shape."""
    data: DataConfig = field(default_factory=DataConfig)
    """Corpus and hidden-state cache."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimizer and Trainer."""
    output: str = "runs/autoencoder"
    """Run folder: checkpoints, logs, and (unless `export` is set) the artifact in artifact/."""
    export: str = ""
    """Folder to export the trained autoencoder to (empty: `<output>/artifact`)."""
    export_half: bool = False
    """Store the exported weights as float16 (half the size)."""

    def __post_init__(self) -> None:
        if self.data.min_len > self.model.max_len:
            raise LayerscanError(
                f"data.min_len {self.data.min_len} exceeds model.max_len {self.model.max_len}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def from_dict(cls: type, values: dict[str, Any], where: str = "") -> Any:
    """Build dataclass `cls` from nested dicts; unknown keys and wrong types are errors."""
    if not isinstance(values, dict):
        raise LayerscanError(f"config{where}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise LayerscanError(
            f"config{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in values.items():
        nested = _NESTED.get((cls, name))
        kwargs[name] = (
            from_dict(nested, value, f"{where}.{name}")
            if nested
            else _coerce(value, fields[name].type, f"{where}.{name}".lstrip("."))
        )
    return cls(**kwargs)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    kind = str(annotation)
    if kind == "bool":
        if not isinstance(value, bool):
            raise LayerscanError(f"config {key}: expected true/false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise LayerscanError(f"config {key}: expected an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise LayerscanError(f"config {key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise LayerscanError(f"config {key}: expected a finite number, got {value!r}")
        return float(value)
    return value if isinstance(value, str) else str(value)


_NESTED = {
    (RunConfig, "model"): ModelConfig,
    (RunConfig, "data"): DataConfig,
    (RunConfig, "train"): TrainConfig,
}


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` strings (values parsed as YAML) to a nested config dict."""
    import yaml

    values = {k: dict(v) if isinstance(v, dict) else v for k, v in values.items()}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise LayerscanError(
                f"--set {item!r}: use --set section.key=value, e.g. --set train.lr=0.001"
            )
        *parents, leaf = key.strip().split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LayerscanError(f"--set {item!r}: {part} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return values


def load_config(
    path: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Read a YAML run config (None: the defaults) and apply `--set` overrides.

    Args:
        path: a YAML file, or a name of a config shipped in layerscan/configs ("tiny").
        overrides: strings like "train.lr=0.001".
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        if not file.is_file():
            import layerscan.configs as packaged

            shipped = Path(packaged.__file__).parent / f"{path}.yaml"
            if not shipped.is_file():
                raise LayerscanError(
                    f"config {path}: no such file (give a YAML path or a "
                    "shipped config name such as 'default' or 'tiny')"
                )
            file = shipped
        try:
            loaded = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise LayerscanError(
                f"config {file}: cannot read YAML ({exc})".splitlines()[0]
            ) from exc
        values = loaded or {}
        if not isinstance(values, dict):
            raise LayerscanError(f"config {file}: top level must be a mapping")
    values = apply_overrides(values, overrides or [])
    try:
        return from_dict(RunConfig, values)
    except TypeError as exc:
        raise LayerscanError(f"config: {exc}") from exc


@dataclass(frozen=True)
class FitOptions:
    """How an autoencoder is fitted for a model that has none (on first use, then cached)."""

    fit_tokens: int = field(default=16384, metadata={"metavar": "N"})
    """Tokens of the default corpus's text whose hidden states fit an autoencoder for a model
    that has none (more: slower, and closer to a full `layerscan train`; SmolLM2 reads the
    whole corpus's 59,000 training tokens at 60,000)."""

    def __post_init__(self) -> None:
        if self.fit_tokens < 1:
            raise LayerscanError(f"--fit-tokens must be >= 1, got {self.fit_tokens}")
