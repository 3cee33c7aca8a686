"""Training with PyTorch Lightning: the LightningModule around the plain model and `train()`."""

from __future__ import annotations

import math
import os
import time
from datetime import timedelta
from pathlib import Path
from typing import NamedTuple

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

from layerscan.autoencoder.artifact import ArtifactConfig, export_autoencoder
from layerscan.autoencoder.config import RunConfig, TrainConfig
from layerscan.autoencoder.datamodule import HiddenStateDataModule
from layerscan.autoencoder.evaluation import evaluate, format_metrics, r2_terms
from layerscan.autoencoder.model import ParticleAutoencoder
from layerscan.autoencoder.quiet_lightning import quiet_lightning, quiet_pytree
from layerscan.autoencoder.reporting import epoch_line, interrupted_line, say, warn_if_weak
from layerscan.core.errors import LayerscanError
from layerscan.core.locks import exclusive
from layerscan.core.outputs import atomic_path, check_output, check_run_folder, mark_run_folder


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


class EpochReport(pl.Callback):
    """One line per epoch on stderr, terminal or not, and what a Ctrl-C kept."""

    def __init__(self, checkpoints: Path, max_epochs: int) -> None:
        self.checkpoints, self.max_epochs = checkpoints, max_epochs
        self.started = time.perf_counter()

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking:
            seconds = time.perf_counter() - self.started
            metrics = trainer.callback_metrics
            say(epoch_line(trainer.current_epoch + 1, self.max_epochs, metrics, seconds))

    def on_exception(self, trainer: pl.Trainer, module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt) and trainer.is_global_zero:
            say(interrupted_line(trainer.current_epoch + 1, trainer.global_step, self.checkpoints))


class TrainResult(NamedTuple):
    """What `train` returns (on the main process; None fields elsewhere)."""

    artifact: Path | None
    """The exported autoencoder folder."""
    metrics: dict | None
    """Held-out metrics (see `evaluation.evaluate`)."""
    report: str
    """The printable metrics table."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer through `atomic_path` (a temporary name renamed when
    complete), so a full disk or a kill never leaves a truncated checkpoint: the last complete
    one stays, and a full disk is one line."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path, kind="checkpoint") as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


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
    datamodule = HiddenStateDataModule(config, cache_root, progress)
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
    callbacks.append(EpochReport(checkpoints, cfg.max_epochs))
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
        plugins=[AtomicCheckpointIO()],
    )
    started = time.perf_counter()
    quiet_pytree()
    trainer.fit(
        module,
        datamodule=datamodule,
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
    report = format_metrics(metrics)
    weak = warn_if_weak(metrics)
    return TrainResult(folder, metrics, f"{report}\n{weak}" if weak else report)
