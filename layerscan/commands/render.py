"""`layerscan render`: a prompt or a scan file to an MP4/GIF/PNG movie of its layer-time."""

from __future__ import annotations

import argparse
from dataclasses import replace

from layerscan.commands.common import (
    DEFAULT_PROMPT,
    ScanRequest,
    add_movie_arguments,
    add_overwrite_argument,
    add_scan_arguments,
    add_scene_arguments,
    check_outputs,
    load_or_scan,
    render_and_report,
    render_options,
    scene_options,
)

DEFAULT_OUTPUT = "layerscan.mp4"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="render a prompt's layer-time as an MP4 (or GIF, PNG frames, a still)",
        description="Render a prompt (or a .scan file) off-screen: the particle cloud moving "
                    "through the layers, with its surface, prompt, logit lens and "
                    "faithfulness figures.")
    parser.add_argument("source", nargs="?", default=None,
                        help=f"prompt text (at most the autoencoder's max_len tokens: 128 "
                             f"for the packaged one) or a .scan file (default prompt: "
                             f"{DEFAULT_PROMPT!r})")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"output: .mp4/.mov/.mkv, .gif, .png (one still) or a folder for "
                             f"PNG frames (default {DEFAULT_OUTPUT})")
    add_overwrite_argument(parser)
    add_scene_arguments(parser)
    add_movie_arguments(parser)
    add_scan_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.geometry.scene.render import output_kind

    kind = output_kind(args.output)  # a bad suffix fails before the model loads
    check_outputs([("-o", args.output, kind == "frames"), ("--save-scan", args.save_scan, False)],
                  args.overwrite, [args.source])
    scene = scene_options(args)
    movie = render_options(args)
    request = ScanRequest(args)
    if request.options.token_time:  # a token-time scan plays once per token
        movie = replace(movie, token_sweep=True)
    return render_and_report(load_or_scan(request, args.source), args.output, scene, movie,
                             args.overwrite)
