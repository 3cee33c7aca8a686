"""Token windows of a corpus and the datasets that serve their cached hidden states."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
from torch.utils.data import Dataset

from layerscan.autoencoder.cache import HiddenStateCache
from layerscan.core.errors import LayerscanError


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
