"""LightningDataModule: corpus -> token windows -> cached hidden states -> training batches."""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from layerscan.autoencoder.cache import ExtractionJob, HiddenStateCache, build_cache, cache_key
from layerscan.autoencoder.config import RunConfig
from layerscan.autoencoder.corpus import about, corpus_hash, default_documents, read_documents
from layerscan.autoencoder.moments import StateMoments
from layerscan.core.errors import Caution, LayerscanError, Notice

EXTRACT_TOKENS_PER_S = 250
"""Tokens per second whose states a 135M-parameter model extracts on a 2-core CPU (measured:
66,309 tokens in 4.5 min), for the time extraction is announced to take."""
STATS_TOKENS = 65536
"""Tokens per layer sampled to estimate the covariance that initializes the linear codes."""


def chunk_windows(documents: list[list[int]], max_len: int) -> tuple[list[list[int]], list[int]]:
    """Cut each document's token ids into consecutive windows of at most max_len tokens.

    Nothing is dropped: the last window of a document may be shorter.

    Returns:
        windows and, for each, the index of its document.
    """
    windows, owner = [], []
    for doc, ids in enumerate(documents):
        for start in range(0, len(ids), max_len):
            windows.append(ids[start : start + max_len])
            owner.append(doc)
    return windows, owner


def split_windows(
    documents: list[int], val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices of training and validation windows, split by document (by window if one doc)."""
    n_docs = max(documents) + 1
    rng = np.random.default_rng(seed)
    if n_docs >= 2:
        val_docs = set(rng.permutation(n_docs)[: max(1, round(val_fraction * n_docs))].tolist())
        val = [i for i, d in enumerate(documents) if d in val_docs]
    elif len(documents) >= 2:
        val = sorted(
            rng.permutation(len(documents))[: max(1, round(val_fraction * len(documents)))].tolist()
        )
    else:
        raise LayerscanError(
            "the corpus is a single short document: it needs at least two "
            "documents (or one longer than max_len) to hold out validation"
        )
    held = set(val)
    return [i for i in range(len(documents)) if i not in held], val


def token_windows(
    tokenizer, documents: list[str], max_len: int, corpus: str = "the corpus"
) -> tuple[list[list[int]], list[int]]:
    """Tokenize documents and cut them into windows (see `chunk_windows`); documents without
    any token are dropped first, so window owners index the documents that have tokens."""
    ids = [tokenizer(doc, verbose=False)["input_ids"] for doc in documents]
    ids = [x for x in ids if x]
    if not ids:
        raise LayerscanError(f"corpus {corpus}: no document has any token")
    return chunk_windows(ids, max_len)


def sample_windows(indices: list[int], lengths: list[int], n_tokens: int, seed: int) -> list[int]:
    """Windows drawn from `indices` in a seeded random order until they hold n_tokens tokens
    (all of them if they hold fewer); `lengths` gives every window's token count."""
    picked, total = [], 0
    for index in np.random.default_rng(seed).permutation(indices):
        picked.append(int(index))
        total += lengths[int(index)]
        if total >= n_tokens:
            break
    return picked


class WindowDataset(Dataset):
    """Items: one window's states at some layers, cut to a prefix length.

    Training items draw the layers and the prefix length at random; validation items use all
    layers and a length fixed by the window's index.

    Args:
        cache: the hidden-state cache.
        indices: windows of this split.
        layers_per_window: layers drawn per item (training only).
        min_len: shortest prefix.
        train: random (training) or fixed (validation) layers and lengths.
    """

    def __init__(
        self,
        cache: HiddenStateCache,
        indices: list[int],
        layers_per_window: int,
        min_len: int,
        train: bool,
    ) -> None:
        self.cache, self.indices, self.train = cache, indices, train
        self.layers_per_window = min(layers_per_window, cache.n_layers + 1)
        self.min_len = min_len

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        index = self.indices[item]
        full = self.cache.windows[index].length
        low = min(self.min_len, full)
        if self.train:
            length = int(torch.randint(low, full + 1, ()).item())
            layers = torch.randperm(self.cache.n_layers + 1)[: self.layers_per_window].sort().values
        else:
            digest = hashlib.sha256(str(index).encode()).digest()
            length = low + int.from_bytes(digest[:4], "little") % (full - low + 1)
            layers = torch.arange(self.cache.n_layers + 1)
        states = self.cache.window(index, layers.numpy(), length)  # (n_sel, length, d_model)
        return {
            "hidden": torch.from_numpy(states),
            "layer": layers,
            "length": torch.full((len(layers),), length),
        }


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into rows: hidden (rows, longest, d_model) zero-padded, layer, lengths."""
    longest = max(int(item["length"][0]) for item in items)
    hidden = torch.cat(
        [
            torch.nn.functional.pad(item["hidden"], (0, 0, 0, longest - item["hidden"].shape[1]))
            for item in items
        ]
    )  # (rows, longest, d_model)
    return {
        "hidden": hidden,
        "layer": torch.cat([item["layer"] for item in items]),
        "lengths": torch.cat([item["length"] for item in items]),
    }


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
        size = sum(p.numel() for p in loaded.model.parameters()) / 135e6
        warnings.warn(
            f"extracting the hidden states of {len(windows)} windows ({n_tokens} "
            f"tokens) once, into {folder} ("
            f"{about(n_tokens / EXTRACT_TOKENS_PER_S * size)} on a CPU)",
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
