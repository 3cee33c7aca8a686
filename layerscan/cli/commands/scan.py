"""`layerscan scan`: a prompt through capture, autoencoder and projection into a .scan file."""

from __future__ import annotations

import argparse
import time

from layerscan.cli.common import (
    DEFAULT_PROMPT,
    PipelineFlags,
    add_overwrite_argument,
    add_scan_arguments,
    check_outputs,
    note,
)
from layerscan.cli.options import command_defaults
from layerscan.core.errors import LayerscanError
from layerscan.geometry.scene.figures_text import r2_warning

DEFAULT_OUTPUT = "layerscan.scan"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="scan a prompt into aligned 3D layer clouds (.scan file)",
        description="Capture a prompt, encode every layer into a particle cloud, lay the clouds "
        "out in 3D aligned across layers, build a surface per layer, and save it "
        "all, so render, view and diff reload it without the model. Prints how "
        "faithful each layer's picture is.",
    )
    parser.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help=f"the text (default, said on stderr: {DEFAULT_PROMPT!r}); up "
        f"to 1024 tokens with the packaged autoencoder, or the model's "
        f"context if shorter",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"the .scan file to write (default {DEFAULT_OUTPUT})",
    )
    add_overwrite_argument(parser)
    add_scan_arguments(parser, save=False)
    from layerscan.geometry.scan_options import ScanOptions

    # its table shows the particle-stage diagnostics
    parser.set_defaults(run=run, **command_defaults(ScanOptions, diagnostics=True))


def faithfulness_table(scan, step: int = -1) -> str:
    """Per layer: the end-to-end figures beside the PCA-3 baseline, then the stage diagnostics."""
    columns = [
        ("own R²", scan.prompt_r2),
        ("AE R²", scan.reconstruction_r2),
        ("trust", scan.token_trust),
        ("PCA", scan.baseline_trust),
        ("cont", scan.token_continuity),
        ("PCA", scan.baseline_continuity),
        ("dcorr", scan.distance_correlation),
        ("PCA", scan.baseline_correlation),
        ("spread", scan.token_spread),
        ("cloud", scan.trustworthiness),
        ("dispar", scan.disparity),
    ]
    lines = [f"{'layer':>12}  " + "  ".join(f"{title:>6}" for title, _ in columns)]
    for i, name in enumerate(scan.layer_names):
        lines.append(f"{name:>12}  " + "  ".join(f"{v[step, i]:6.3f}" for _, v in columns))
    lines.append(
        f"{'mean':>12}  "
        + "  ".join(
            f"{(v[step, 1:] if title == 'dispar' else v[step]).mean():6.3f}" for title, v in columns
        )
    )
    lines.append(
        f"{'chance':>12}  {'':>6}  {'':>6}  {scan.chance_trust[step, 0]:6.3f}  {'':>6}  "
        f"{scan.chance_trust[step, 0]:6.3f}"
    )
    lines.append(
        "own R²: share of this prompt's hidden states the particles keep, around the "
        "prompt's own mean (the frame's figure); AE R²: around the corpus mean (higher). "
        "trust / cont / dcorr: tokens' 3D places (their particles' centroids) against their "
        "hidden states: trustworthiness, continuity, and Spearman correlation of pairwise "
        "distances; PCA: the same for PCA-3 of the token states, the simplest picture; "
        "chance: the expected trust (and continuity) of a random placement. spread: a token's "
        "particles' distance from their centroid / layout radius. cloud: 3D vs particle "
        "cloud trust (k=10, a diagnostic of one stage); dispar: Procrustes shape change "
        "from the previous layer."
    )
    return "\n".join(lines)


def layout_line(scan, step: int = -1) -> str:
    """Which layout the (last) step shows, in words."""
    layout = scan.step_layouts[step] if scan.step_layouts else "unknown"
    # a whole prompt's layout is kept only if no headline figure is below PCA-3's; a
    # token-time step only if their sum is not (geometry/token_time.py)
    held = (
        "mean and worst-layer trust plus distance correlation"
        if len(scan.step_layouts) > 1
        else "each of mean trust, worst-layer trust and distance correlation"
    )
    said = {
        "tokens": f"token layout (over all layers at least as faithful as PCA-3 of the token "
        f"states: {held})",
        "pca": "PCA-3: nothing beat it (aligned PCA of the token states)",
    }
    return f"layout = {said.get(layout, layout)}"


def run(args: argparse.Namespace) -> int:
    check_outputs([("-o", args.output, False)], args.overwrite)
    if not args.output.endswith(".scan"):
        raise LayerscanError(f"{args.output}: scan files end in .scan")
    flags = PipelineFlags(args)
    prompt = args.prompt
    if prompt is None:
        note(f"no prompt given: scanning the default prompt {DEFAULT_PROMPT!r}")
        prompt = DEFAULT_PROMPT
    start = time.perf_counter()
    timings: dict = {}
    scan = flags.pipeline.scan(prompt, timings=timings)
    total = time.perf_counter() - start
    print(faithfulness_table(scan))
    print(layout_line(scan))
    if scan.attention is not None:
        from layerscan.geometry.attention_summary import head_table

        print(head_table(scan.attention))
    warning = r2_warning(scan.prompt_r2[-1])
    if warning:
        note(warning)
    scan.save(args.output)
    steps = f", {scan.n_steps} token-time steps" if scan.n_steps > 1 else ""
    stages = ", ".join(f"{name} {seconds:.1f}" for name, seconds in timings.items())
    print(
        f"wrote {args.output}: {len(scan.tokens)} tokens x {scan.n_layers + 1} layers x "
        f"{scan.n_particles} particles{steps} in {total:.1f} s ({stages} s)"
    )
    return 0
