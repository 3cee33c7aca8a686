"""Building blocks of the one validation function each file kind runs at load: key sets, types,
dtypes, shapes, index ranges and finite values, each failure a one-line LayerscanError."""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from layerscan.core.errors import LayerscanError

FLOATS = (np.float32, np.float64)
INTS = (np.int32, np.int64)


class FileCheck:
    """Checks on the arrays and metadata read from one file; each failure names the file."""

    def __init__(self, path: str | os.PathLike, kind: str) -> None:
        self.path = path
        self.kind = kind

    def fail(self, problem: str) -> LayerscanError:
        """The error to raise: what is wrong, and what to do."""
        return LayerscanError(
            f"{self.path}: corrupt or edited {self.kind} file: {problem}; recreate it with "
            f"layerscan"
        )

    def keys(self, found: object, required: Iterable[str], optional: Iterable[str], what: str):
        """`found` must be a dict holding every required key and no unknown one."""
        required, optional = set(required), set(optional)
        if not isinstance(found, dict):
            raise self.fail(f"{what} is a {type(found).__name__}, not an object")
        missing = sorted(required - set(found))
        extra = sorted(set(found) - required - optional)
        if missing:
            raise self.fail(f"{what} lacks {', '.join(missing)}")
        if extra:
            raise self.fail(f"{what} has unknown keys {', '.join(map(repr, extra))}")
        return found

    def value(self, found: object, types: type | tuple, what: str):
        """`found` must be an instance of `types` (a bool is never an int)."""
        if not isinstance(found, types) or (isinstance(found, bool) and bool not in _tuple(types)):
            raise self.fail(f"{what} is {_short(found)}, not {_names(types)}")
        return found

    def strings(self, found: object, what: str, length: int | None = None) -> list[str]:
        """A list of strings (of `length` items, when given)."""
        self.value(found, list, what)
        if not all(isinstance(item, str) for item in found):
            raise self.fail(f"{what} holds something that is not text")
        if length is not None and len(found) != length:
            raise self.fail(f"{what} has {len(found)} items, expected {length}")
        return found

    def integer(self, found: object, what: str, low: int, high: int) -> int:
        """A whole number in [low, high]."""
        self.value(found, int, what)
        if not low <= found <= high:
            raise self.fail(f"{what} is {found}, outside {low}..{high}")
        return found

    def array(
        self,
        arrays: dict[str, np.ndarray],
        name: str,
        dtypes: tuple,
        shape: tuple[int | None, ...],
        finite: bool = True,
        low: int | None = None,
        high: int | None = None,
        required: bool = True,
    ) -> np.ndarray | None:
        """Array `name`: one of `dtypes`, of `shape` (None: any length), finite (floats), and
        in [low, high) (integers, e.g. indices)."""
        if name not in arrays:
            if required:
                raise self.fail(f"array {name!r} is missing")
            return None
        value = arrays[name]
        if value.dtype not in dtypes:
            wanted = " or ".join(str(np.dtype(d)) for d in dtypes)
            raise self.fail(f"array {name!r} is {value.dtype}, expected {wanted}")
        if len(value.shape) != len(shape) or any(
            want is not None and got != want for got, want in zip(value.shape, shape, strict=True)
        ):
            wanted = "x".join("?" if n is None else str(n) for n in shape)
            raise self.fail(f"array {name!r} has shape {value.shape}, expected ({wanted})")
        if finite and value.dtype.kind == "f" and not np.isfinite(value).all():
            raise self.fail(f"array {name!r} holds non-finite values")
        if value.size and low is not None and int(value.min()) < low:
            raise self.fail(f"array {name!r} holds {int(value.min())}, below {low}")
        if value.size and high is not None and int(value.max()) >= high:
            raise self.fail(f"array {name!r} holds {int(value.max())}, expected below {high}")
        return value

    def only_arrays(self, arrays: dict[str, np.ndarray], known: Iterable[str]) -> None:
        """No array beyond `known`."""
        extra = sorted(set(arrays) - set(known))
        if extra:
            raise self.fail(f"unknown array {extra[0]!r}")


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _names(types) -> str:
    return " or ".join("a number" if t is float else t.__name__ for t in _tuple(types))


def _short(found: object) -> str:
    text = repr(found)
    return text if len(text) <= 40 else f"a {type(found).__name__}"
