"""What several subcommands share: their option groups, and loading or scanning their input."""

from __future__ import annotations

import argparse
import functools
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

from layerscan.cli.options import add_options, given_options, options_from_args
from layerscan.core.errors import LayerscanError
from layerscan.core.startup import paused_collection

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog because"


def note(message: str) -> None:
    """A progress line on stderr (stdout carries the results)."""
    print(message, file=sys.stderr, flush=True)


def lazy_group(add: Callable[[argparse.ArgumentParser], None]) -> Callable:
    """`add(parser)` runs when the command is used, not when the CLI starts (see cli.main._Parser);
    on a plain ArgumentParser it runs at once. Lets `--help` and light commands skip importing
    torch, transformers, scikit-learn and PyVista, where the option classes live."""

    @functools.wraps(add)
    def register(parser: argparse.ArgumentParser, *args, **kwargs) -> None:
        later = getattr(parser, "add_later", None)
        if later is None:
            add(parser, *args, **kwargs)
        else:
            later(lambda p: add(p, *args, **kwargs))

    return register


@lazy_group
def add_model_arguments(parser: argparse.ArgumentParser, defaults: str | None = None) -> None:
    """The ModelOptions flags: --model, --device, --dtype, --trust-remote-code.

    Args:
        defaults: for commands whose model settings default to something else (a config, a
            trained autoencoder's record): where they come from, shown in --help; read the
            flags with `given_options(ModelOptions, args)`.
    """
    from layerscan.autoencoder.capture.loading import ModelOptions

    if defaults is None:
        add_options(parser, ModelOptions, "model")
    else:
        add_options(
            parser,
            ModelOptions,
            "model",
            description=f"Flags not given: {defaults}.",
            show_defaults=False,
        )


@lazy_group
def add_second_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The SecondModelOptions flags: --model-b, --adapter (model-vs-model comparisons)."""
    from layerscan.autoencoder.capture.model_pair import SecondModelOptions

    add_options(parser, SecondModelOptions, "second model (B)")


@lazy_group
def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    """The CaptureOptions flags: --normalization, --generate, --top-k, ..."""
    from layerscan.autoencoder.capture.capture_file import CaptureOptions

    add_options(parser, CaptureOptions, "capture")


DATA_FIELDS = {
    "model": "language_model",
    "device": "device",
    "dtype": "dtype",
    "trust_remote_code": "trust_remote_code",
}
"""The model flags, and the fields of the training data config (DataConfig) they set."""


def data_changes(args: argparse.Namespace) -> dict:
    """The DataConfig fields that the model flags typed for train/eval set (--model → ...)."""
    from layerscan.autoencoder.capture.loading import ModelOptions

    return {DATA_FIELDS[name]: value for name, value in given_options(ModelOptions, args).items()}


@lazy_group
def add_scan_arguments(parser: argparse.ArgumentParser, save: bool = True) -> None:
    """Model, capture, projection and autoencoder flags, used when a prompt is scanned."""
    from layerscan.autoencoder.config import FitOptions
    from layerscan.geometry.scan_options import ScanOptions

    add_model_arguments(parser)
    add_capture_arguments(parser)
    add_options(parser, ScanOptions, "projection")
    group = parser.add_argument_group("scan")
    group.add_argument(
        "--autoencoder",
        default=None,
        metavar="DIR",
        help="autoencoder folder, e.g. the one `layerscan train` printed, or "
        "'fit' to fit one even where one is packaged (default: the one "
        "packaged for the embedded model; any other model gets one fitted "
        "on first use, 1-2 min for 135M parameters on a CPU, kept "
        "in the layerscan cache and reused). Its particle count is the "
        "longest prompt accepted, in tokens (generated ones included; one "
        "particle a token): 1024 for the packaged and fitted ones, 64 for "
        "configs/tiny.yaml; the model's context may be shorter",
    )
    add_options(group, FitOptions)
    if save:
        group.add_argument(
            "--save-scan",
            default=None,
            metavar="FILE.scan",
            help="also save the scan, to re-render or view it without the model",
        )


@lazy_group
def add_scene_arguments(parser: argparse.ArgumentParser, **defaults) -> None:
    """The SceneOptions flags: what to draw and how (`defaults`: the command's own, shown in
    the help; pass the same to `scene_options`)."""
    from layerscan.geometry.scene.scene import SceneOptions

    add_options(parser, SceneOptions, "drawing", defaults=defaults)


@lazy_group
def add_movie_arguments(parser: argparse.ArgumentParser) -> None:
    """The RenderOptions flags: timing and encoding of a movie."""
    from layerscan.geometry.scene.render import RenderOptions

    add_options(parser, RenderOptions, "movie")


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """--overwrite, for every command that writes an output (the one place it is defined)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an output folder that an earlier layerscan run wrote "
        "(files are always replaced atomically; a folder layerscan did "
        "not write is never replaced)",
    )


def check_outputs(
    outputs: Iterable[tuple[str, str | None, bool]],
    overwrite: bool = False,
    inputs: Iterable[str | None] = (),
) -> None:
    """Check each (flag, path, is_folder) output before any expensive work (see `check_output`).

    Args:
        outputs: the outputs of this run; a None path (an output not asked for) is skipped.
        overwrite: the --overwrite flag.
        inputs: prompts or input files; an output may not be or hold an input file.
    """
    from layerscan.core.outputs import check_output

    sources = [item for item in inputs if item and names_path(item)]
    for flag, path, folder in outputs:
        if path:
            check_output(path, folder=folder, overwrite=overwrite, inputs=sources, flag=flag)


def is_scan_file(text: str) -> bool:
    """Whether a command's source names a .scan file rather than being a prompt."""
    return text.endswith(".scan") or names_path(text, Path.is_file)


def names_path(text: str, test=Path.exists) -> bool:
    """Whether `text` (a prompt or a path) names an existing path (passing `test`)."""
    try:
        return len(text) < 4096 and test(Path(text).expanduser())
    except OSError:  # a long prompt is no file name (ENAMETOOLONG)
        return False


class PipelineFlags:
    """The pipeline's settings as the flags give them, parsed (and so validated) before any work;
    the `Pipeline` itself is made on first use, so reading a .scan file never imports torch."""

    def __init__(self, args: argparse.Namespace, scan: bool = True) -> None:
        from layerscan.autoencoder.capture.capture_file import CaptureOptions
        from layerscan.autoencoder.capture.loading import ModelOptions
        from layerscan.autoencoder.capture.model_pair import SecondModelOptions

        self.settings = {
            "model": options_from_args(ModelOptions, args),
            "capture": options_from_args(CaptureOptions, args),
            "second": options_from_args(SecondModelOptions, args),
        }
        if scan:
            from layerscan.autoencoder.config import FitOptions
            from layerscan.geometry.scan_options import ScanOptions

            self.settings.update(
                options=options_from_args(ScanOptions, args),
                fit=options_from_args(FitOptions, args),
                autoencoder=args.autoencoder,
            )
        for name in ("prompt", "source"):
            for text in _texts(vars(args).get(name)):
                check_text(text)
        self.save_scan: str | None = vars(args).get("save_scan")
        if self.save_scan is not None and not self.save_scan.endswith(".scan"):
            raise LayerscanError(f"{self.save_scan}: scan files end in .scan")

    @property
    def second_wanted(self) -> bool:
        """Whether B goes through a second model (--model-b / --adapter)."""
        return self.settings["second"].wanted

    @property
    def token_time(self) -> bool:
        """Whether the scan has one step per prefix (--token-time)."""
        options = self.settings.get("options")
        return options is not None and options.token_time

    @functools.cached_property
    def pipeline(self):
        """The `Pipeline` of these settings (imported with collection paused: start-up)."""
        with paused_collection():
            from layerscan.geometry.pipeline import Pipeline

        return Pipeline(**self.settings)


def check_text(text: str, what: str = "the prompt") -> str:
    """Refuse, before the model loads, text that is not valid UTF-8 (Python keeps such bytes
    of the command line as lone surrogates, which no tokenizer takes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise LayerscanError(
            f"{what} is not valid UTF-8 text; check the terminal's or the file's encoding"
        ) from None
    return text


def _texts(value) -> list[str]:
    """A positional argument's strings (None, one string, or a list of them)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]


def refuse_save_scan_of_a_file(flags: PipelineFlags, source: str) -> None:
    """--save-scan with a .scan input would only copy it: say so instead of ignoring it."""
    if flags.save_scan:
        raise LayerscanError(
            f"--save-scan: {source} is already a scan file, so nothing new would be saved; "
            f"drop --save-scan (or copy the file)"
        )


def add_prompt_argument(parser: argparse.ArgumentParser) -> None:
    """--prompt TEXT: the text is a prompt even where a file of that name exists."""
    parser.add_argument(
        "--prompt",
        metavar="TEXT",
        help="scan TEXT as a prompt, even if a file of that name exists (instead of the "
        "positional argument)",
    )


def source_and_kind(args: argparse.Namespace, source: str | None) -> tuple[str | None, bool]:
    """(the source, whether it is surely a prompt): --prompt, or the positional argument."""
    if getattr(args, "prompt", None) is None:
        return source, False
    if source:
        raise LayerscanError("give the prompt either as the argument or with --prompt, not both")
    return args.prompt, True


def load_or_scan(flags: PipelineFlags, source: str | None, prompt: bool = False):
    """A Scan from a .scan file, or from a prompt (default prompt: None) through the pipeline;
    `prompt`: `source` is a prompt even if a file of that name exists (--prompt)."""
    from layerscan.geometry.diff_scan import load_any
    from layerscan.geometry.scan_file import Scan

    if source is not None and not prompt and is_scan_file(source):
        refuse_save_scan_of_a_file(flags, source)
        scan = load_any(source)
        if not isinstance(scan, Scan):
            raise LayerscanError(f"{source}: holds a diff; use `layerscan diff {source}`")
        return scan
    start = time.perf_counter()
    scan = flags.pipeline.scan(source or DEFAULT_PROMPT)
    note(
        f"scanned {len(scan.tokens)} tokens through {scan.n_layers} layers "
        f"in {time.perf_counter() - start:.1f} s"
    )
    if flags.save_scan:
        scan.save(flags.save_scan)
        note(f"saved {flags.save_scan}")
    return scan


def load_or_diff(flags: PipelineFlags, sources: list[str]):
    """A DiffScan from one diff .scan file, or from two prompts through the pipeline."""
    from layerscan.geometry.diff_scan import DiffScan, load_any

    models = flags.second_wanted
    if models and not sources:
        sources = [DEFAULT_PROMPT]
    if len(sources) == 1 and models and not is_scan_file(sources[0]):
        sources = [sources[0], sources[0]]  # one prompt through both models
    if len(sources) == 1:
        if not is_scan_file(sources[0]):
            raise LayerscanError(
                "a diff needs two prompts (or one diff .scan file), or one prompt with --model-b"
            )
        refuse_save_scan_of_a_file(flags, sources[0])
        diff = load_any(sources[0])
        if not isinstance(diff, DiffScan):
            raise LayerscanError(
                f"{sources[0]}: holds a single scan, not a diff; "
                f"use `layerscan render` or `layerscan view`"
            )
        return diff
    if len(sources) != 2:
        raise LayerscanError(f"a diff needs exactly two prompts, got {len(sources)}")
    from layerscan.geometry.diff_summary import summary

    start = time.perf_counter()
    diff = flags.pipeline.diff(sources[0], sources[1])
    what = "models" if models else "prompts"
    note(
        f"diffed two {what} through {diff.a.n_layers} layers in {time.perf_counter() - start:.1f} s"
    )
    for line in summary(diff):
        note(line)
    if flags.save_scan:
        diff.save(flags.save_scan)
        note(f"saved {flags.save_scan}")
    return diff


def scene_options(args: argparse.Namespace, **defaults):
    """The SceneOptions of the drawing flags (`defaults` replace the dataclass' own)."""
    from layerscan.geometry.scene.scene import SceneOptions

    return options_from_args(SceneOptions, args, **defaults)


def render_options(args: argparse.Namespace, **defaults):
    """The RenderOptions of the movie flags."""
    from layerscan.geometry.scene.render import RenderOptions

    return options_from_args(RenderOptions, args, **defaults)


def render_and_report(
    source, output: str, scene, options, overwrite: bool = False, drawer=None
) -> int:
    """Render a Scan or DiffScan to `output` (`overwrite`: --overwrite); print one line.
    `drawer`: a RenderProcess that draws it (else this process does)."""
    from layerscan.geometry.diff_scan import DiffScan
    from layerscan.geometry.scene.render import render_movie

    last = (source.a if isinstance(source, DiffScan) else source).n_layers
    if options.still_layer is not None and options.still_layer > last:
        note(f"--layer {options.still_layer:g} is past the last layer; showing layer {last}")
        options = replace(options, still_layer=float(last))
    render = render_movie if drawer is None else drawer.render_movie
    stats = render(source, output, scene, options, overwrite=overwrite)
    length = (
        f", {stats.n_frames / options.fps:.1f} s at {options.fps} fps" if stats.n_frames > 1 else ""
    )
    frames = f"{stats.n_frames} frames" if stats.n_frames > 1 else "a still"
    print(
        f"wrote {stats.path} ({frames}, {stats.width}x{stats.height}{length}) "
        f"in {stats.seconds:.1f} s"
    )
    return 0
