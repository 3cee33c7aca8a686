"""`layerscan view`: a prompt, a scan file or a diff in an interactive desktop window."""

from __future__ import annotations

import argparse

from layerscan.commands.render import (
    add_scan_arguments,
    add_scene_arguments,
    diff_from_args,
    scan_from_args,
    scene_options_from_args,
)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "view", help="open a prompt, a .scan file or a diff in a desktop window",
        description="Open a PyVista window: drag to orbit, scroll to zoom, space = play/pause, "
                    "[ and ] step a layer, - and = step a token, u/p/l/o/t toggle surface, "
                    "points, lines, overlays, token labels, c cycles the colour mode, a click "
                    "on a particle names its token and layer, s saves a screenshot, q closes.")
    parser.add_argument("source", nargs="*", default=None, metavar="PROMPT",
                        help="prompt text or a .scan file (default: the default prompt); "
                             "with --diff: two prompts or one diff .scan file")
    parser.add_argument("--diff", action="store_true", help="show two prompts side by side")
    parser.add_argument("--fps", type=int, default=30, help="animation frames per second")
    parser.add_argument("--frames-per-layer", type=int, default=8, metavar="N",
                        help="frames from one layer to the next while playing")
    parser.add_argument("--screenshot-dir", default=".", metavar="DIR",
                        help="where `s` saves screenshots (default: here)")
    add_scene_arguments(parser)
    add_scan_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.errors import LayerscanError
    from layerscan.geometry.scene.window import Viewer, check_display

    check_display()  # before minutes of model work
    options = scene_options_from_args(args)
    if args.diff:
        source = diff_from_args(args, args.source or [])
    else:
        if len(args.source or []) > 1:
            raise LayerscanError("view takes one prompt (quote it) or one .scan file; "
                                 "use --diff for two")
        source = scan_from_args(args, args.source[0] if args.source else None)
    viewer = Viewer(source, options, fps=args.fps, frames_per_layer=args.frames_per_layer,
                    screenshot_dir=args.screenshot_dir)
    viewer.run(title="layerscan")
    for path in viewer.screenshots:
        print(f"saved {path}")
    return 0
