"""`layerscan diff`: two prompts side by side in one common space, as a movie or a diff scan."""

from __future__ import annotations

import argparse

from layerscan.commands.common import add_overwrite_argument, check_outputs
from layerscan.commands.render import (
    add_movie_arguments,
    add_scan_arguments,
    add_scene_arguments,
    check_movie_outputs,
    diff_from_args,
    render_to,
)

DEFAULT_OUTPUT = "layerscan-diff.mp4"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "diff", help="two prompts side by side, coloured by how far their particles moved apart",
        description="Scan two prompts through the same model and autoencoder in one common 3D "
                    "space and render them side by side with linked cameras, particles "
                    "coloured by displacement, the divergence by layer and the differing "
                    "tokens highlighted. With -o FILE.scan the diff is only saved.")
    parser.add_argument("sources", nargs="+", metavar="PROMPT",
                        help="two prompts, or one diff .scan file")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"output: .mp4/.gif/.png/folder, or .scan to save the diff "
                             f"(default {DEFAULT_OUTPUT})")
    add_overwrite_argument(parser)
    add_scene_arguments(parser)
    add_movie_arguments(parser)
    add_scan_arguments(parser)
    parser.set_defaults(run=run, resolution="1600x720")


def run(args: argparse.Namespace) -> int:
    if args.output.endswith(".scan"):
        check_outputs(args, [(args.output, False), (args.save_scan, False)], args.sources)
        diff = diff_from_args(args, args.sources)
        diff.save(args.output)
        print(f"wrote {args.output}")
        return 0
    check_movie_outputs(args, args.sources)
    return render_to(diff_from_args(args, args.sources), args)
