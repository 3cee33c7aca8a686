"""`layerscan diff`: two prompts side by side in one common space, as a movie or a diff scan."""

from __future__ import annotations

import argparse

from layerscan.cli.common import (
    PipelineFlags,
    add_movie_arguments,
    add_overwrite_argument,
    add_scan_arguments,
    add_scene_arguments,
    add_second_model_arguments,
    check_outputs,
    load_or_diff,
    render_and_report,
    render_options,
    scene_options,
)
from layerscan.geometry.scan_options import DIFF_WINDOW_SIZE

DEFAULT_OUTPUT = "layerscan-diff.mp4"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "diff",
        help="two prompts (or two models) side by side, coloured by how far their "
        "particles moved apart",
        description="Scan two prompts through the same model and autoencoder in one common 3D "
        "space and render them side by side with linked cameras, particles "
        "coloured by displacement, the divergence by layer and the differing "
        "tokens highlighted. With --model-b (a fine-tune or a PEFT adapter) one "
        "prompt, or two, go through two models and the base's autoencoder. With "
        "-o FILE.scan the diff is only saved.",
    )
    parser.add_argument(
        "sources",
        nargs="+",
        metavar="PROMPT",
        help="two prompts, one prompt with --model-b, or one diff .scan file "
        "(each prompt up to 1024 tokens with the packaged autoencoder, "
        "or the model's context if shorter)",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"output: .mp4/.gif/.png/folder, or .scan to save the diff (default {DEFAULT_OUTPUT})",
    )
    add_overwrite_argument(parser)
    add_scene_arguments(parser, window_size=DIFF_WINDOW_SIZE)
    add_movie_arguments(parser)
    add_scan_arguments(parser)
    add_second_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.geometry.scene.render import output_kind

    save_only = args.output.endswith(".scan")
    kind = "scan" if save_only else output_kind(args.output)  # before the model loads
    check_outputs(
        [("-o", args.output, kind == "frames"), ("--save-scan", args.save_scan, False)],
        args.overwrite,
        args.sources,
    )
    flags = PipelineFlags(args)
    if save_only:
        diff = load_or_diff(flags, args.sources)
        diff.save(args.output)
        print(f"wrote {args.output}")
        return 0
    scene = scene_options(args, window_size=DIFF_WINDOW_SIZE)
    movie = render_options(args)
    return render_and_report(
        load_or_diff(flags, args.sources), args.output, scene, movie, args.overwrite
    )
