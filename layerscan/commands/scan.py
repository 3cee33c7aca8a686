"""`layerscan scan`: a prompt through capture, autoencoder and projection into a .scan file."""

from __future__ import annotations

import argparse
import time

from layerscan.commands.common import DEFAULT_PROMPT, ScanRequest, add_scan_arguments
from layerscan.errors import LayerscanError

DEFAULT_OUTPUT = "layerscan.scan"


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
    add_scan_arguments(parser, save=False)
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
    if not args.output.endswith(".scan"):
        raise LayerscanError(f"{args.output}: scan files end in .scan")
    request = ScanRequest(args)
    start = time.perf_counter()
    timings: dict = {}
    scan = request.scan(args.prompt, timings=timings)
    total = time.perf_counter() - start
    print(faithfulness_table(scan))
    scan.save(args.output)
    steps = f", {scan.n_steps} token-time steps" if scan.n_steps > 1 else ""
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items())
    print(f"wrote {args.output}: {len(scan.tokens)} tokens x {scan.n_layers + 1} layers x "
          f"{scan.n_particles} particles{steps} in {total:.1f} s ({stages} s)")
    return 0
