"""Training with PyTorch Lightning: the LightningModule around the plain model, `train()`, and
the data-parallel extraction of the hidden-state cache (`Trainer.predict` under DDP)."""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from layerscan.autoencoder.artifact import ArtifactConfig, export_autoencoder
from layerscan.autoencoder.cache import ExtractionJob, extraction_progress
from layerscan.autoencoder.config import RunConfig, TrainConfig
from layerscan.autoencoder.data import HiddenStateDataModule
from layerscan.autoencoder.evaluation import evaluate, format_metrics, r2_terms
from layerscan.autoencoder.model import ParticleAutoencoder
from layerscan.core.errors import LayerscanError
from layerscan.core.locks import exclusive
from layerscan.core.outputs import check_output, check_run_folder, mark_run_folder

LIGHTNING_NOISE = ("litlogger", "was configured so", "to estimate number of stepping batches")
"""Lightning's info lines that `train` drops: its logger tip and echoes of its own settings."""


class _QuietLightning(logging.Filter):
    """Drops the LIGHTNING_NOISE lines; the progress bar, metrics and other notes stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(text in record.getMessage() for text in LIGHTNING_NOISE)


def _quiet_pytree() -> None:
    """pytorch-lightning 2.6 warns about its own use of a deprecated torch API on every run."""
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")


def quiet_lightning() -> None:
    """Install the filter on Lightning's rank-zero logger (once)."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _QuietLightning) for f in logger.filters):
            logger.addFilter(_QuietLightning())


class AutoencoderModule(pl.LightningModule):
    """Trains a `ParticleAutoencoder` to reconstruct every token's state at every layer.

    The loss is the squared error in the per-layer normalized space (states centered on the
    layer's corpus mean and divided by its RMS spread), averaged over tokens and features,
    so it is about 1 - R² averaged over layers.

    Args:
        model: the plain nn.Module.
        config: optimizer and schedule.
    """

    def __init__(self, model: ParticleAutoencoder, config: TrainConfig) -> None:
        super().__init__()
        self.model, self.config = model, config
        self.tokens_seen = 0

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        hidden, layer, lengths = batch["hidden"], batch["layer"], batch["lengths"]
        out = self.model(hidden, layer, lengths)  # reconstruction (rows, n_tokens, d_model)
        mask = (
            torch.arange(hidden.shape[1], device=hidden.device)[None] < lengths[:, None]
        )  # (rows, n_tokens)
        scale = self.model.scale[layer, None, None]  # (rows, 1, 1)
        # R² sums in the per-layer normalized space: the loss is the mean squared error there
        sse, sst = r2_terms(
            hidden / scale,
            out.reconstruction.float() / scale,
            self.model.mean[layer, None] / scale,
            mask,
        )  # (rows,)
        n_values = mask.sum() * hidden.shape[-1]
        loss = sse.sum() / n_values
        if not torch.isfinite(loss):
            raise LayerscanError(
                f"{stage} loss became {loss.item()} at step {self.global_step} (epoch "
                f"{self.current_epoch}); the last good checkpoint is kept; lower train.lr or "
                f"check the corpus"
            )
        r2 = 1 - sse.sum() / sst.sum().clamp_min(1e-12)
        rows = hidden.shape[0]
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=rows, sync_dist=stage != "train")
        self.log(
            f"{stage}/r2", r2, prog_bar=stage == "val", batch_size=rows, sync_dist=stage != "train"
        )
        if stage == "train":
            self.tokens_seen += int(lengths.sum())
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Refuse non-finite gradients before they reach the weights (keeps checkpoints good)."""
        for name, param in self.model.named_parameters():
            if param.grad is not None and not torch.isfinite(param.grad).all():
                raise LayerscanError(
                    f"gradient of {name} became NaN/inf at step {self.global_step}; the last "
                    f"good checkpoint is kept; lower train.lr"
                )

    def configure_optimizers(self):
        cfg = self.config
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = min(cfg.warmup_steps, total // 4)

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class TrainResult(NamedTuple):
    """What `train` returns (on the main process; None fields elsewhere)."""

    artifact: Path | None
    """The exported autoencoder folder."""
    metrics: dict | None
    """Held-out metrics (see `evaluation.evaluate`)."""
    report: str
    """The printable metrics table."""


def check_checkpoint(path: Path) -> None:
    """Raise a one-line LayerscanError unless `path` is a readable Lightning checkpoint."""
    if not path.is_file():
        raise LayerscanError(f"--resume: no checkpoint at {path}; start without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if "state_dict" not in state:
            raise KeyError("state_dict")
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise LayerscanError(
            f"checkpoint {path} is corrupt or not a layerscan checkpoint "
            f"({type(exc).__name__}); delete it and start without "
            f"--resume"
        ) from exc


def train(
    config: RunConfig,
    resume: bool = False,
    cache_root: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """`_train` holding the run folder's lock: a second run into the same --output is refused
    with one line while the first runs (DDP workers share their launcher's lock)."""
    if _is_ddp_worker():
        return _train(config, resume, cache_root, progress, overwrite)
    check_run_folder(config.output, resume=resume, overwrite=overwrite)  # before the lock file
    with exclusive(config.output, f"--output {config.output}", wait=False):
        return _train(config, resume, cache_root, progress, overwrite)


def _train(
    config: RunConfig,
    resume: bool = False,
    cache_root: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Build/read the hidden-state cache, train, evaluate on held-out text, export.

    Args:
        config: the run config.
        resume: continue from `<output>/checkpoints/last.ckpt`.
        cache_root: where caches live (default: the layerscan cache dir).
        progress: show progress bars.
        overwrite: train again into an earlier run folder, and replace an earlier exported
            autoencoder folder (both must be layerscan's; see `layerscan.core.outputs`).
    """
    from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    cfg = config.train
    output = Path(config.output)
    checkpoints = output / "checkpoints"
    last = checkpoints / "last.ckpt"
    if resume:
        check_checkpoint(last)
    if not _is_ddp_worker():  # the launching process checked and marked the folders
        check_run_folder(output, resume=resume, overwrite=overwrite)
        check_output(
            export_folder(config), folder=True, overwrite=overwrite or resume, flag="--export"
        )
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = HiddenStateDataModule(
        config, cache_root, progress, extract_in_parallel=extract_in_parallel
    )
    datamodule.prepare_data()
    datamodule.setup("fit")
    cache = datamodule.cache
    model = ParticleAutoencoder(config.model, cache.d_model, cache.n_layers)
    if not resume:
        model.set_statistics(*datamodule.statistics())
    module = AutoencoderModule(model, cfg)
    if not _is_ddp_worker():
        mark_run_folder(output)
    callbacks = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="step-{step}",
            save_last=True,
            save_top_k=0,
            every_n_train_steps=cfg.checkpoint_every_n_steps,
        ),
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best",
            monitor="val/loss",
            mode="min",
            save_top_k=1,
            enable_version_counter=False,
        ),
    ]
    if cfg.early_stopping_patience:
        callbacks.append(
            EarlyStopping(
                monitor="val/loss",
                patience=cfg.early_stopping_patience,
                mode="min",
                check_finite=True,
            )
        )
    quiet_lightning()
    trainer = pl.Trainer(
        max_epochs=cfg.max_epochs,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None,
        accelerator=cfg.accelerator,
        devices=cfg.lightning_devices(),
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=cfg.precision,
        callbacks=callbacks,
        default_root_dir=output,
        logger=[
            CSVLogger(output / "logs", name="csv"),
            TensorBoardLogger(output / "logs", name="tensorboard"),
        ],
        gradient_clip_val=cfg.gradient_clip or None,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_progress_bar=progress and cfg.progress_bar,
        limit_train_batches=cfg.steps_per_epoch or None,
        num_sanity_val_steps=0,
        enable_model_summary=False,
    )
    started = time.perf_counter()
    _quiet_pytree()
    trainer.fit(
        module,
        train_dataloaders=datamodule.train_dataloader(),
        val_dataloaders=datamodule.val_dataloader(),
        ckpt_path=str(last) if resume else None,
    )
    minutes = (time.perf_counter() - started) / 60
    if not trainer.is_global_zero:
        return TrainResult(None, None, "")
    best = Path(callbacks[1].best_model_path or last)
    if best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    return export_trained(
        model,
        config,
        datamodule,
        overwrite or resume,
        {
            "minutes": round(minutes, 2),
            "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch),
            "checkpoint": str(best),
            "resumed": resume,
            "tokens_per_second": round(module.tokens_seen / max(1e-9, minutes * 60)),
        },
    )


def _is_ddp_worker() -> bool:
    """Whether this process is a DDP worker that Lightning launched (rank above 0)."""
    return any(
        os.environ.get(name, "0") not in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK")
    )


def export_folder(config: RunConfig) -> Path:
    """Where the trained autoencoder goes: `export`, or `<output>/artifact`."""
    return Path(config.export or Path(config.output) / "artifact")


def export_trained(
    model: ParticleAutoencoder,
    config: RunConfig,
    datamodule: HiddenStateDataModule,
    overwrite: bool,
    training: dict,
) -> TrainResult:
    """Export the model, reload the exported files, evaluate them on held-out windows, and
    rewrite the artifact with those metrics (so recorded metrics are of the shipped weights)."""
    from layerscan.autoencoder.artifact import load_autoencoder

    info = datamodule.info
    folder = export_folder(config)
    artifact_config = ArtifactConfig(
        model_id=info["model_id"],
        revision=info.get("revision"),
        architecture=info.get("architecture", ""),
        d_model=model.d_model,
        n_layers=model.n_layers,
        normalization=config.data.normalization,
        model=config.model,
        training=dict(
            training,
            corpus=config.data.corpus,
            n_tokens=info.get("n_tokens"),
            n_train_windows=info.get("n_train_windows"),
            n_val_windows=info.get("n_val_windows"),
            run_config=config.to_dict(),
        ),
    )
    export_autoencoder(
        model.cpu(), artifact_config, folder, half=config.export_half, overwrite=overwrite
    )
    shipped = load_autoencoder(folder)
    metrics = evaluate(shipped.model, datamodule.cache, datamodule.val_indices)
    artifact_config.metrics = metrics
    export_autoencoder(
        shipped.model, artifact_config, folder, half=config.export_half, overwrite=True
    )  # the folder this run just wrote
    return TrainResult(folder, metrics, format_metrics(metrics))


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
    _quiet_pytree()
    trainer.predict(extractor, return_predictions=False)  # no batches where all are written
    extractor.publish()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # leave together: a process that exits with gloo's threads still running can abort
        # ("terminate called without an active exception"); training opens its own group
        torch.distributed.destroy_process_group()
    return job.folder
