"""On-disk hidden-state cache: memory-mapped shards of every layer's states, extracted once."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerscan.errors import LayerscanError
from layerscan.files import atomic_path

CACHE_FORMAT_VERSION = 1
SHARD_TOKENS = 8192
"""Tokens per shard file; a shard holds (n_layers+1, SHARD_TOKENS, d_model) values."""
META_NAME = "meta.json"


def cache_key(model_id: str, revision: str | None, normalization: str, max_len: int,
              corpus_hash: str) -> str:
    """Folder name of a cache: readable prefix + hash of everything the states depend on."""
    fields = [CACHE_FORMAT_VERSION, model_id, revision, normalization, max_len, corpus_hash]
    digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()[:16]
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id.split("/")[-1])[-40:].strip("-")
    return f"{slug}-{normalization}-L{max_len}-{digest}"


@dataclass
class WindowIndex:
    """Where one window's states live in the shards."""

    shard: int
    offset: int
    length: int
    document: int
    """Index of the document the window was cut from (validation splits by document)."""


class HiddenStateCache:
    """Read-only view of a built cache folder: `window(i)` is (n_layers+1, length, d_model).

    Args:
        folder: a folder written by `build_cache`.
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        meta_file = self.folder / META_NAME
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if meta.get("format_version") != CACHE_FORMAT_VERSION:
                raise ValueError(f"format version {meta.get('format_version')}")
            self.meta = meta
            self.windows = [WindowIndex(*w) for w in meta["windows"]]
            self.shards = [np.load(self.folder / name, mmap_mode="r")
                           for name in meta["shards"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LayerscanError(f"{self.folder}: unusable hidden-state cache ({exc}); delete "
                                 "the folder and it will be rebuilt") from exc
        # n_layers transformer blocks: a window holds n_layers+1 hidden states per token
        self.n_layers, self.d_model = int(meta["n_layers"]), int(meta["d_model"])

    def __len__(self) -> int:
        return len(self.windows)

    def window(self, index: int, layers: np.ndarray | slice = slice(None),
               length: int | None = None) -> np.ndarray:
        """(n_selected_layers, length, d_model) float32 states of window `index` (a prefix)."""
        w = self.windows[index]
        length = w.length if length is None else min(length, w.length)
        view = self.shards[w.shard][layers, w.offset:w.offset + length]
        return np.asarray(view, dtype=np.float32)


def build_cache(folder: str | os.PathLike, windows: list[list[int]], documents: list[int],
                extract, meta: dict, batch_size: int = 16, progress: bool = True) -> Path:
    """Extract every window's states once (batched) into memory-mapped shards, atomically.

    Args:
        folder: the cache folder to create (written as a temporary folder, then renamed).
        windows: token ids of each window (1..max_len tokens each).
        documents: (n_windows,) index of the document each window came from.
        extract: function(list of id lists) -> list of (n_layers+1, len, d_model) arrays.
        meta: JSON-able description (model id, normalization, corpus hash, ...), stored.
        batch_size: windows per forward pass.
    """
    if not windows:
        raise LayerscanError("nothing to cache: the corpus produced no token windows")
    folder = Path(folder)
    order = sorted(range(len(windows)), key=lambda i: len(windows[i]))  # similar lengths batch
    first = extract([windows[order[0]]])[0]
    n_layers, d_model = first.shape[0] - 1, first.shape[2]
    lengths = [len(w) for w in windows]
    # pack windows into shards in corpus order
    index, shard_sizes, shard, offset = [], [], 0, 0
    for i, n in enumerate(lengths):
        if offset + n > SHARD_TOKENS and offset > 0:
            shard_sizes.append(offset)
            shard, offset = shard + 1, 0
        index.append(WindowIndex(shard, offset, n, documents[i]))
        offset += n
    shard_sizes.append(offset)
    bar = _progress(len(windows), progress)
    with atomic_path(folder, suffix="") as tmp:
        tmp.mkdir()
        names = [f"shard_{s:04d}.npy" for s in range(len(shard_sizes))]
        arrays = [np.lib.format.open_memmap(tmp / name, mode="w+", dtype=np.float16,
                                            shape=(n_layers + 1, size, d_model))
                  for name, size in zip(names, shard_sizes, strict=True)]
        overflow = False
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            for i, states in zip(batch, extract([windows[i] for i in batch]), strict=True):
                w = index[i]
                if not np.isfinite(states).all():
                    raise LayerscanError(f"the language model produced NaN/inf states for "
                                         f"window {i}; try --set data.normalization=final-norm")
                overflow |= bool(np.abs(states).max() > 60000)
                arrays[w.shard][:, w.offset:w.offset + w.length] = states
            bar.update(len(batch))
        bar.close()
        if overflow:
            raise LayerscanError("hidden states exceed the float16 range of the cache; use "
                                 "--set data.normalization=final-norm or standardize")
        for array in arrays:
            array.flush()
        del arrays
        full_meta = dict(meta, format_version=CACHE_FORMAT_VERSION, n_layers=n_layers,
                         d_model=d_model, shards=names, n_tokens=sum(lengths),
                         windows=[[w.shard, w.offset, w.length, w.document] for w in index])
        (tmp / META_NAME).write_text(json.dumps(full_meta), encoding="utf-8")
    return folder


def _progress(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="extracting hidden states", unit="window",
                disable=not enabled, leave=False)
