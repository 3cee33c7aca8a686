"""An autoencoder for any model, fitted on first use from corpus statistics, cached, reused.

The particle autoencoder is, up to its small decoder network, a per-layer PCA: its bases come
from each layer's mean, scale and covariance over a corpus (`set_statistics`), and prompts up
to n_particles / ranks tokens (56 for a 576-wide model) are stored exactly whatever the network
learned. So a model without an autoencoder gets one in about a minute: the statistics of the
hidden states of a sample of the default corpus's text, taken exactly as training takes them
(same windows, split and sample order), with the decoder network left at zero. `layerscan
train` later adds the trained network and the whole corpus (0.001-0.008 R² at 64-128 tokens on
SmolLM2; see docs/autoencoder.md, "A model of your own").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import warnings
from pathlib import Path

import torch

from layerscan.autoencoder.artifact import (
    CONFIG_NAME,
    DEFAULT_ARTIFACT,
    ArtifactConfig,
    TrainedAutoencoder,
    export_autoencoder,
    load_autoencoder,
)
from layerscan.autoencoder.cache import cache_key
from layerscan.autoencoder.capture.architectures import ARCHITECTURES, TABLE_PATH, context_length
from layerscan.autoencoder.capture.hidden_states import hidden_states_batch
from layerscan.autoencoder.capture.loading import EMBEDDED_ALIASES, LoadedModel, cache_dir
from layerscan.autoencoder.config import FitOptions, RunConfig, load_config
from layerscan.autoencoder.corpus import PACKAGED_TEXT, packaged_documents
from layerscan.autoencoder.data import (
    sample_windows,
    split_windows,
    token_windows,
)
from layerscan.autoencoder.model import ParticleAutoencoder
from layerscan.autoencoder.moments import StateMoments
from layerscan.autoencoder.reporting import RateEstimate
from layerscan.core.errors import LayerscanError, Notice
from layerscan.core.locks import exclusive

FIT = "fit"
"""`--autoencoder fit`: fit one (or reuse the cached fit) even where one is packaged."""
FOLDER = "autoencoders"
"""Subfolder of the layerscan cache dir ($LAYERSCAN_CACHE) that holds fitted autoencoders."""
FIT_VERSION = 1
"""Part of every fit's cache key: raise it when the recipe changes."""


def needs_fit(choice: str | None, model: str, normalization: str) -> bool:
    """Whether the autoencoder is fitted (first use) or cached-fitted rather than loaded.

    Args:
        choice: --autoencoder: a folder, "fit", or None (the packaged one where it serves).
        model: --model.
        normalization: the capture's normalization.
    """
    if choice is not None:
        return choice == FIT
    return model not in EMBEDDED_ALIASES or normalization != _packaged_normalization()


def _packaged_normalization() -> str:
    return json.loads((DEFAULT_ARTIFACT / CONFIG_NAME).read_text(encoding="utf-8"))["normalization"]


def check_fittable(architecture: str) -> None:
    """Refuse, in one line, to fit for a model whose architecture capture does not know."""
    if architecture not in ARCHITECTURES:
        raise LayerscanError(
            f"architecture {architecture!r} is not in layerscan's capture table, so no "
            f"autoencoder is fitted for it; add it to {TABLE_PATH}, or train one with "
            f"`layerscan train --set data.language_model=MODEL --set data.normalization=raw` "
            f"and pass it with --autoencoder DIR"
        )


def fit_config(loaded: LoadedModel, normalization: str) -> RunConfig:
    """The packaged default's config for `loaded`: its max_len capped at the model's context
    (the ranks follow the hidden size), the data section naming the model and normalization."""
    import layerscan.configs as packaged

    default = load_config(Path(packaged.__file__).parent / "default.yaml")
    limit = context_length(loaded.config, loaded.tokenizer)
    max_len = default.model.max_len if limit is None else min(default.model.max_len, limit)
    return dataclasses.replace(
        default,
        model=dataclasses.replace(default.model, max_len=max_len),
        data=dataclasses.replace(
            default.data, language_model=loaded.model_id, normalization=normalization
        ),
        output="",
        export="",
    )


def fit_folder(
    loaded: LoadedModel, config: RunConfig, options: FitOptions, root: Path | None = None
) -> Path:
    """Where the fit of `loaded` is cached: keyed by the model (a local folder by its path and
    its files' sizes and times), revision, precision, normalization, config and recipe."""
    model_id, revision = loaded.model_id, loaded.revision
    folder = Path(model_id).expanduser()
    if model_id not in EMBEDDED_ALIASES and folder.is_dir():
        files = [
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.iterdir())
            if p.suffix in (".json", ".safetensors")
        ]
        model_id, revision = str(folder.resolve()), f"{revision}:{files}"
    recipe = json.dumps(
        [
            FIT_VERSION,
            dataclasses.asdict(config.model),
            options.fit_tokens,
            str(next(loaded.model.parameters()).dtype),
            hashlib.sha256(PACKAGED_TEXT.read_bytes()).hexdigest(),
        ]
    )
    key = cache_key(
        model_id,
        revision,
        config.data.normalization,
        config.model.max_len,
        hashlib.sha256(recipe.encode()).hexdigest(),
    )
    return (cache_dir() if root is None else Path(root)) / FOLDER / key


def fitted_autoencoder(
    loaded: LoadedModel,
    normalization: str,
    options: FitOptions | None = None,
    root: Path | None = None,
    progress: bool = True,
) -> TrainedAutoencoder:
    """The cached fit of `loaded`'s autoencoder, fitted first if there is none yet.

    Args:
        loaded: the model (it extracts the states a fit needs).
        normalization: the capture's normalization; each has its own fit.
        options: the fit's settings.
        root: the cache dir (default: $LAYERSCAN_CACHE or the user cache dir).
        progress: show a progress bar while fitting.
    """
    options = options or FitOptions()
    check_fittable(loaded.architecture)
    config = fit_config(loaded, normalization)
    folder = fit_folder(loaded, config, options, root)
    if not (folder / CONFIG_NAME).is_file():
        with exclusive(folder, f"the autoencoder fit {folder}", wait=True):
            if not (folder / CONFIG_NAME).is_file():  # another process may have fitted it
                fit_autoencoder(loaded, config, folder, options, progress)
    try:
        trained = load_autoencoder(folder)
    except LayerscanError as exc:
        raise LayerscanError(
            f"the cached autoencoder fit {folder} is unusable ({exc}); delete "
            f"that folder and it is fitted again"
        ) from exc
    # the key holds the model's resolved folder: the record names it as this run does
    return TrainedAutoencoder(
        trained.model, dataclasses.replace(trained.config, model_id=loaded.model_id)
    )


def fit_autoencoder(
    loaded: LoadedModel, config: RunConfig, folder: Path, options: FitOptions, progress: bool = True
) -> Path:
    """Fit an autoencoder from the statistics of `loaded`'s states on the training windows of
    the packaged default text (a seeded sample of options.fit_tokens tokens, drawn as training
    draws its statistics sample), and export it to `folder` atomically: an interrupted fit
    leaves nothing there."""
    from tqdm import tqdm

    started = time.perf_counter()
    windows, owner = token_windows(
        loaded.tokenizer, packaged_documents(), config.model.max_len, "default"
    )
    lengths = [len(w) for w in windows]
    train, _ = split_windows(owner, config.data.val_fraction, config.train.seed)
    picked = sorted(
        sample_windows(train, lengths, options.fit_tokens, config.train.seed),
        key=lengths.__getitem__,
    )  # similar lengths batch together
    n_tokens = sum(lengths[i] for i in picked)
    warnings.warn(
        f"{loaded.model_id} has no autoencoder yet: fitting one, once, from its hidden "
        f"states on {n_tokens:,} tokens of the default corpus (the time it takes is measured "
        f"on the first batches and said next); it is kept in {folder.parent}",
        Notice,
        stacklevel=2,
    )
    bar = tqdm(
        total=n_tokens,
        desc="fitting the autoencoder",
        unit="token",
        leave=False,
        disable=not progress,
    )
    rate = RateEstimate(n_tokens, "hidden states for the autoencoder")
    moments = None
    batch_size = config.data.extract_batch_size
    for start in range(0, len(picked), batch_size):
        batch = [windows[i] for i in picked[start : start + batch_size]]
        for states in hidden_states_batch(loaded, batch, config.data.normalization):
            if not torch.isfinite(torch.from_numpy(states)).all():
                raise LayerscanError(
                    f"{loaded.model_id} produced NaN or infinite hidden "
                    f"states; use another --normalization or --dtype"
                )
            if moments is None:  # states: (n_layers+1, n_tokens, d_model)
                moments = StateMoments(states.shape[0] - 1, states.shape[2])
            moments.add(torch.from_numpy(states))
        bar.update(sum(len(ids) for ids in batch))
        rate.update(sum(len(ids) for ids in batch))
    bar.close()
    rate.finish()
    model = ParticleAutoencoder(config.model, moments.shift.shape[1], moments.shift.shape[0] - 1)
    model.set_statistics(*moments.statistics())
    seconds = time.perf_counter() - started
    record = ArtifactConfig(
        model_id=loaded.model_id,
        revision=loaded.revision,
        architecture=loaded.architecture,
        d_model=model.d_model,
        n_layers=model.n_layers,
        normalization=config.data.normalization,
        model=config.model,
        training={
            "recipe": "fit: corpus statistics only (decoder network at zero)",
            "corpus": "default (the packaged text)",
            "n_tokens": n_tokens,
            "n_windows": len(picked),
            "seconds": round(seconds, 1),
            "run_config": config.to_dict(),
        },
    )
    export_autoencoder(model, record, folder, half=config.export_half, overwrite=True)
    normalization = config.data.normalization
    train = f"layerscan train --model {loaded.model_id}" + (
        "" if normalization == "final-norm" else f" --set data.normalization={normalization}"
    )
    warnings.warn(
        f"fitted in {seconds:.0f} s and kept in {folder}; later runs reuse it (the "
        f"full training: `{train}`, then --autoencoder runs/default/artifact)",
        Notice,
        stacklevel=2,
    )
    return folder
