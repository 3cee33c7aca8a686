"""`layerscan components`: the "lightning chain" of a generation, a PNG: tokens x blocks heat
strips of what attention and the MLP wrote into the residual stream."""

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
    is_scan_file,
    note,
)
from layerscan.core.errors import LayerscanError

DEFAULT_OUTPUT = "layerscan-components.png"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "components",
        help="the component chain of a generation: attention and MLP writes per token and "
        "block (PNG)",
        description="Capture a prompt (and --generate N tokens) with --components and draw, "
        "for every token and block, the norm of what attention and the MLP wrote into the "
        "residual stream, the generated tokens marked, and how each token's attention split "
        "between the prompt, earlier generated tokens and itself. A .scan file made with "
        "--components is drawn without the model.",
    )
    parser.add_argument(
        "source",
        nargs="?",
        default=None,
        help=f"prompt text or a .scan file (default: {DEFAULT_PROMPT!r})",
    )
    parser.add_argument(
        "-o", "--output", default=DEFAULT_OUTPUT, help=f"output .png (default {DEFAULT_OUTPUT})"
    )
    parser.add_argument(
        "--size",
        default="1600x900",
        metavar="WxH",
        help="image size in pixels (default 1600x900)",
    )
    add_overwrite_argument(parser)
    add_model_arguments(parser)
    add_capture_arguments(parser)
    parser.set_defaults(run=run)


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LayerscanError(f"--size {text}: give WIDTHxHEIGHT, e.g. 1600x900") from None
    return w, h


def run(args: argparse.Namespace) -> int:
    if not args.output.lower().endswith(".png"):
        raise LayerscanError(f"-o {args.output}: the component chain is written as .png")
    size = _size(args.size)
    check_outputs([("-o", args.output, False)], args.overwrite, [args.source])
    if args.source is not None and is_scan_file(args.source):
        from layerscan.geometry.scan_file import Scan

        record = Scan.load(args.source)
        if record.components is None:
            raise LayerscanError(
                f"{args.source}: made without --components; scan the prompt again with it"
            )
        parts, model_id, prompt = record.components, record.model_id, record.prompt
    else:
        flags = PipelineFlags(args, scan=False)  # every flag checked before any model loads
        flags.settings["capture"] = replace(flags.settings["capture"], components=True)
        start = time.perf_counter()
        record = flags.pipeline.capture_prompt(args.source or DEFAULT_PROMPT)
        parts, model_id, prompt = record.components, record.model_id, record.prompt
        note(
            f"captured {record.n_tokens} tokens through {record.n_layers} blocks with "
            f"--components in {time.perf_counter() - start:.1f} s "
            f"(eager replay for the attention split: {parts.replay_seconds:.2f} s)"
        )
    from layerscan.geometry.scene.component_chain import render_chain

    shown = prompt if len(prompt) <= 70 else prompt[:69] + "…"
    title = f"{model_id} · “{shown}”"
    path = render_chain(parts, record.tokens, record.n_prompt_tokens, title, args.output, size)
    print(
        f"wrote {path} ({size[0]}x{size[1]}, {parts.n_tokens} tokens x {parts.n_layers} blocks, "
        f"writes add up to the stream to {parts.residual_error:.1e})"
    )
    return 0
