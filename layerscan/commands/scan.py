"""`layerscan scan`: a prompt through capture, autoencoder and projection into a .scan file."""

from __future__ import annotations

import argparse
import time

from layerscan.commands.common import (
    DEFAULT_PROMPT,
    add_capture_arguments,
    add_model_arguments,
    add_overwrite_argument,
    capture_from_args,
    check_outputs,
    load_model_from_args,
)
from layerscan.errors import LayerscanError

DEFAULT_OUTPUT = "layerscan.scan"


def add_projection_arguments(parser: argparse.ArgumentParser) -> None:
    """--projection, --token-time, --neighbors, --epochs, --surface, --projection-seed."""
    group = parser.add_argument_group("projection")
    group.add_argument("--projection", default="fast",
                       choices=["fast", "aligned-umap", "independent"],
                       help="fast: aligned-UMAP objective optimised in torch, seconds "
                            "(default); aligned-umap: umap-learn's AlignedUMAP, the slow "
                            "reference (minutes); independent: UMAP per layer")
    group.add_argument("--token-time", action="store_true",
                       help="causal models: also lay out every prefix (one frame per token)")
    group.add_argument("--neighbors", type=int, default=10, metavar="K",
                       help="nearest particles stored per particle, for lines (default 10)")
    group.add_argument("--epochs", type=int, default=None,
                       help="projection epochs (default: 150 fast, 200 umap modes)")
    group.add_argument("--surface", default="density", choices=["density", "alpha", "none"],
                       help="layer surface: density isosurface (default), alpha shape, none")
    group.add_argument("--surface-quantile", type=float, default=0.2, metavar="Q",
                       help="isosurface level as a quantile of the particles' density "
                            "(default 0.2: the surface holds ~80%% of the particles)")
    group.add_argument("--projection-seed", type=int, default=0,
                       help="random state of the projection (default 0)")


def options_from_args(args: argparse.Namespace, device: str | None = None):
    """The ScanOptions that `add_projection_arguments` describe (defaults where absent).

    `device` is where the model ended up (e.g. "cuda:0"); the projection runs there too.
    """
    from layerscan.geometry.pipeline import ScanOptions
    from layerscan.geometry.surfaces import SurfaceOptions

    device = str(device or getattr(args, "device", "cpu"))
    return ScanOptions(
        projection=getattr(args, "projection", "fast"),
        n_epochs=getattr(args, "epochs", None), k_neighbors=getattr(args, "neighbors", 10),
        token_time=getattr(args, "token_time", False),
        surface=SurfaceOptions(method=getattr(args, "surface", "density"),
                               level_quantile=getattr(args, "surface_quantile", 0.2)),
        seed=getattr(args, "projection_seed", 0),
        device="cuda" if device.startswith("cuda") else "cpu")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scan", help="scan a prompt into aligned 3D layer clouds (.scan file)",
        description="Capture a prompt, encode every layer into a particle cloud, lay the clouds "
                    "out in 3D aligned across layers, build a surface per layer, and save it "
                    "all, so render, view and diff reload it without the model. Prints how "
                    "faithful each layer's picture is.")
    parser.add_argument("prompt", nargs="?", default=DEFAULT_PROMPT,
                        help=f"the text (default: {DEFAULT_PROMPT!r})")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"the .scan file to write (default {DEFAULT_OUTPUT})")
    add_overwrite_argument(parser)
    parser.add_argument("--autoencoder", default=None, metavar="DIR",
                        help="autoencoder folder (default: the one packaged for the embedded "
                             "model)")
    add_projection_arguments(parser)
    add_model_arguments(parser)
    add_capture_arguments(parser)
    parser.set_defaults(run=run)


def faithfulness_table(scan, step: int = -1) -> str:
    """Per layer: R², trustworthiness, continuity, disparity, in a compact text table."""
    lines = [f"{'layer':>12}  {'AE R²':>6}  {'trust':>6}  {'contin':>6}  {'dispar':>6}"]
    for i, name in enumerate(scan.layer_names):
        lines.append(f"{name:>12}  {scan.reconstruction_r2[step, i]:6.3f}  "
                     f"{scan.trustworthiness[step, i]:6.3f}  {scan.continuity[step, i]:6.3f}  "
                     f"{scan.disparity[step, i]:6.3f}")
    lines.append(f"{'mean':>12}  {scan.reconstruction_r2[step].mean():6.3f}  "
                 f"{scan.trustworthiness[step].mean():6.3f}  "
                 f"{scan.continuity[step].mean():6.3f}  {scan.disparity[step, 1:].mean():6.3f}")
    lines.append("AE R²: how much of this prompt's hidden states the particles keep; trust / "
                 "contin (k=10): 1 = 3D neighbours are cloud neighbours and back; dispar: "
                 "Procrustes shape change from the previous layer.")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from layerscan.autoencoder.artifact import load_autoencoder
    from layerscan.geometry.pipeline import scan_capture

    check_outputs(args, [(args.output, False)])
    if not args.output.endswith(".scan"):
        raise LayerscanError(f"{args.output}: scan files end in .scan")
    options = options_from_args(args)
    autoencoder = load_autoencoder(args.autoencoder)  # before the model: fails fast
    loaded = load_model_from_args(args)
    autoencoder.model.to(loaded.device)
    start = time.perf_counter()
    capture = capture_from_args(loaded, args.prompt, args)
    timings: dict = {"capture": time.perf_counter() - start}
    scan = scan_capture(capture, autoencoder, options, timings=timings)
    total = time.perf_counter() - start
    print(faithfulness_table(scan))
    scan.save(args.output)
    steps = f", {scan.n_steps} token-time steps" if scan.n_steps > 1 else ""
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items())
    print(f"wrote {args.output}: {len(scan.tokens)} tokens x {scan.n_layers + 1} layers x "
          f"{scan.n_particles} particles{steps} in {total:.1f} s ({stages} s)")
    return 0
