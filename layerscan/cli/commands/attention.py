"""`layerscan attention`: AttentionViz's joint query-key view of a head (PNG, small multiples of
every head, or an MP4 through the blocks), with how far to trust closeness in it."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from layerscan.cli.common import (
    DEFAULT_PROMPT,
    PipelineFlags,
    add_capture_arguments,
    add_model_arguments,
    add_overwrite_argument,
    check_outputs,
    note,
)
from layerscan.core.errors import LayerscanError

DEFAULT_OUTPUT = "layerscan-qk.png"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "attention",
        help="one head's queries and keys in one 3D space (AttentionViz's joint view)",
        description="Lay out a head's queries and keys together, after the normalisation that "
        "leaves its attention unchanged (keys moved to the queries' mean; queries x a, keys / a "
        "to equal mean norms). Prints per head the Spearman correlation between each query's "
        "attention weights and its 3D distances to the keys (negative: attended keys are near), "
        "beside the same for PCA-3. A .png shows one block (--head all: every head); an .mp4 "
        "follows one head through every block, layouts aligned.",
    )
    parser.add_argument(
        "source", nargs="?", default=None, help=f"prompt text (default: {DEFAULT_PROMPT!r})"
    )
    parser.add_argument(
        "-o", "--output", default=DEFAULT_OUTPUT, help=f".png or .mp4 (default {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--layer", type=int, default=None, help="block 1..n_layers of a .png (default: the middle)"
    )
    parser.add_argument(
        "--head", default="0", help="head index, or 'all' for small multiples (default 0)"
    )
    parser.add_argument(
        "--query", type=int, default=None, help="token whose top keys get lines (default: last)"
    )
    parser.add_argument(
        "--resolution", default="1280x720", help="WIDTHxHEIGHT in pixels (default 1280x720)"
    )
    add_overwrite_argument(parser)
    add_model_arguments(parser)
    add_capture_arguments(parser)
    parser.set_defaults(run=run)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LayerscanError(f"--resolution {text}: use WIDTHxHEIGHT, e.g. 1280x720") from None
    if not (64 <= w <= 7680 and 64 <= h <= 4320) or w % 2 or h % 2:
        raise LayerscanError(f"--resolution {text}: even sizes from 64x64 to 7680x4320")
    return w, h


def run(args: argparse.Namespace) -> int:
    movie = args.output.lower().endswith((".mp4", ".mov", ".mkv"))
    if not (movie or args.output.lower().endswith(".png")):
        raise LayerscanError(f"-o {args.output}: the joint view is written as .png or .mp4")
    every_head = args.head == "all"
    if every_head and movie:
        raise LayerscanError("--head all draws small multiples of one block: write a .png")
    if not every_head and not args.head.isdigit():
        raise LayerscanError(f"--head {args.head}: give a head index or 'all'")
    size = _size(args.resolution)
    flags = PipelineFlags(args, scan=False)
    flags.settings["capture"] = replace(
        flags.settings["capture"], attention=True, attention_all=True, top_k=0
    )
    check_outputs([("-o", args.output, False)], args.overwrite, [args.source])
    from layerscan.geometry.joint_qk import joint_view

    start = time.perf_counter()
    capture = flags.pipeline.capture_prompt(args.source or DEFAULT_PROMPT)
    record = capture.attention
    if movie:
        blocks = list(range(1, record.n_layers + 1))
    else:
        blocks = [args.layer if args.layer is not None else (record.n_layers + 1) // 2]
    heads = list(range(record.n_heads)) if every_head else [int(args.head)]
    view = joint_view(
        record, capture.tokens, blocks, heads, capture.is_causal, capture.model_id, args.query
    )
    note(f"captured and laid out in {time.perf_counter() - start:.1f} s")
    print("Spearman ρ of each query's weights vs its 3D distances to the keys (negative: good)")
    for b, block in enumerate(view.blocks):
        for h, head in enumerate(view.heads):
            print(
                f"  block {block:>3} head {head:>2}: joint view {view.correlation[b, h]:+.2f}"
                f"   PCA-3 {view.baseline[b, h]:+.2f}"
            )
    from layerscan.geometry.scene.joint_view import render_joint

    path, n_frames, seconds = render_joint(view, args.output, size, overwrite=args.overwrite)
    print(f"wrote {path} ({n_frames} frame{'s' if n_frames > 1 else ''}) in {seconds:.1f} s")
    return 0
