"""Command-line flags from option dataclasses: one field gives the flag, default and help."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import math
import textwrap
import types
import typing
from typing import Any, Literal, TypeVar

T = TypeVar("T")

FLAG = "flag"
"""Field metadata key: the flag's name without dashes, when it is not the field's name."""
CLI = "cli"
"""Field metadata key: False keeps a field off the command line (the pipeline sets it)."""
METAVAR = "metavar"
"""Field metadata key: the placeholder shown in --help."""


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """{field: docstring} from the string literal under each field of a dataclass."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        body = tree.body[0].body  # type: ignore[attr-defined]
        for stmt, after in zip(body, body[1:], strict=False):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
    return docs


def _flag(field: dataclasses.Field, prefix: str) -> str:
    return field.metadata.get(FLAG) or (prefix + field.name).replace("_", "-")


def _dest(cls: type, path: str) -> str:
    return f"{cls.__name__}.{path}"


def _unwrap_optional(hint: Any) -> Any:
    """X | None → X."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _literal_choices(hint: Any) -> list[str] | None:
    if typing.get_origin(hint) is Literal:
        return [str(v) for v in typing.get_args(hint)]
    return None


def _size(text: str) -> tuple[int, ...]:
    """'1280x720' → (1280, 720)."""
    try:
        return tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size; write it as WIDTHxHEIGHT, e.g. 1280x720"
        ) from None


def _float(text: str) -> float:
    """A finite number ("inf" and "nan" are refused here, so no option ever sees them)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


_float.__name__ = "float"  # argparse names the type in its messages


def _int(text: str) -> int:
    """A whole number that fits 64 bits (`2**70` or 1e30 as digits is refused here)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if abs(value) >= 2**63:
        raise argparse.ArgumentTypeError(f"{text!r} is too large (at most 2**63 - 1)")
    return value


def _help(doc: str, default: Any) -> str:
    text = doc.replace("%", "%%")
    if default is None or default is False or default is dataclasses.MISSING:
        return text
    shown = "x".join(map(str, default)) if isinstance(default, tuple) else default
    return f"{text} (default: {shown})"


def _cli_fields(
    cls: type, path: str, only: tuple[str, ...] | None = None
) -> typing.Iterator[tuple[dataclasses.Field, Any, str]]:
    """(field, type hint without Optional, dotted path) of each field of `cls` with a flag
    (of the fields named in `only`, when given)."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.metadata.get(CLI, True) and (only is None or field.name in only):
            yield field, _unwrap_optional(hints[field.name]), f"{path}{field.name}"


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str | None = None,
    prefix: str = "",
    _path: str = "",
    _root: type | None = None,
    description: str | None = None,
    show_defaults: bool = True,
    only: tuple[str, ...] | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one flag per field of the dataclass `cls` to `parser`.

    The flag is `--field-name` (or the field's metadata "flag"), the default is the field's
    (argparse leaves absent flags out, so the dataclass default is the only one), the help is
    the field's docstring, Literal types become choices and bools a `--x/--no-x` pair. A
    field holding another dataclass adds that dataclass' fields, named with its field name as
    prefix. Build the object back with `options_from_args`. `show_defaults=False` leaves the
    dataclass defaults out of the help, for commands whose defaults come from elsewhere (then
    say where in `description`, the group's text, and read the flags with `given_options`).
    `only` names the top-level fields that get flags (default: all).
    `defaults` (field name → value) are the command's own defaults shown in the help instead
    of the dataclass' (pass the same to `options_from_args`).
    """
    root = _root or cls
    group = parser.add_argument_group(title, description) if title else parser
    docs = field_docs(cls)
    for field, hint, path in _cli_fields(cls, _path, only):
        if dataclasses.is_dataclass(hint):
            add_options(
                group,
                hint,
                None,
                prefix=f"{prefix}{field.name}-",
                _path=f"{path}.",
                _root=root,
                show_defaults=show_defaults,
            )
            continue
        default = field.default
        if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        default = (defaults or {}).get(field.name, default)
        kwargs: dict[str, Any] = {
            "dest": _dest(root, path),
            "default": argparse.SUPPRESS,
            "help": _help(docs.get(field.name, ""), default if show_defaults else None),
        }
        if METAVAR in field.metadata:
            kwargs["metavar"] = field.metadata[METAVAR]
        flag = f"--{_flag(field, prefix)}"
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
            continue
        choices = _literal_choices(hint)
        if choices is not None:
            kwargs["choices"] = choices
        elif typing.get_origin(hint) is tuple:
            kwargs.update(type=_size, metavar=kwargs.get("metavar", "WxH"))
        elif hint in (int, float, str):
            kind = {int: _int, float: _float}.get(hint, hint)
            kwargs.update(type=kind, metavar=kwargs.get("metavar", flag[2:].upper()))
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no flag for type {hint!r}")
        group.add_argument(flag, **kwargs)


def command_defaults(cls: type, **values: Any) -> dict[str, Any]:
    """A command's own defaults of `cls` fields (name → value), for `parser.set_defaults`:
    the flags keep their place in the namespace, so a plain `set_defaults(field=...)` would
    never reach `options_from_args`."""
    return {_dest(cls, name): value for name, value in values.items()}


def options_from_args(
    cls: type[T],
    args: argparse.Namespace,
    _path: str = "",
    _root: type | None = None,
    **defaults: Any,
) -> T:
    """The `cls` object that the flags of `add_options(parser, cls)` describe.

    Flags not given keep the dataclass defaults, or the command's own `defaults` (e.g. a
    wider window for side-by-side diffs); `__post_init__` validates the values.
    """
    root = _root or cls
    values = vars(args)
    kwargs: dict[str, Any] = dict(defaults)
    for field, hint, path in _cli_fields(cls, _path):
        if dataclasses.is_dataclass(hint):
            kwargs[field.name] = options_from_args(hint, args, f"{path}.", root)
        elif _dest(root, path) in values:
            kwargs[field.name] = values[_dest(root, path)]
    return cls(**kwargs)


def given_options(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """{field: value} of the top-level flags of `add_options(parser, cls)` the user typed.

    For commands that map the flags onto another config (e.g. `train`'s data section) and
    keep that config's values for flags not given.
    """
    values = vars(args)
    return {
        f.name: values[_dest(cls, f.name)]
        for f in dataclasses.fields(cls)
        if _dest(cls, f.name) in values
    }
