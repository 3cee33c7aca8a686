"""What a particle cloud of this size can keep, and how much of its motion is the model's.

Usage:
    python scripts/r2_ceiling.py                              # packaged default vs its config
    python scripts/r2_ceiling.py --anchors 1,2,4,8            # + the anchor-count trade-off
    python scripts/r2_ceiling.py --config configs/default.yaml --autoencoder runs/x/artifact

At a prompt of T tokens each token holds n_particles * d_particle / T numbers (256 at 64
tokens for 1024 x 16). On the same held-out windows and by the same `evaluation.evaluate`,
this prints the worst-layer / mean R² of:

* "per-layer PCA": the same routing with one PCA basis per layer (fitted on the training
  windows) and nothing predicted for the coordinates a token cannot hold: the best any
  linear per-token code of that size does;
* "anchor PCA (a)": the same with the autoencoder's bases mixed from a anchor covariances;
* the trained autoencoder (anchor PCA + the learned prediction of missing coordinates).

For each it also encodes one 32-token prompt and prints its motion: the mean relative change
of the cloud from layer to layer (||cloud_l - cloud_l-1|| / ||cloud_l||; with one basis for
all layers this is the states' own change) and the Procrustes disparity of the fast 3D
projection (what `layerscan scan` prints as dispar).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch
from bench_project import PROMPT  # the projection benchmark's prompt (scripts/ is on the path)

from layerscan.autoencoder.artifact import load_autoencoder
from layerscan.autoencoder.config import load_config
from layerscan.autoencoder.datamodule import HiddenStateDataModule
from layerscan.autoencoder.evaluation import evaluate
from layerscan.autoencoder.model import ParticleAutoencoder


def linear_code(
    config, datamodule: HiddenStateDataModule, statistics, n_anchors: int
) -> ParticleAutoencoder:
    """The autoencoder's routing with PCA bases only (no learned decoder)."""
    cache = datamodule.cache
    shape = dataclasses.replace(config.model, n_anchors=n_anchors, d_hidden=0)
    model = ParticleAutoencoder(shape, cache.d_model, cache.n_layers)
    model.set_statistics(*statistics)
    return model.eval()


def prompt_states(language_model: str, n_tokens: int = 32) -> torch.Tensor:
    """(n_layers+1, n_tokens, d_model) states of the projection benchmark prompt's first
    tokens."""
    from layerscan.autoencoder.capture.hidden_states import capture
    from layerscan.autoencoder.capture.loading import load_model

    captured = capture(load_model(language_model), PROMPT)
    return torch.from_numpy(np.asarray(captured.prefix(n_tokens).hidden, dtype=np.float32))


@torch.no_grad()
def motion(model: ParticleAutoencoder, states: torch.Tensor) -> tuple[float, float]:
    """(mean relative cloud change per layer, mean disparity of the fast projection)."""
    from layerscan.geometry.faithfulness import procrustes_disparity
    from layerscan.geometry.projection import make_projection

    n_layers, n_tokens = states.shape[0] - 1, states.shape[1]
    clouds = model.encode(states, torch.arange(n_layers + 1), torch.full((n_layers + 1,), n_tokens))
    clouds = clouds.numpy()
    change = np.linalg.norm(clouds[1:] - clouds[:-1], axis=(1, 2)) / np.linalg.norm(
        clouds[1:], axis=(1, 2)
    )
    layouts = make_projection("fast", random_state=0).fit(clouds).embedding_
    return float(change.mean()), float(procrustes_disparity(layouts)[1:].mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--autoencoder", help="trained artifact (default: the packaged one)")
    parser.add_argument("--anchors", default="", help="also these anchor counts, e.g. 1,2,4,8")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    datamodule = HiddenStateDataModule(config, progress=False)
    datamodule.setup()
    statistics = datamodule.statistics()
    n_layers = datamodule.cache.n_layers
    counts = sorted({config.model.n_anchors, *(int(a) for a in args.anchors.split(",") if a)})
    rows = {"per-layer PCA": lambda: linear_code(config, datamodule, statistics, n_layers + 1)}
    for count in counts:
        rows[f"anchor PCA ({count})"] = lambda count=count: linear_code(
            config, datamodule, statistics, count
        )
    rows["trained autoencoder"] = lambda: load_autoencoder(args.autoencoder).model
    states = prompt_states(config.data.language_model)
    print(
        f"held-out windows: {len(datamodule.val_indices)}; R² cells: worst layer / mean; "
        f"motion of a {states.shape[1]}-token prompt: cloud change per layer, 3D disparity"
    )
    header = None
    for name, build in rows.items():
        model = build()
        metrics = evaluate(model, datamodule.cache, datamodule.val_indices)
        if header is None:
            header = f"{'code':<22}" + "".join(f"{f'{n} tok':>15}" for n in metrics["lengths"])
            print(header + f"{'change':>9}{'dispar':>9}")
        cells = "".join(
            f"{min(metrics['r2'][str(n)]):>7.3f} / {_mean(metrics['r2'][str(n)]):.3f}"
            for n in metrics["lengths"]
        )
        change, disparity = motion(model, states)
        print(f"{name:<22}{cells}{change:>9.3f}{disparity:>9.3f}", flush=True)
    return 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


if __name__ == "__main__":
    raise SystemExit(main())
