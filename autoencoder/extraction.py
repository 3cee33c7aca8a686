"""Data-parallel extraction of the hidden-state cache: `Trainer.predict` under DDP, one
process per device, each writing its share of the shards."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from layerscan.autoencoder.cache import ExtractionJob, extraction_progress
from layerscan.autoencoder.config import TrainConfig
from layerscan.autoencoder.quiet_lightning import quiet_lightning, quiet_pytree
from layerscan.core.errors import LayerscanError

NO_SHARD = -1
"""An item with nothing to write."""


class ShardExtractor(pl.LightningModule):
    """Writes this process's share of the shards (every world_size-th, from its rank on).

    The language model is held outside the module's parameters: Lightning neither wraps nor
    moves it; `setup` puts it on this process's device.

    Args:
        job: the cache to build (the same on every process).
        loaded: the language model (`capture.loading.LoadedModel`).
        normalization: how states are normalized at capture.
        batch_size: windows per forward pass.
        progress: show global rank 0's progress bar.
    """

    def __init__(
        self, job: ExtractionJob, loaded, normalization: str, batch_size: int, progress: bool
    ) -> None:
        super().__init__()
        self.job, self.loaded, self.normalization = job, loaded, normalization
        self.batch_size, self.progress = batch_size, progress
        self.pending: list[int] = []
        self.bar = None

    def setup(self, stage: str) -> None:
        strategy = self.trainer.strategy
        agreed = strategy.broadcast(self.job.digest) == self.job.digest
        if not strategy.reduce_boolean_decision(agreed, all=True):
            raise LayerscanError(
                "the processes of this run disagree on the cache to build "
                "(their corpus, model, settings or --cache-dir differ); give "
                "every process the same arguments and files"
            )
        pending = self.job.start() if self.trainer.is_global_zero else None
        self.pending = strategy.broadcast(pending)  # waits for rank 0's work folder
        self.loaded.model.to(strategy.root_device)  # this process's own copy, on its device
        self.loaded.device = strategy.root_device

    def predict_dataloader(self) -> DataLoader:
        """One item per shard, dealt out in turn; NO_SHARD pads every process to as many
        items, at least one (Lightning refuses a process with none, and so does its own
        distributed sampler, as when a resumed job has fewer shards left than processes)."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        mine = self.pending[rank::world]
        return DataLoader(
            mine + [NO_SHARD] * (-(-len(self.pending) // world) - len(mine)), batch_size=None
        )

    def on_predict_start(self) -> None:
        mine = self.pending[self.trainer.global_rank :: self.trainer.world_size]
        self.bar = extraction_progress(
            self.job.n_windows(mine), self.progress and self.trainer.is_global_zero
        )

    def predict_step(self, shard: int, batch_idx: int) -> int:
        """Write one shard; returns its number."""
        from layerscan.autoencoder.capture.hidden_states import hidden_states_batch

        if shard == NO_SHARD:
            return shard
        self.job.write_shard(
            int(shard),
            lambda ids: hidden_states_batch(self.loaded, ids, self.normalization),
            self.batch_size,
            self.bar,
        )
        return int(shard)

    def on_predict_end(self) -> None:
        self.bar.close()

    def publish(self) -> None:
        """After `predict` (whether or not this process had shards to write): once every
        process is done, global rank 0 publishes the cache; all fail alike, or none does."""
        strategy = self.trainer.strategy
        strategy.barrier("shards-written")
        problem = None
        if self.trainer.is_global_zero:
            try:
                self.job.publish()
            except LayerscanError as exc:
                problem = str(exc)
        problem = strategy.broadcast(problem)  # the others wait here until it is published
        if problem:
            raise LayerscanError(problem)


def extract_in_parallel(
    job: ExtractionJob,
    loaded,
    normalization: str,
    batch_size: int,
    train: TrainConfig,
    progress: bool = True,
) -> Path:
    """Build the cache with one process per device (Lightning DDP), on one or more machines.

    The settings are training's (`train.accelerator`, `devices`, `strategy`, `num_nodes`), so
    extraction and training run on the same processes; Lightning launches the other local
    processes (they rerun this command) or joins the ones torchrun or SLURM started.

    Args:
        job: the cache to build.
        loaded: the language model (`capture.loading.LoadedModel`).
        normalization: how states are normalized at capture.
        batch_size: windows per forward pass.
        train: the Lightning settings.
        progress: show a progress bar.
    """
    quiet_lightning()
    trainer = pl.Trainer(
        accelerator=train.accelerator,
        devices=train.lightning_devices(),
        strategy=train.strategy,
        num_nodes=train.num_nodes,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    extractor = ShardExtractor(job, loaded, normalization, batch_size, progress)
    quiet_pytree()
    trainer.predict(extractor, return_predictions=False)  # no batches where all are written
    extractor.publish()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # leave together: a process that exits with gloo's threads still running can abort
        # ("terminate called without an active exception"); training opens its own group
        torch.distributed.destroy_process_group()
    return job.folder
