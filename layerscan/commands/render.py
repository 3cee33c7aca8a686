"""`layerscan render`: a prompt or a scan file to an MP4/GIF/PNG movie of its layer-time."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from layerscan.commands.common import (
    DEFAULT_PROMPT,
    add_capture_arguments,
    add_model_arguments,
    capture_from_args,
    load_model_from_args,
)
from layerscan.commands.scan import add_projection_arguments, options_from_args
from layerscan.errors import LayerscanError

DEFAULT_OUTPUT = "layerscan.mp4"


def add_scan_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, capture and autoencoder arguments used when a prompt (not a .scan) is given."""
    add_model_arguments(parser)
    add_capture_arguments(parser)
    add_projection_arguments(parser)
    group = parser.add_argument_group("scan")
    group.add_argument("--autoencoder", default=None, metavar="DIR",
                       help="autoencoder folder (default: the one packaged for the embedded "
                            "model)")
    group.add_argument("--save-scan", default=None, metavar="FILE.scan",
                       help="also save the scan, to re-render or view it without the model")


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """What to draw: colour mode and toggles."""
    group = parser.add_argument_group("drawing")
    group.add_argument("--color", default=None,
                       choices=["token", "slot", "density", "displacement"],
                       help="token: each token's particles in its chip's colour (default); "
                            "slot: one colour per particle all movie long; density: local 3D "
                            "density; displacement: movement since the previous layer (A→B "
                            "distance in diffs)")
    group.add_argument("--no-surface", action="store_true", help="hide the density surfaces")
    group.add_argument("--no-points", action="store_true", help="hide the particles")
    group.add_argument("--lines", action="store_true",
                       help="join particles to their nearest neighbours in the particle cloud")
    group.add_argument("--no-overlays", action="store_true",
                       help="hide text, prompt, logit lens and charts")
    group.add_argument("--no-labels", action="store_true",
                       help="hide the token labels at their groups of particles")
    group.add_argument("--resolution", default="1280x720", metavar="WxH",
                       help="frame size (default 1280x720)")


def add_movie_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("movie")
    group.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")
    group.add_argument("--frames-per-layer", type=int, default=6, metavar="N",
                       help="frames from one layer to the next (default 6)")
    group.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                       help="target length; overrides --frames-per-layer")
    group.add_argument("--hold", type=float, default=0.5, metavar="SECONDS",
                       help="rest on the first and last layer (default 0.5)")
    group.add_argument("--orbit", type=float, default=30.0, metavar="DEGREES",
                       help="camera orbit over the whole movie (default 30; 0 = still)")
    group.add_argument("--token-sweep", action="store_true",
                       help="play layer-time once per token step (scans with token steps)")
    group.add_argument("--quality", default="medium", choices=["low", "medium", "high"],
                       help="encoder quality (default medium)")
    group.add_argument("--layer", type=float, default=None,
                       help="for a .png still: the layer to show (default the last)")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_resolution(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise LayerscanError(f"bad --resolution {text!r}; write it as WIDTHxHEIGHT, "
                             f"e.g. 1280x720") from None
    return w, h


def scene_options_from_args(args: argparse.Namespace):
    from layerscan.geometry.scene.scene import SceneOptions

    colour = {} if args.color is None else {"color_mode": args.color}
    return SceneOptions(window_size=parse_resolution(args.resolution), **colour,
                        show_surface=not args.no_surface, show_points=not args.no_points,
                        show_lines=args.lines, show_overlays=not args.no_overlays,
                        show_labels=not args.no_labels)


def is_scan_file(text: str) -> bool:
    return text.endswith(".scan") or (len(text) < 4096 and Path(text).is_file())


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _autoencoder(args: argparse.Namespace, device: str):
    from layerscan.autoencoder.artifact import load_autoencoder

    return load_autoencoder(args.autoencoder, device=device)


def scan_from_args(args: argparse.Namespace, source: str | None):
    """A Scan from a .scan file, or from a prompt through model, autoencoder and projection."""
    from layerscan.geometry.scan_file import Scan, load_any

    if source is not None and is_scan_file(source):
        scan = load_any(source)
        if not isinstance(scan, Scan):
            raise LayerscanError(f"{source}: holds a diff; use `layerscan diff {source}`")
        return scan
    from layerscan.geometry.pipeline import scan_capture

    start = time.perf_counter()
    loaded = load_model_from_args(args)
    capture = capture_from_args(loaded, source or DEFAULT_PROMPT, args)
    device = str(loaded.device)
    scan = scan_capture(capture, _autoencoder(args, device), options_from_args(args, device))
    _note(f"scanned {len(capture.tokens)} tokens through {capture.n_layers} layers "
          f"in {time.perf_counter() - start:.1f} s")
    if getattr(args, "save_scan", None):
        scan.save(args.save_scan)
        _note(f"saved {args.save_scan}")
    return scan


def diff_from_args(args: argparse.Namespace, sources: list[str]):
    """A DiffScan from one diff .scan file, or from two prompts."""
    from layerscan.geometry.scan_file import DiffScan, load_any

    if len(sources) == 1:
        if not is_scan_file(sources[0]):
            raise LayerscanError("a diff needs two prompts (or one diff .scan file)")
        diff = load_any(sources[0])
        if not isinstance(diff, DiffScan):
            raise LayerscanError(f"{sources[0]}: holds a single scan, not a diff; "
                                 f"use `layerscan render` or `layerscan view`")
        return diff
    if len(sources) != 2:
        raise LayerscanError(f"a diff needs exactly two prompts, got {len(sources)}")
    from layerscan.geometry.pipeline import diff_captures

    start = time.perf_counter()
    loaded = load_model_from_args(args)
    captures = [capture_from_args(loaded, prompt, args) for prompt in sources]
    device = str(loaded.device)
    if args.token_time:
        raise LayerscanError("--token-time does not apply to diffs; drop it")
    diff = diff_captures(captures[0], captures[1], _autoencoder(args, device),
                         options_from_args(args, device))
    from layerscan.geometry.diff import diverges

    peak = (f"divergence peaks at {diff.a.layer_names[diff.peak_layer]}"
            if diverges(diff.divergence) else "the prompts do not diverge")
    _note(f"diffed two prompts through {captures[0].n_layers} layers in "
          f"{time.perf_counter() - start:.1f} s; {peak}")
    if getattr(args, "save_scan", None):
        diff.save(args.save_scan)
        _note(f"saved {args.save_scan}")
    return diff


def render_to(source, args: argparse.Namespace) -> int:
    """Render a Scan or DiffScan with the movie arguments; prints one summary line."""
    from layerscan.geometry.scene.render import RenderOptions, render_movie

    options = RenderOptions(fps=args.fps, frames_per_layer=args.frames_per_layer,
                            duration=args.duration, hold=args.hold, orbit=args.orbit,
                            token_sweep=args.token_sweep or getattr(args, "token_time", False),
                            quality=args.quality,
                            still_layer=args.layer, progress=not args.no_progress)
    stats = render_movie(source, args.output, scene_options_from_args(args), options)
    length = f", {stats.n_frames / args.fps:.1f} s at {args.fps} fps" if stats.n_frames > 1 \
        else ""
    frames = f"{stats.n_frames} frames" if stats.n_frames > 1 else "a still"
    print(f"wrote {stats.path} ({frames}, {stats.width}x{stats.height}{length}) "
          f"in {stats.seconds:.1f} s")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="render a prompt's layer-time as an MP4 (or GIF, PNG frames, a still)",
        description="Render a prompt (or a .scan file) off-screen: the particle cloud moving "
                    "through the layers, with its surface, prompt, logit lens and "
                    "faithfulness figures.")
    parser.add_argument("source", nargs="?", default=None,
                        help=f"prompt text or a .scan file (default prompt: {DEFAULT_PROMPT!r})")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT,
                        help=f"output: .mp4/.mov/.mkv, .gif, .png (one still) or a folder for "
                             f"PNG frames (default {DEFAULT_OUTPUT})")
    add_scene_arguments(parser)
    add_movie_arguments(parser)
    add_scan_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.geometry.scene.render import output_kind

    output_kind(args.output)  # a bad suffix fails before the model loads
    scene_options_from_args(args)
    return render_to(scan_from_args(args, args.source), args)
