"""`layerscan export`: a scan's layers as VTK/PLY meshes for ParaView, or an offline HTML page."""

from __future__ import annotations

import argparse

from layerscan.cli.common import (
    PipelineFlags,
    add_overwrite_argument,
    add_prompt_argument,
    add_scan_arguments,
    check_outputs,
    lazy_group,
    load_or_diff,
    load_or_scan,
    source_and_kind,
)


@lazy_group
def add_format_argument(parser: argparse.ArgumentParser) -> None:
    """--format, whose choices the scene's export module defines."""
    from layerscan.geometry.scene.export import MESH_FORMATS

    parser.add_argument(
        "--format",
        default=MESH_FORMATS[0],
        choices=MESH_FORMATS,
        help="mesh format for folder output (default vtp)",
    )


PAGE_FIELDS = (
    "show_attention",
    "arc_top_k",
    "arc_mass",
    "arc_head",
    "arc_sink",
    "show_components",
    "trace",
)
"""The SceneOptions the HTML page follows: its arcs, strip and trace."""


@lazy_group
def add_page_arguments(parser: argparse.ArgumentParser) -> None:
    """The arcs', strip's and trace's flags (SceneOptions), for the HTML page."""
    from layerscan.cli.options import add_options
    from layerscan.geometry.scene.scene import SceneOptions

    add_options(
        parser,
        SceneOptions,
        "HTML page (scans made with --attention, --components)",
        only=PAGE_FIELDS,
    )


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write per-layer VTK/PLY meshes (ParaView) or a self-contained HTML page",
        description="Export a prompt, a .scan file or a diff. -o NAME.html writes one "
        "offline page that plays the scan in a browser; -o a name without a "
        "suffix is a folder of per-layer cloud and surface meshes (.vtp with "
        ".pvd time series, .vtk or .ply).",
    )
    parser.add_argument(
        "source",
        nargs="*",
        metavar="PROMPT",
        help="prompt text or a .scan file; with --diff two prompts or one diff .scan file",
    )
    parser.add_argument(
        "-o", "--output", required=True, help="FILE.html, or a folder (no suffix) for meshes"
    )
    add_overwrite_argument(parser)
    add_prompt_argument(parser)
    parser.add_argument("--diff", action="store_true", help="export a diff of two prompts")
    add_format_argument(parser)
    add_page_arguments(parser)
    add_scan_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.core.errors import LayerscanError
    from layerscan.geometry.scene.export import export_html, export_kind, export_meshes

    kind = export_kind(args.output)  # a bad suffix fails before any work
    check_outputs(
        [("-o", args.output, kind != "html"), ("--save-scan", args.save_scan, False)],
        args.overwrite,
        args.source,
    )
    flags = PipelineFlags(args)
    if args.prompt is not None and (args.diff or flags.second_wanted):
        raise LayerscanError("--prompt gives one prompt; give a diff's two prompts as arguments")
    if args.diff:
        source = load_or_diff(flags, args.source)
    else:
        if len(args.source) > 1:
            raise LayerscanError(
                "export takes one prompt (quote it) or one .scan file; use --diff for two"
            )
        text, is_prompt = source_and_kind(args, args.source[0] if args.source else None)
        source = load_or_scan(flags, text, prompt=is_prompt)
    if kind == "html":
        from layerscan.cli.options import options_from_args
        from layerscan.geometry.scene.scene import SceneOptions

        path = export_html(source, args.output, options=options_from_args(SceneOptions, args))
    else:
        path = export_meshes(source, args.output, args.format, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
