"""`layerscan heatmap`: a prompt's per-layer activation image (or B - A of two models), a PNG."""

from __future__ import annotations

import argparse
import time

from layerscan.cli.common import (
    DEFAULT_PROMPT,
    PipelineFlags,
    add_capture_arguments,
    add_model_arguments,
    add_overwrite_argument,
    add_second_model_arguments,
    check_outputs,
    note,
)
from layerscan.cli.options import add_options, options_from_args
from layerscan.core.errors import LayerscanError

DEFAULT_OUTPUT = "layerscan-heatmap.png"


def register(subparsers) -> None:
    from layerscan.geometry.heatmap import HeatmapOptions

    parser = subparsers.add_parser(
        "heatmap",
        help="a prompt's per-layer activation image: layers x hidden dimensions (PNG)",
        description="Draw one row per layer (embeddings at the top) and one column per hidden "
        "dimension, coloured by the last token's state (or the mean over tokens) on "
        "a diverging scale symmetric around 0. With --model-b, the image is B - A.",
    )
    parser.add_argument(
        "source", nargs="?", default=None, help=f"prompt text (default: {DEFAULT_PROMPT!r})"
    )
    parser.add_argument(
        "-o", "--output", default=DEFAULT_OUTPUT, help=f"output .png (default {DEFAULT_OUTPUT})"
    )
    add_overwrite_argument(parser)
    add_options(parser, HeatmapOptions, "heatmap")
    add_model_arguments(parser)
    add_second_model_arguments(parser)
    add_capture_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.geometry.heatmap import HeatmapOptions

    if not args.output.lower().endswith(".png"):
        raise LayerscanError(f"-o {args.output}: a heatmap is written as .png")
    options = options_from_args(HeatmapOptions, args)
    flags = PipelineFlags(args, scan=False)  # every flag checked before any model loads
    check_outputs([("-o", args.output, False)], args.overwrite, [args.source])
    start = time.perf_counter()
    heatmap = flags.pipeline.heatmap(args.source or DEFAULT_PROMPT, options)
    from layerscan.geometry.scene.heatmap import render_heatmap

    note(
        f"captured {heatmap.n_layers + 1} layers x {heatmap.d_model} dimensions in "
        f"{time.perf_counter() - start:.1f} s"
    )
    path = render_heatmap(heatmap, args.output, options.window_size)
    w, h = options.window_size
    what = {"last": "last token", "mean": "mean over tokens"}[options.token]
    what = f"B - A, {what}" if heatmap.difference else what
    print(f"wrote {path} ({w}x{h}, {what}, colour limit ±{heatmap.limit:.3g})")
    return 0
