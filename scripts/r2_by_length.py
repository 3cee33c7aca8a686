"""Held-out reconstruction R² by prompt length, up to the autoencoder's particle count (1024).

    python scripts/r2_by_length.py [--autoencoder DIR] [--max-tokens 1024] [--sequences 6]

The training corpus is cut into windows of max_len (128) tokens, so `layerscan eval` stops
there. Here the held-out documents of the default corpus (the split training used: same
fraction, same seed) are joined, blank line between, into sequences of --max-tokens tokens;
the embedded model runs once on each, and every length L is scored on each sequence's first
L tokens (causal attention: a prefix's states are the prompt's own). Two rows per length:
the autoencoder as trained, and the same weights with the decoder's network switched off
(missing coordinates at their corpus mean), to show what that network adds past the length
it was trained on. The mean-pool bound is beside them.
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from layerscan.autoencoder.artifact import load_autoencoder
from layerscan.autoencoder.capture.hidden_states import CaptureOptions, capture
from layerscan.autoencoder.capture.loading import cache_dir, load_model
from layerscan.autoencoder.config import DataConfig, TrainConfig, from_dict
from layerscan.autoencoder.corpus import default_documents
from layerscan.autoencoder.data import split_windows
from layerscan.autoencoder.evaluation import EVAL_LENGTHS, evaluate


class Sequences:
    """In-memory states of whole sequences, read like a HiddenStateCache by `evaluate`."""

    class Window:
        def __init__(self, length: int) -> None:
            self.length = length

    def __init__(self, states: list[np.ndarray]) -> None:
        self.states = states
        self.windows = [self.Window(s.shape[1]) for s in states]
        self.n_layers = states[0].shape[0] - 1

    def window(self, index: int, length: int | None = None) -> np.ndarray:
        return self.states[index][:, :length]


def held_out_sequences(loaded, trained, n_tokens: int, count: int) -> list[list[int]]:
    """Token ids of up to `count` sequences of n_tokens from the held-out documents."""
    recorded = trained.config.training.get("run_config", {})
    data = from_dict(DataConfig, recorded.get("data", {}))
    seed = from_dict(TrainConfig, recorded.get("train", {})).seed
    docs = default_documents(
        loaded,
        cache_dir() / "corpus",
        data.continuation_tokens,
        data.continuations_per_seed,
        data.max_documents,
        seed,
        progress=False,
    )
    ids = [i for i in (loaded.tokenizer(d, verbose=False)["input_ids"] for d in docs) if i]
    _, held = split_windows(list(range(len(ids))), data.val_fraction, seed)  # one per doc
    separator = loaded.tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    stream = [t for doc in held for t in ids[doc] + separator]
    return [
        stream[start : start + n_tokens] for start in range(0, len(stream) - n_tokens + 1, n_tokens)
    ][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--autoencoder", default=None)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--sequences", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    trained = load_autoencoder(args.autoencoder)
    loaded = load_model(trained.config.model_id if args.autoencoder else "embedded", device="cpu")
    n_tokens = min(args.max_tokens, trained.config.max_tokens)
    sequences = held_out_sequences(loaded, trained, n_tokens, args.sequences)
    started = time.perf_counter()
    options = CaptureOptions(normalization=trained.config.normalization, top_k=0)
    states = [
        capture(loaded, loaded.tokenizer.decode(ids), options).hidden[:, :n_tokens]
        for ids in sequences
    ]
    print(
        f"{len(states)} held-out sequences of {n_tokens} tokens, captured in "
        f"{time.perf_counter() - started:.0f} s; the network was trained up to "
        f"{trained.config.max_len} tokens"
    )
    plain = copy.deepcopy(trained.model)
    for parameter in plain.decode_mlp.parameters():
        parameter.data.zero_()  # missing coordinates at their corpus mean
    source = Sequences(states)
    indices = list(range(len(states)))
    lengths = tuple(n for n in EVAL_LENGTHS if n <= n_tokens)
    full = evaluate(trained.model, source, indices, lengths, batch_windows=1)
    bare = evaluate(plain, source, indices, lengths, batch_windows=1)
    print(
        f"{'tokens':>7} {'worst':>7} {'mean':>7} {'net off':>8} {'off mean':>9} {'mean-pool':>10}"
    )
    for n in full["lengths"]:
        key = str(n)
        r2, off, pooled = (np.array(m[key]) for m in (full["r2"], bare["r2"], full["mean_pool_r2"]))
        print(
            f"{n:>7} {r2.min():>7.3f} {r2.mean():>7.3f} {off.min():>8.3f} {off.mean():>9.3f} "
            f"{pooled.mean():>10.3f}"
        )


if __name__ == "__main__":
    main()
