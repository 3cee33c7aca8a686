"""`layerscan render`: a prompt or a scan file to an MP4/GIF/PNG movie of its layer-time."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from layerscan.cli.common import (
    DEFAULT_PROMPT,
    PipelineFlags,
    add_movie_arguments,
    add_overwrite_argument,
    add_prompt_argument,
    add_scan_arguments,
    add_scene_arguments,
    check_outputs,
    is_scan_file,
    load_or_scan,
    render_and_report,
    render_options,
    scene_options,
    source_and_kind,
)
from layerscan.cli.render_process import RenderProcess
from layerscan.core.errors import LayerscanError

DEFAULT_OUTPUT = "layerscan.mp4"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render",
        help="render a prompt's layer-time as an MP4 (or GIF, PNG frames, a still)",
        description="Render a prompt (or a .scan file) off-screen: the particle cloud moving "
        "through the layers, with its surface, prompt, logit lens and "
        "faithfulness figures.",
    )
    parser.add_argument(
        "source",
        nargs="?",
        default=None,
        help=f"prompt text (up to 1024 tokens with the packaged autoencoder, "
        f"or the model's context if shorter) or a .scan file (default prompt: "
        f"{DEFAULT_PROMPT!r})",
    )
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_OUTPUT,
        help=f"output: .mp4/.mov/.mkv, .gif, .png (one still) or a folder for "
        f"PNG frames (default {DEFAULT_OUTPUT})",
    )
    parser.add_argument(
        "--prompts-file",
        metavar="FILE",
        help="render every non-blank line of FILE (a prompt or a .scan file) "
        "in one process, loading the model once; -o NAME.mp4 then "
        "writes NAME-1.mp4, NAME-2.mp4, ...",
    )
    add_prompt_argument(parser)
    add_overwrite_argument(parser)
    add_scene_arguments(parser)
    add_movie_arguments(parser)
    add_scan_arguments(parser)
    parser.set_defaults(run=run)


def numbered(output: str, number: int, count: int) -> str:
    """NAME.mp4 → NAME-01.mp4 (numbers as wide as `count`); a folder NAME → NAME-01."""
    path = Path(output)
    return str(path.with_name(f"{path.stem}-{number:0{len(str(count))}d}{path.suffix}"))


def read_prompts(path: str) -> list[str]:
    """The non-blank lines of a prompts file, stripped; at most LIMITS["prompts_file_bytes"]
    are read, so /dev/zero or an endless pipe is refused instead of filling memory."""
    from layerscan.core.limits import LIMITS

    limit = LIMITS["prompts_file_bytes"]
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise LayerscanError(
                f"--prompts-file {path}: is larger than {limit >> 20} MiB (or endless); "
                f"give a text file with one prompt a line"
            )
        if b"\0" in data:
            raise LayerscanError(f"--prompts-file {path}: holds NUL bytes; it is not a text file")
        lines = data.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise LayerscanError(f"--prompts-file {path}: cannot read it ({exc})") from exc
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise LayerscanError(f"--prompts-file {path}: has no prompts (one per line)")
    return prompts


def run(args: argparse.Namespace) -> int:
    from layerscan.geometry.scene.render import output_kind

    kind = output_kind(args.output)  # a bad suffix fails before the model loads
    source, is_prompt = source_and_kind(args, args.source)
    jobs = [(source, args.output)]
    if args.prompts_file:
        if source is not None or args.save_scan:
            raise LayerscanError(
                "--prompts-file renders the file's prompts; drop the prompt "
                "argument and --save-scan"
            )
        prompts = read_prompts(args.prompts_file)
        jobs = [
            (prompt, numbered(args.output, i, len(prompts))) for i, prompt in enumerate(prompts, 1)
        ]
    check_outputs(
        [("-o", output, kind == "frames") for _, output in jobs]
        + [("--save-scan", args.save_scan, False)],
        args.overwrite,
        [None if is_prompt else source, args.prompts_file],
    )
    scene = scene_options(args)
    movie = render_options(args)
    flags = PipelineFlags(args)
    if flags.token_time:  # a token-time scan plays once per token
        movie = replace(movie, token_sweep=True)
    if len(jobs) == 1 and (is_prompt or source is None or not is_scan_file(source)):
        return _render_prompt(args, flags, source, is_prompt, scene, movie)
    for source, output in jobs:  # the model and autoencoder load once (the pipeline keeps them)
        scan = load_or_scan(flags, source, prompt=is_prompt)
        render_and_report(scan, output, scene, movie, args.overwrite)
    return 0


def _render_prompt(args, flags, source, is_prompt: bool, scene, movie) -> int:
    """One prompt's movie; where a core is to spare, drawn by a process forked now that
    imports the drawing side while this one loads the model and scans (`RenderProcess`)."""
    from layerscan.geometry.scene.parallel import spare_core

    drawer = RenderProcess(scene, args.debug) if spare_core(movie.processes) else None
    try:
        scan = load_or_scan(flags, source, prompt=is_prompt)
        render_and_report(scan, args.output, scene, movie, args.overwrite, drawer)
    finally:
        if drawer is not None:
            drawer.close()
    return 0
