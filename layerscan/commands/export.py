"""`layerscan export`: a scan's layers as VTK/PLY meshes for ParaView, or an offline HTML page."""

from __future__ import annotations

import argparse

from layerscan.commands.common import add_overwrite_argument, check_outputs
from layerscan.commands.render import add_scan_arguments, diff_from_args, scan_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="write per-layer VTK/PLY meshes (ParaView) or a self-contained HTML page",
        description="Export a prompt, a .scan file or a diff. -o NAME.html writes one "
                    "offline page that plays the scan in a browser; any other -o is a folder "
                    "of per-layer cloud and surface meshes (.vtp with .pvd time series, .vtk "
                    "or .ply).")
    parser.add_argument("source", nargs="*", metavar="PROMPT",
                        help="prompt text or a .scan file; with --diff two prompts or one "
                             "diff .scan file")
    parser.add_argument("-o", "--output", required=True,
                        help="FILE.html, or a folder for meshes")
    add_overwrite_argument(parser)
    parser.add_argument("--format", default="vtp", choices=["vtp", "vtk", "ply"],
                        help="mesh format for folder output (default vtp)")
    parser.add_argument("--diff", action="store_true", help="export a diff of two prompts")
    add_scan_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.errors import LayerscanError
    from layerscan.geometry.scene.export import export_html, export_meshes

    html = args.output.lower().endswith((".html", ".htm"))
    check_outputs(args, [(args.output, not html), (args.save_scan, False)], args.source)
    if args.diff:
        source = diff_from_args(args, args.source)
    else:
        if len(args.source) > 1:
            raise LayerscanError("export takes one prompt (quote it) or one .scan file; "
                                 "use --diff for two")
        source = scan_from_args(args, args.source[0] if args.source else None)
    if html:
        path = export_html(source, args.output)
    else:
        path = export_meshes(source, args.output, args.format, overwrite=args.overwrite)
    print(f"wrote {path}")
    return 0
