"""Benchmark autoencoder training: throughput (tokens/s) on CPU and GPU, data path vs compute.

Usage:
    python scripts/bench_train.py                 # throughput only (about a minute)
    python scripts/bench_train.py --full-train    # + time to train the default from cache

Throughput counts token-layers: one token's state at one layer, encoded and decoded, with
the backward pass and the optimizer step. "compute" feeds one batch already on the device
repeatedly; "data path" reads fresh batches from the memory-mapped cache through the
DataLoader, so their ratio is how busy the data path keeps the device. All numbers come
from one run, side by side, because the machine may be shared.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from layerscan.autoencoder.config import load_config
from layerscan.autoencoder.datamodule import HiddenStateDataModule
from layerscan.autoencoder.model import ParticleAutoencoder
from layerscan.autoencoder.training import AutoencoderModule


def _steps(
    module: AutoencoderModule, batches, device: torch.device, steps: int
) -> tuple[float, float, float]:
    """(compute s/step, wall s/step including fetching the batch, token-layers/step)."""
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-3)
    module.log = lambda *a, **k: None  # no trainer attached: skip logging
    iterator = iter(batches)
    elapsed, wall, tokens, counted = 0.0, 0.0, 0, 0
    for i in range(steps + 1):
        fetched = time.perf_counter()
        batch = {k: v.to(device, non_blocking=True) for k, v in next(iterator).items()}
        start = time.perf_counter()
        loss = module._step(batch, "train")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            elapsed += time.perf_counter() - start
            wall += time.perf_counter() - fetched
            tokens += int(batch["lengths"].sum())
            counted += 1
    return elapsed / counted, wall / counted, tokens / counted


def bench_device(
    datamodule: HiddenStateDataModule, config, device: torch.device, steps: int
) -> dict:
    cache = datamodule.cache
    model = ParticleAutoencoder(config.model, cache.d_model, cache.n_layers)
    model.set_statistics(*datamodule.statistics())
    module = AutoencoderModule(model.to(device), config.train)
    loader = datamodule.train_dataloader()
    fixed = next(iter(loader))

    def repeat():
        while True:
            yield fixed

    def fresh():
        while True:
            yield from loader

    compute, _, tokens = _steps(module, repeat(), device, steps)
    busy, wall, fresh_tokens = _steps(module, fresh(), device, steps)
    return {
        "device": str(device),
        "token_layers_per_batch": tokens,
        "compute_steps_per_s": 1 / compute,
        "compute_tokens_per_s": tokens / compute,
        "data_path_steps_per_s": 1 / wall,
        "data_path_tokens_per_s": fresh_tokens / wall,
        "busy_fraction": busy / wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="default")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--full-train",
        action="store_true",
        help="also time training the default autoencoder from the cache",
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    datamodule = HiddenStateDataModule(config, progress=True)
    datamodule.prepare_data()
    datamodule.setup("fit")
    print(
        f"cache: {datamodule.info['cache']} ({datamodule.info['n_tokens']} tokens, "
        f"{datamodule.cache.n_layers + 1} layers); threads={torch.get_num_threads()}"
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    for device in devices:
        r = bench_device(datamodule, config, device, args.steps)
        print(
            f"{r['device']}: {r['token_layers_per_batch']} token-layers/batch | compute "
            f"{r['compute_tokens_per_s']:,.0f} tok/s ({r['compute_steps_per_s']:.2f} "
            f"steps/s) | with data path {r['data_path_tokens_per_s']:,.0f} tok/s "
            f"({r['data_path_steps_per_s']:.2f} steps/s) | device busy "
            f"{100 * r['busy_fraction']:.0f}%"
        )
    if args.full_train:
        from layerscan.autoencoder.training import train

        with tempfile.TemporaryDirectory() as tmp:
            config.output, config.export = f"{tmp}/run", f"{tmp}/artifact"
            started = time.perf_counter()
            result = train(config, progress=False)
            minutes = (time.perf_counter() - started) / 60
        print(result.report)
        print(
            f"trained the default from cached states in {minutes:.1f} min (train.max_minutes"
            f" = {config.train.max_minutes}; {result.metrics['worst_r2_up_to_64']:.3f} worst "
            f"layer R² up to 64 tokens)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
