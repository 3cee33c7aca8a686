"""The `layerscan` command: subcommands, one-line errors, exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from layerscan import __version__
from layerscan.errors import LayerscanError

COMMAND_MODULES = (
    "info",
    "capture",
    "scan",
    "render",
    "diff",
    "view",
    "export",
    "train",
    "eval",
)
"""Modules in layerscan.commands; each has `register(subparsers)` that sets `run=fn(args)->int`."""

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit code 2."""

    def error(self, message: str) -> None:  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"layerscan: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layerscan", description=(
        "See what a transformer does to a prompt: every layer's hidden states as a 3D particle "
        "cloud moving through layer-time."))
    parser.add_argument("--version", action="version", version=f"layerscan {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback when something fails")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for name in COMMAND_MODULES:
        importlib.import_module(f"layerscan.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; user errors print one line and return 2 (traceback with --debug)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (exit 2) and --help (exit 0) return their code
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("layerscan: interrupted; no partial output was kept", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure becomes one readable line
        if args.debug:
            traceback.print_exc()
        message = str(exc) if isinstance(exc, LayerscanError) else (
            f"{type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        print(f"layerscan: error: {message}".splitlines()[0], file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
