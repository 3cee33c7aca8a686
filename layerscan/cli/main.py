"""The `layerscan` command: subcommands, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import threading
import traceback
import warnings
from collections.abc import Callable

from layerscan import __version__
from layerscan.core.errors import Caution, LayerscanError, Notice, Terminated
from layerscan.core.outputs import DISK_FULL
from layerscan.core.signals import interruptible, raise_if_pending
from layerscan.core.startup import paused_collection

COMMAND_MODULES = (
    "info",
    "capture",
    "scan",
    "render",
    "diff",
    "heatmap",
    "attention",
    "components",
    "view",
    "export",
    "train",
    "eval",
)
"""Modules in layerscan.cli.commands; each has `register(subparsers)` setting `run(args) -> int`."""

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""Ctrl-C (128 + SIGINT)."""
EXIT_TERMINATED = 143
"""SIGTERM (128 + SIGTERM), after the same cleanup as Ctrl-C."""


NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$|^-(inf|infinity|nan)$", re.I)
"""Arguments argparse reads as values, not flags (its own pattern has no exponents)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2, and adds the option
    groups a command registers with `add_later` (its `@lazy_group`s) only when that command is
    parsed or its help shown (their option classes live beside torch, transformers and PyVista,
    which `--help` and other commands should not import)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER  # so `--orbit -1e300` is a value
        self._lazy_groups: list[Callable[[argparse.ArgumentParser], None]] | None = []

    def add_later(self, add: Callable[[argparse.ArgumentParser], None]) -> None:
        """Call `add(self)` before this parser is first used (at once once it has been)."""
        if self._lazy_groups is None:
            add(self)
        else:
            self._lazy_groups.append(add)

    def _complete(self) -> None:
        groups, self._lazy_groups = self._lazy_groups, None  # in order, nested ones in place
        with paused_collection():  # where a command's heavy imports happen
            for add in groups or ():
                add(self)

    def parse_known_args(self, args=None, namespace=None):
        self._complete()
        return super().parse_known_args(args, namespace)

    def _parse_known_args(self, *args, **kwargs):  # the path some Pythons' subparsers take
        self._complete()
        return super()._parse_known_args(*args, **kwargs)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"layerscan: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="layerscan",
        description=(
            "See what a transformer does to a prompt: every layer's hidden states as a 3D particle "
            "cloud moving through layer-time."
        ),
    )
    parser.add_argument("--version", action="version", version=f"layerscan {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"layerscan.cli.commands.{name}").register(subparsers)
    for command in subparsers.choices.values():  # also where users type it: after the command
        command.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show the full traceback when something fails",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and return 2 (traceback with --debug).

    Ctrl-C returns 130 and SIGTERM 143, both after removing partial outputs.
    """
    threading.excepthook = _thread_error
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (exit 2) and --help (exit 0) return their code
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with interruptible(), warnings.catch_warnings():
            shown = warnings.showwarning
            warnings.showwarning = lambda message, category, *rest: (
                print(
                    f"layerscan: {'warning' if issubclass(category, Caution) else 'note'}: "
                    f"{message}".splitlines()[0],
                    file=sys.stderr,
                )
                if issubclass(category, Notice)
                else shown(message, category, *rest)
            )
            try:
                return int(args.run(args) or 0)
            except SystemExit:  # a library (Lightning) that exits on Ctrl-C or SIGTERM
                raise_if_pending()
                raise
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(
            f"layerscan: {'terminated' if terminated else 'interrupted'}; no partial output "
            f"was kept",
            file=sys.stderr,
        )
        return EXIT_TERMINATED if terminated else EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        if args.debug:
            traceback.print_exc()
        message = (
            str(exc)
            if isinstance(exc, LayerscanError)
            else disk_full_line(exc)
            or f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)"
        )
        print(f"layerscan: error: {message}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE


def _thread_error(args: threading.ExceptHookArgs) -> None:
    """A library's writer thread (TensorBoard's) that found the disk full: the main thread says
    it in one line, so no traceback here; anything else as Python shows it."""
    if disk_full_line(args.exc_value) is None:
        threading.__excepthook__(args)


def disk_full_line(exc: BaseException | None) -> str | None:
    """The one line for a write that found no room (a library's own file, e.g. a log), or None."""
    if not isinstance(exc, OSError) or exc.errno not in DISK_FULL:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return (
        f"{where}the disk is full ({exc.strerror}); free some space or write elsewhere and rerun "
        f"(a `train` run continues with --resume)"
    )


if __name__ == "__main__":
    sys.exit(main())
