"""What a particle cloud of this size can keep: the trained autoencoder beside linear codes.

Usage:
    python scripts/r2_ceiling.py                         # packaged default vs its config
    python scripts/r2_ceiling.py --config configs/default.yaml --autoencoder runs/default/artifact

At a prompt of T tokens each token holds n_particles * d_particle / T numbers (256 at 64
tokens for 1024 x 16). This prints, on the same held-out windows and by the same
`evaluation.evaluate`, the worst-layer and mean R² of:

* "per-layer PCA": the same routing with one PCA basis per layer (fitted on the training
  windows) and nothing predicted for the coordinates a token cannot hold: the best any
  linear per-token code of that size does;
* "anchor PCA": the same with the autoencoder's own smooth mix of n_anchors PCA bases;
* the trained autoencoder (anchor PCA + the learned prediction of missing coordinates).
"""

from __future__ import annotations

import argparse
import dataclasses

from layerscan.autoencoder.artifact import load_autoencoder
from layerscan.autoencoder.config import load_config
from layerscan.autoencoder.data import HiddenStateDataModule
from layerscan.autoencoder.evaluation import evaluate
from layerscan.autoencoder.model import ParticleAutoencoder


def linear_code(config, datamodule: HiddenStateDataModule, statistics,
                n_anchors: int) -> ParticleAutoencoder:
    """The autoencoder's routing with PCA bases only (no learned decoder)."""
    cache = datamodule.cache
    shape = dataclasses.replace(config.model, n_anchors=n_anchors, d_hidden=0)
    model = ParticleAutoencoder(shape, cache.d_model, cache.n_layers)
    model.set_statistics(*statistics)
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--autoencoder", help="trained artifact (default: the packaged one)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    datamodule = HiddenStateDataModule(config)
    datamodule.setup()
    statistics = datamodule.statistics()
    n_seen = datamodule.cache.n_seen
    rows = {
        "per-layer PCA": linear_code(config, datamodule, statistics, n_seen),
        f"anchor PCA ({config.model.n_anchors})": linear_code(
            config, datamodule, statistics, config.model.n_anchors),
        "trained autoencoder": load_autoencoder(args.autoencoder).model,
    }
    print(f"held-out windows: {len(datamodule.val_indices)}; cells: worst layer / mean R²")
    header = None
    for name, model in rows.items():
        metrics = evaluate(model, datamodule.cache, datamodule.val_indices)
        if header is None:
            header = f"{'code':<24}" + "".join(f"{f'{n} tok':>15}" for n in metrics["lengths"])
            print(header)
        cells = "".join(f"{min(metrics['r2'][str(n)]):>7.3f} / {_mean(metrics['r2'][str(n)]):.3f}"
                        for n in metrics["lengths"])
        print(f"{name:<24}{cells}", flush=True)
    return 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    raise SystemExit(main())
