"""On-disk hidden-state cache: memory-mapped shards of every layer's states, extracted once."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerscan.autoencoder.reporting import RateEstimate, say
from layerscan.core.errors import LayerscanError, Notice
from layerscan.core.outputs import atomic_path, remove_stale_partials

CACHE_FORMAT_VERSION = 1
SHARD_TOKENS = 8192
"""Tokens per shard file; a shard holds (n_layers+1, SHARD_TOKENS, d_model) values."""
META_NAME = "meta.json"
PLAN_NAME = "plan.json"
"""In a work folder: the digest of the job whose shards it holds."""
FLOAT16_LIMIT = 60000
"""Largest state magnitude the float16 shards take (their maximum is 65504)."""


def cache_key(
    model_id: str, revision: str | None, normalization: str, max_len: int, corpus_hash: str
) -> str:
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
        folder: a folder written by `ExtractionJob.publish`.
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
            self.shards = [np.load(self.folder / name, mmap_mode="r") for name in meta["shards"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LayerscanError(
                f"{self.folder}: unusable hidden-state cache ({exc}); delete "
                "the folder and it will be rebuilt"
            ) from exc
        # n_layers transformer blocks: a window holds n_layers+1 hidden states per token
        self.n_layers, self.d_model = int(meta["n_layers"]), int(meta["d_model"])
        self._check_shapes()

    def _check_shapes(self) -> None:
        """Every shard (n_layers+1, tokens, d_model) and every window inside its shard."""
        expected = (self.n_layers + 1, self.d_model)
        for name, shard in zip(self.meta["shards"], self.shards, strict=True):
            if shard.ndim != 3 or (shard.shape[0], shard.shape[2]) != expected:
                raise self._unusable(f"{name} has shape {shard.shape}")
        for w in self.windows:
            if not (0 <= w.shard < len(self.shards)) or not (
                0 <= w.offset and w.offset + w.length <= self.shards[w.shard].shape[1]
            ):
                raise self._unusable(f"window {w} lies outside its shard")

    def _unusable(self, problem: str) -> LayerscanError:
        return LayerscanError(
            f"{self.folder}: unusable hidden-state cache ({problem}); delete the folder and it "
            f"will be rebuilt"
        )

    def __len__(self) -> int:
        return len(self.windows)

    def window(
        self, index: int, layers: np.ndarray | slice = slice(None), length: int | None = None
    ) -> np.ndarray:
        """(n_selected_layers, length, d_model) float32 states of window `index` (a prefix)."""
        w = self.windows[index]
        length = w.length if length is None else min(length, w.length)
        view = self.shards[w.shard][layers, w.offset : w.offset + length]
        states = np.asarray(view, dtype=np.float32)
        if not np.isfinite(states).all():  # a damaged shard, found before it reaches an SVD
            raise self._unusable(f"{self.meta['shards'][w.shard]} holds NaN or infinite states")
        return states


def pack_windows(
    lengths: list[int], documents: list[int], shard_tokens: int = SHARD_TOKENS
) -> tuple[list[WindowIndex], list[int]]:
    """Place windows, in corpus order, into shards of at most `shard_tokens` tokens.

    Returns:
        each window's place and the size of each shard in tokens.
    """
    index, sizes, shard, offset = [], [], 0, 0
    for n, document in zip(lengths, documents, strict=True):
        if offset + n > shard_tokens and offset > 0:
            sizes.append(offset)
            shard, offset = shard + 1, 0
        index.append(WindowIndex(shard, offset, n, document))
        offset += n
    sizes.append(offset)
    return index, sizes


def shard_name(shard: int) -> str:
    return f"shard_{shard:04d}.npy"


class ExtractionJob:
    """One cache being built, shard by shard, in a work folder beside it.

    The windows are packed into shards in corpus order (`pack_windows`), so the index, and the
    train/validation split read from it, is the same whoever writes the shards. Each shard is
    written by one process under a temporary name and renamed when complete; the work folder
    (`.NAME.extracting`) keeps finished shards across an interrupted run, and `publish` turns
    it into the cache folder once every shard is there.

    Args:
        folder: the cache folder to create.
        windows: token ids of each window (1..max_len tokens each).
        documents: (n_windows,) index of the document each window came from.
        meta: JSON-able description (model id, normalization, corpus hash, ...), stored.
        shard_tokens: tokens per shard file.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        windows: list[list[int]],
        documents: list[int],
        meta: dict,
        shard_tokens: int = SHARD_TOKENS,
    ) -> None:
        if not windows:
            raise LayerscanError("nothing to cache: the corpus produced no token windows")
        self.folder, self.windows, self.meta = Path(folder), windows, meta
        self.work = self.folder.parent / f".{self.folder.name}.extracting"
        self.index, self.shard_sizes = pack_windows(
            [len(w) for w in windows], documents, shard_tokens
        )
        self.members: list[list[int]] = [[] for _ in self.shard_sizes]
        for i, w in enumerate(self.index):
            self.members[w.shard].append(i)
        fields = [CACHE_FORMAT_VERSION, meta, windows, documents, shard_tokens]
        self.digest = hashlib.sha256(json.dumps(fields).encode()).hexdigest()
        """Identifies the job: every process of a data-parallel run must agree on it."""

    def start(self) -> list[int]:
        """Open the work folder (emptied if another job left it) and list the shards to do.

        Call it in one process only, before any shard is written.
        """
        plan = self.work / PLAN_NAME
        if self.work.is_dir() and not _holds(plan, self.digest):
            shutil.rmtree(self.work)  # another corpus, model or layout: start over
        self.work.mkdir(parents=True, exist_ok=True)
        if not plan.is_file():
            with atomic_path(plan) as tmp:
                tmp.write_text(json.dumps({"digest": self.digest}), encoding="utf-8")
        done = {s for s in range(len(self.shard_sizes)) if (self.work / shard_name(s)).is_file()}
        if done:
            warnings.warn(
                f"resuming the extraction into {self.folder}: {len(done)} of "
                f"{len(self.shard_sizes)} shards are already written",
                Notice,
                stacklevel=2,
            )
        return [s for s in range(len(self.shard_sizes)) if s not in done]

    def n_windows(self, shards: list[int]) -> int:
        return sum(len(self.members[s]) for s in shards)

    def n_tokens(self, shards: list[int]) -> int:
        return sum(self.shard_sizes[s] for s in shards)

    def write_shard(self, shard: int, extract, batch_size: int = 16, bar=None) -> None:
        """Extract the states of one shard's windows (batched by length) into its file.

        Args:
            shard: which shard.
            extract: function(list of id lists) -> list of (n_layers+1, len, d_model) arrays.
            batch_size: windows per forward pass.
            bar: an ExtractionProgress advanced by windows and tokens, or None.
        """
        order = sorted(self.members[shard], key=lambda i: len(self.windows[i]))
        with atomic_path(self.work / shard_name(shard)) as tmp:
            array = None
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                for i, states in zip(batch, extract([self.windows[i] for i in batch]), strict=True):
                    _check_states(states, i)  # (n_layers+1, length, d_model)
                    if array is None:
                        array = np.lib.format.open_memmap(
                            tmp,
                            mode="w+",
                            dtype=np.float16,
                            shape=(states.shape[0], self.shard_sizes[shard], states.shape[2]),
                        )
                    w = self.index[i]
                    array[:, w.offset : w.offset + w.length] = states
                if bar is not None:
                    bar.update(len(batch), sum(len(self.windows[i]) for i in batch))
            array.flush()
            del array

    def publish(self) -> Path:
        """Write the index beside the finished shards and rename the work folder to the cache.

        Call it in one process only, after every process has written its shards.
        """
        if (self.folder / META_NAME).is_file():
            return self.folder  # a concurrent run of the same job published it first
        names = [shard_name(s) for s in range(len(self.shard_sizes))]
        missing = [name for name in names if not (self.work / name).is_file()]
        if missing:
            raise LayerscanError(
                f"{self.folder}: {len(missing)} of {len(names)} shards were not written (first: "
                f"{missing[0]}); on several machines --cache-dir must be a folder they share"
            )
        for name in names:
            remove_stale_partials(self.work / name)
        n_layers_1, _, d_model = np.load(self.work / names[0], mmap_mode="r").shape
        meta = dict(
            self.meta,
            format_version=CACHE_FORMAT_VERSION,
            n_layers=n_layers_1 - 1,
            d_model=d_model,
            shards=names,
            n_tokens=sum(self.shard_sizes),
            windows=[[w.shard, w.offset, w.length, w.document] for w in self.index],
        )
        with atomic_path(self.folder, suffix="", folder=True, kind="hidden-states") as tmp:
            os.replace(self.work, tmp)
            (tmp / PLAN_NAME).unlink()
            (tmp / META_NAME).write_text(json.dumps(meta), encoding="utf-8")
        return self.folder


def build_cache(job: ExtractionJob, extract, batch_size: int = 16, progress: bool = True) -> Path:
    """Extract every window's states in this process, shard by shard, and publish the cache.

    An interrupted build resumes from its finished shards the next time.

    Args:
        job: the cache to build.
        extract: function(list of id lists) -> list of (n_layers+1, len, d_model) arrays.
        batch_size: windows per forward pass.
        progress: show a progress bar.
    """
    pending = job.start()
    bar = extraction_progress(job, pending, progress)
    try:
        for shard in pending:
            job.write_shard(shard, extract, batch_size, bar)
    except KeyboardInterrupt:
        bar.bar.close()  # no rate line: the interruption says what was kept
        say(interrupted_extraction(job))
        raise
    bar.close()
    return job.publish()


def interrupted_extraction(job: ExtractionJob) -> str:
    """What a Ctrl-C during extraction kept, and how to go on."""
    done = sum(1 for s in range(len(job.shard_sizes)) if (job.work / shard_name(s)).is_file())
    return (
        f"interrupted: {done} of {len(job.shard_sizes)} finished shards of hidden states are "
        f"kept in {job.work}; the same command resumes from them"
    )


def _check_states(states: np.ndarray, window: int) -> None:
    if not np.isfinite(states).all():
        raise LayerscanError(
            f"the language model produced NaN/inf states for window {window}; "
            f"try --set data.normalization=final-norm"
        )
    if np.abs(states).max() > FLOAT16_LIMIT:
        raise LayerscanError(
            "hidden states exceed the float16 range of the cache; use "
            "--set data.normalization=final-norm or standardize"
        )


def _holds(plan: Path, digest: str) -> bool:
    try:
        return json.loads(plan.read_text(encoding="utf-8"))["digest"] == digest
    except (OSError, ValueError, KeyError, TypeError):
        return False


class ExtractionProgress:
    """A tqdm bar over windows, and a time estimate measured on this machine (see
    reporting.RateEstimate), which shows even when stderr is not a terminal."""

    def __init__(self, n_windows: int, n_tokens: int, bar: bool, report: bool = True) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=n_windows,
            desc="extracting hidden states",
            unit="window",
            disable=not bar,
            leave=False,
        )
        self.rate = RateEstimate(n_tokens) if report else None

    def update(self, n_windows: int, n_tokens: int = 0) -> None:
        self.bar.update(n_windows)
        if self.rate is not None:
            self.rate.update(n_tokens)

    def close(self) -> None:
        self.bar.close()
        if self.rate is not None:
            self.rate.finish()


def extraction_progress(
    job: ExtractionJob, shards: list[int], bar: bool, report: bool = True
) -> ExtractionProgress:
    """Progress over the windows and tokens of `shards` (a bar if `bar`, estimates if
    `report`)."""
    return ExtractionProgress(job.n_windows(shards), job.n_tokens(shards), bar, report)
