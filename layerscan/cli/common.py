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


def deferred(add: Callable[[argparse.ArgumentParser], None]) -> Callable:
    """`add(parser)` runs when the command is used, not when the CLI starts (see cli._Parser);
    on a plain ArgumentParser it runs at once. Lets `--help` and light commands skip importing
    torch, transformers, scikit-learn and PyVista, where the option classes live."""

    @functools.wraps(add)
    def register(parser: argparse.ArgumentParser, *args, **kwargs) -> None:
        later = getattr(parser, "defer", None)
        if later is None:
            add(parser, *args, **kwargs)
        else:
            later(lambda p: add(p, *args, **kwargs))

    return register


@deferred
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


@deferred
def add_second_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The SecondModelOptions flags: --model-b, --adapter (model-vs-model comparisons)."""
    from layerscan.autoencoder.capture.model_pair import SecondModelOptions

    add_options(parser, SecondModelOptions, "second model (B)")


@deferred
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


@deferred
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


@deferred
def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """The SceneOptions flags: what to draw and how."""
    from layerscan.geometry.scene.scene import SceneOptions

    add_options(parser, SceneOptions, "drawing")


@deferred
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


def load_model_from_args(args: argparse.Namespace):
    """The LoadedModel that the ModelOptions flags name."""
    from layerscan.autoencoder.capture.loading import ModelOptions

    return _load_model(options_from_args(ModelOptions, args))


def _load_model(options):
    """The LoadedModel that ModelOptions name (loaded without garbage collection)."""
    from layerscan.autoencoder.capture.loading import load_model

    with paused_collection():
        return load_model(
            options.model,
            device=options.device,
            dtype=options.dtype,
            trust_remote_code=options.trust_remote_code,
        )


def second_model_loader(model, second, shape: tuple[int, int] | None = None):
    """Check --model-b/--adapter against --model from configs alone, then return a function
    that loads B, so that every check runs before any weights load.

    Args:
        model: A's ModelOptions.
        second: the SecondModelOptions.
        shape: (d_model, n_layers) that the autoencoder encodes, if one is used.
    """
    from layerscan.autoencoder.capture.model_pair import (
        check_model_pair,
        load_second_model,
        plan_second_model,
    )

    plan = plan_second_model(model, second)
    check_model_pair(model, plan, shape)
    return lambda: load_second_model(model, plan)


def is_scan_file(text: str) -> bool:
    """Whether a command's source names a .scan file rather than being a prompt."""
    return text.endswith(".scan") or names_path(text, Path.is_file)


def names_path(text: str, test=Path.exists) -> bool:
    """Whether `text` (a prompt or a path) names an existing path (passing `test`)."""
    try:
        return len(text) < 4096 and test(Path(text).expanduser())
    except OSError:  # a long prompt is no file name (ENAMETOOLONG)
        return False


class ScanRequest:
    """Every option of a prompt → scan run, parsed (and so validated) before any work."""

    def __init__(self, args: argparse.Namespace) -> None:
        from layerscan.autoencoder.capture.capture_file import CaptureOptions
        from layerscan.autoencoder.capture.loading import ModelOptions
        from layerscan.autoencoder.capture.model_pair import SecondModelOptions
        from layerscan.autoencoder.config import FitOptions
        from layerscan.geometry.scan_options import ScanOptions

        self.model = options_from_args(ModelOptions, args)
        self.second = options_from_args(SecondModelOptions, args)
        self.capture = options_from_args(CaptureOptions, args)
        self.options = options_from_args(ScanOptions, args)
        self.fit = options_from_args(FitOptions, args)
        self.autoencoder: str | None = args.autoencoder
        self._loaded: tuple | None = None
        self.save_scan: str | None = vars(args).get("save_scan")
        if self.save_scan is not None and not self.save_scan.endswith(".scan"):
            raise LayerscanError(f"{self.save_scan}: scan files end in .scan")

    def _load(self, second: bool = False):
        """The model, its autoencoder on the model's device and, with `second`, a function that
        loads --model-b (see `second_model_loader`); model and autoencoder load once per request.

        A given or packaged autoencoder loads first (on the CPU), so that a missing, corrupt or
        mismatched folder fails in one line before minutes of model loading; B's configs are
        checked before any weights load. A fitted one needs the model's states, so it comes
        from the loaded model (cached after the first fit). Loading runs without garbage
        collection (see `paused_collection`); a fit is work, with it.
        """
        with paused_collection():
            from layerscan.autoencoder.artifact import load_autoencoder
            from layerscan.autoencoder.quick_fit import fits, fitted_autoencoder

            fit = fits(self.autoencoder, self.model.model, self.capture.normalization)
            autoencoder = (
                self._loaded[1]
                if self._loaded
                else (None if fit else load_autoencoder(self.autoencoder))
            )
        load_b = None
        if second:
            shape = (
                None
                if autoencoder is None
                else (autoencoder.config.d_model, autoencoder.config.n_layers)
            )
            load_b = self.load_second(shape)  # a fit's shape is A's, which this checks
        if self._loaded is None:
            loaded = _load_model(self.model)  # collection paused there too
            if autoencoder is None:
                autoencoder = fitted_autoencoder(loaded, self.capture.normalization, self.fit)
            autoencoder.model.to(loaded.device)
            self._loaded = (loaded, autoencoder)
        return (*self._loaded, load_b)

    def _check_prompts(self, loaded, autoencoder, prompts: list[str]) -> None:
        """Every length limit, right after tokenizing and before any forward pass."""
        from layerscan.autoencoder.capture.hidden_states import check_prompt

        limit = autoencoder.config.max_tokens
        for prompt in prompts:
            check_prompt(
                loaded,
                prompt,
                self.capture,
                limit,
                "what the autoencoder holds, one particle a token",
            )

    def scan(self, prompt: str, timings: dict | None = None):
        """The pipeline's Scan of `prompt`.

        Loading and capture run with the scan's --threads too: on a busy machine, torch's
        default of one thread per core made a short prompt's forward pass 40x slower.
        """
        with paused_collection():  # start-up too: torch and the pipeline
            from layerscan.geometry.pipeline import scan_prompt, torch_threads

        with torch_threads(self.options.threads):
            loaded, autoencoder, _ = self._load()
            self._check_prompts(loaded, autoencoder, [prompt])
            return scan_prompt(
                prompt,
                self.options,
                model=loaded,
                capture=self.capture,
                autoencoder=autoencoder,
                timings=timings,
            )

    def diff(self, prompt_a: str, prompt_b: str):
        """The pipeline's DiffScan of two prompts (B through --model-b when given; threads as
        in `scan`)."""
        with paused_collection():
            from layerscan.geometry.pipeline import diff_prompts, torch_threads

        if self.options.token_time:  # the pipeline says so too, but only after loading
            raise LayerscanError("--token-time does not apply to diffs; drop it")
        with torch_threads(self.options.threads):
            loaded, autoencoder, load_b = self._load(second=self.second.wanted)
            self._check_prompts(loaded, autoencoder, [prompt_a, prompt_b])
            return diff_prompts(
                prompt_a,
                prompt_b,
                self.options,
                model=loaded,
                capture=self.capture,
                autoencoder=autoencoder,
                model_b=None if load_b is None else load_b(),
            )

    def load_second(self, shape: tuple[int, int] | None = None):
        """See `second_model_loader`."""
        return second_model_loader(self.model, self.second, shape)


def load_or_scan(request: ScanRequest, source: str | None):
    """A Scan from a .scan file, or from a prompt (default prompt: None) through the pipeline."""
    from layerscan.geometry.scan_file import Scan, load_any

    if source is not None and is_scan_file(source):
        scan = load_any(source)
        if not isinstance(scan, Scan):
            raise LayerscanError(f"{source}: holds a diff; use `layerscan diff {source}`")
        return scan
    start = time.perf_counter()
    scan = request.scan(source or DEFAULT_PROMPT)
    note(
        f"scanned {len(scan.tokens)} tokens through {scan.n_layers} layers "
        f"in {time.perf_counter() - start:.1f} s"
    )
    if request.save_scan:
        scan.save(request.save_scan)
        note(f"saved {request.save_scan}")
    return scan


def load_or_diff(request: ScanRequest, sources: list[str]):
    """A DiffScan from one diff .scan file, or from two prompts through the pipeline."""
    from layerscan.geometry.scan_file import DiffScan, load_any

    models = request.second.wanted
    if models and not sources:
        sources = [DEFAULT_PROMPT]
    if len(sources) == 1 and models and not is_scan_file(sources[0]):
        sources = [sources[0], sources[0]]  # one prompt through both models
    if len(sources) == 1:
        if not is_scan_file(sources[0]):
            raise LayerscanError(
                "a diff needs two prompts (or one diff .scan file), or one prompt with --model-b"
            )
        diff = load_any(sources[0])
        if not isinstance(diff, DiffScan):
            raise LayerscanError(
                f"{sources[0]}: holds a single scan, not a diff; "
                f"use `layerscan render` or `layerscan view`"
            )
        return diff
    if len(sources) != 2:
        raise LayerscanError(f"a diff needs exactly two prompts, got {len(sources)}")
    from layerscan.geometry.scan_file import diverges

    start = time.perf_counter()
    diff = request.diff(sources[0], sources[1])
    what = "models" if models else "prompts"
    peak = (
        f"divergence peaks at {diff.a.layer_names[diff.peak_layer]}"
        if diverges(diff.divergence)
        else f"the {what} do not diverge"
    )
    note(
        f"diffed two {what} through {diff.a.n_layers} layers in "
        f"{time.perf_counter() - start:.1f} s; {peak}"
    )
    if request.save_scan:
        diff.save(request.save_scan)
        note(f"saved {request.save_scan}")
    return diff


def scene_options(args: argparse.Namespace, **defaults):
    """The SceneOptions of the drawing flags (`defaults` replace the dataclass' own)."""
    from layerscan.geometry.scene.scene import SceneOptions

    return options_from_args(SceneOptions, args, **defaults)


def render_options(args: argparse.Namespace, **defaults):
    """The RenderOptions of the movie flags."""
    from layerscan.geometry.scene.render import RenderOptions

    return options_from_args(RenderOptions, args, **defaults)


def render_and_report(source, output: str, scene, options, overwrite: bool = False) -> int:
    """Render a Scan or DiffScan to `output` (`overwrite`: --overwrite); print one line."""
    from layerscan.geometry.scan_file import DiffScan
    from layerscan.geometry.scene.render import render_movie

    last = (source.a if isinstance(source, DiffScan) else source).n_layers
    if options.still_layer is not None and options.still_layer > last:
        note(f"--layer {options.still_layer:g} is past the last layer; showing layer {last}")
        options = replace(options, still_layer=float(last))
    stats = render_movie(source, output, scene, options, overwrite=overwrite)
    length = (
        f", {stats.n_frames / options.fps:.1f} s at {options.fps} fps" if stats.n_frames > 1 else ""
    )
    frames = f"{stats.n_frames} frames" if stats.n_frames > 1 else "a still"
    print(
        f"wrote {stats.path} ({frames}, {stats.width}x{stats.height}{length}) "
        f"in {stats.seconds:.1f} s"
    )
    return 0
