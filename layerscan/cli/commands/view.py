"""`layerscan view`: a prompt, a scan file or a diff in an interactive desktop window."""

from __future__ import annotations

import argparse

from layerscan.cli.common import (
    PipelineFlags,
    add_prompt_argument,
    add_scan_arguments,
    add_scene_arguments,
    add_second_model_arguments,
    check_outputs,
    lazy_group,
    load_or_diff,
    load_or_scan,
    scene_options,
    source_and_kind,
)
from layerscan.cli.options import add_options, options_from_args


@lazy_group
def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """The ViewerOptions flags."""
    from layerscan.geometry.scene.window import ViewerOptions

    add_options(parser, ViewerOptions, "window")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "view",
        help="open a prompt, a .scan file or a diff in a desktop window",
        description="Open a PyVista window: drag to orbit, scroll to zoom, space = play/pause, "
        "[ and ] step a layer, - and = step a token, u/p/l/o/t toggle surface, "
        "points, lines, overlays, token labels, c cycles the colour mode, a click "
        "on a particle names its token and layer, s saves a screenshot, q closes.",
    )
    parser.add_argument(
        "source",
        nargs="*",
        default=None,
        metavar="PROMPT",
        help="prompt text or a .scan file (default: the default prompt); "
        "with --diff: two prompts or one diff .scan file; with --model-b: "
        "one prompt or two",
    )
    parser.add_argument(
        "--diff", action="store_true", help="show two prompts side by side (implied by --model-b)"
    )
    add_window_arguments(parser)
    add_scene_arguments(parser)
    add_prompt_argument(parser)
    add_scan_arguments(parser)
    add_second_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.core.errors import LayerscanError
    from layerscan.geometry.scene.window import Viewer, ViewerOptions, check_display

    scene = scene_options(args)
    viewer_options = options_from_args(ViewerOptions, args)
    flags = PipelineFlags(args)
    check_display()  # before minutes of model work
    check_outputs([("--save-scan", args.save_scan, False)], inputs=args.source or [])
    if args.prompt is not None and (args.diff or flags.second_wanted):
        raise LayerscanError("--prompt gives one prompt; give a diff's two prompts as arguments")
    if args.diff or flags.second_wanted:
        source = load_or_diff(flags, args.source or [])
    else:
        if len(args.source or []) > 1:
            raise LayerscanError(
                "view takes one prompt (quote it) or one .scan file; use --diff for two"
            )
        text, is_prompt = source_and_kind(args, args.source[0] if args.source else None)
        source = load_or_scan(flags, text, prompt=is_prompt)
    viewer = Viewer(source, scene, viewer_options)
    viewer.run(title="layerscan")
    for path in viewer.screenshots:
        print(f"saved {path}")
    return 0
