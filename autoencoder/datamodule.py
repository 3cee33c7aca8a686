"""LightningDataModule: corpus -> token windows -> cached hidden states -> training batches."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from layerscan.autoencoder.cache import ExtractionJob, HiddenStateCache, build_cache, cache_key
from layerscan.autoencoder.config import RunConfig
from layerscan.autoencoder.corpus import corpus_hash, default_documents, read_documents
from layerscan.autoencoder.data import (
    WindowDataset,
    collate,
    sample_windows,
    split_windows,
    token_windows,
)
from layerscan.autoencoder.moments import StateMoments
from layerscan.core.errors import Caution, Notice

STATS_TOKENS = 65536
"""Tokens per layer sampled to estimate the covariance that initializes the linear codes."""


class HiddenStateDataModule(pl.LightningDataModule):
    """Builds (once) and serves the hidden-state cache of a corpus for one language model.

    `prepare_data` builds the cache (with one process per device when `config.train` asks for
    more than one: `train.devices`, `train.num_nodes`; see `extraction.extract_in_parallel`),
    `setup` reads it and splits train/validation windows, then the data loaders.

    Args:
        config: the run config (data section and model.max_len are used).
        cache_root: folder for caches (default: the layerscan cache dir).
        progress: show progress bars while generating and extracting.
    """

    def __init__(
        self,
        config: RunConfig,
        cache_root: str | Path | None = None,
        progress: bool = True,
    ) -> None:
        super().__init__()
        self.config, self.progress = config, progress
        self.parallel = config.train.data_parallel()
        if cache_root is None:
            from layerscan.autoencoder.capture.loading import cache_dir

            cache_root = cache_dir()
        self.cache_root = Path(cache_root)
        self.cache: HiddenStateCache | None = None
        self.info: dict = {}

    def _documents(self, loaded) -> list[str]:
        data = self.config.data
        if data.corpus == "default":
            return default_documents(
                loaded,
                self.cache_root / "corpus",
                data.continuation_tokens,
                data.continuations_per_seed,
                data.max_documents,
                self.config.train.seed,
                self.progress,
            )
        return read_documents(data.corpus, data.text_field, data.hf_split, data.max_documents)

    def prepare_data(self) -> None:
        """Build the cache if needed: read, tokenize, chunk, extract (runs on one process;
        once: the trainer calls it again)."""
        if not self.info:
            self.cache_folder()

    def cache_folder(self) -> Path:
        """The cache folder for this config, built first if it does not exist yet."""
        from layerscan.autoencoder.capture.hidden_states import hidden_states_batch
        from layerscan.autoencoder.capture.loading import load_model

        data, max_len = self.config.data, self.config.model.max_len
        if (
            data.corpus != "default"
            and not data.corpus.startswith("hf:")
            and not Path(data.corpus).exists()
        ):
            read_documents(data.corpus)  # raises the one-line error before loading a model
        # data-parallel: each process loads a whole copy, and Lightning puts it on its device
        device = "cpu" if self.parallel and data.device == "auto" else data.device
        loaded = load_model(
            data.language_model,
            device=device,
            dtype=data.dtype,
            trust_remote_code=data.trust_remote_code,
        )
        docs = self._documents(loaded)
        dtype = next(loaded.model.parameters()).dtype
        # float32 states keep the key they always had; other precisions get their own cache
        precision = "" if dtype == torch.float32 else "-" + str(dtype).removeprefix("torch.")
        key = cache_key(
            loaded.model_id,
            loaded.revision,
            data.normalization + precision,
            max_len,
            corpus_hash(docs),
        )
        folder = self.cache_root / "hidden" / key
        self.info.update(
            model_id=loaded.model_id,
            revision=loaded.revision,
            architecture=loaded.architecture,
            corpus=data.corpus,
            n_documents=len(docs),
            cache=str(folder),
        )
        if (folder / "meta.json").is_file():
            return folder
        windows, owner = token_windows(loaded.tokenizer, docs, max_len, data.corpus)
        n_tokens = sum(len(w) for w in windows)
        warnings.warn(
            f"extracting the hidden states of {len(windows)} windows ({n_tokens} "
            f"tokens) once, into {folder} (the time it takes is measured on the first batches "
            f"and said next)",
            Notice,
            stacklevel=2,
        )
        job = ExtractionJob(
            folder,
            windows,
            owner,
            dict(self.info, normalization=data.normalization, max_len=max_len),
        )
        if self.parallel:
            from layerscan.autoencoder.extraction import extract_in_parallel

            extract_in_parallel(
                job,
                loaded,
                data.normalization,
                data.extract_batch_size,
                self.config.train,
                self.progress,
            )
        else:
            build_cache(
                job,
                lambda batch: hidden_states_batch(loaded, batch, data.normalization),
                data.extract_batch_size,
                self.progress,
            )
        return folder

    def setup(self, stage: str | None = None) -> None:
        if self.cache is not None:
            return
        folder = self.cache_folder() if not self.info else Path(self.info["cache"])
        self.cache = HiddenStateCache(folder)
        self.info.update(
            {k: self.cache.meta[k] for k in ("model_id", "revision", "architecture", "n_tokens")}
        )
        documents = [w.document for w in self.cache.windows]
        self.train_indices, self.val_indices = split_windows(
            documents, self.config.data.val_fraction, self.config.train.seed
        )
        self.info.update(
            n_windows=len(documents),
            n_train_windows=len(self.train_indices),
            n_val_windows=len(self.val_indices),
        )
        self._check_lengths()

    def _check_lengths(self) -> None:
        """Warn (one line) when every window is short enough to be stored exactly."""
        exact = self.config.model.exact_len(self.cache.d_model)
        longest = max(w.length for w in self.cache.windows)
        if longest <= exact:
            warnings.warn(
                f"corpus {self.config.data.corpus}: its longest window has {longest} tokens, "
                f"and up to {exact} (n_particles / ranks) the autoencoder stores every token "
                f"exactly, so training learns nothing (R² 1.000 is no result); give documents "
                f"longer than {exact} tokens, e.g. paragraphs instead of lines",
                Caution,
                stacklevel=2,
            )

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-layer mean (n_layers+1, d), scale (n_layers+1,) and covariance
        (n_layers+1, d, d) of the training windows' states (the mean over all of them; scale
        and covariance on a sample of STATS_TOKENS tokens, see `StateMoments.statistics`)."""
        cache = self.cache
        total = torch.zeros(cache.n_layers + 1, cache.d_model, dtype=torch.float64)
        count = 0
        for index in self.train_indices:
            states = torch.from_numpy(cache.window(index)).double()  # (n_layers+1, length, d)
            total += states.sum(1)
            count += states.shape[1]
        moments = StateMoments(cache.n_layers, cache.d_model)
        lengths = [w.length for w in cache.windows]
        for index in sample_windows(
            self.train_indices, lengths, STATS_TOKENS, self.config.train.seed
        ):
            moments.add(torch.from_numpy(cache.window(index)))
        return moments.statistics(total / count)

    def train_dataloader(self) -> DataLoader:
        data = self.config.data
        dataset = WindowDataset(
            self.cache, self.train_indices, data.layers_per_window, data.min_len, train=True
        )
        return DataLoader(
            dataset,
            batch_size=data.batch_size,
            shuffle=True,
            collate_fn=collate,
            num_workers=data.num_workers,
            drop_last=len(dataset) > data.batch_size,
            persistent_workers=data.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        data = self.config.data
        dataset = WindowDataset(
            self.cache, self.val_indices, data.layers_per_window, data.min_len, train=False
        )
        rows = max(1, data.batch_size * data.layers_per_window // (self.cache.n_layers + 1))
        return DataLoader(
            dataset,
            batch_size=rows,
            collate_fn=collate,
            num_workers=data.num_workers,
            persistent_workers=data.num_workers > 0,
        )
