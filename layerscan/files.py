"""Atomic output files and the safetensors + JSON container every layerscan file uses."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from layerscan import __version__
from layerscan.errors import LayerscanError

FORMAT_KEY = "layerscan"


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; rename it onto `final` only if the block succeeds.

    Works for files and folders alike. An exception (or a kill) leaves `final` untouched and
    removes the partial output, so a complete-looking file is always a complete file.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = final.suffix if suffix is None else suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".partial{suffix}",
                                    dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller creates it, as a file or a folder
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_tensor_file(path: str | os.PathLike, kind: str, format_version: int,
                      arrays: dict[str, np.ndarray], meta: dict) -> Path:
    """Write arrays and JSON-able metadata to one safetensors file, atomically."""
    header = {"kind": kind, "format_version": format_version, "layerscan_version": __version__,
              "meta": meta}
    arrays = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={FORMAT_KEY: json.dumps(header)})
    return Path(path)


def read_tensor_file(path: str | os.PathLike, kind: str,
                     format_version: int) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by `write_tensor_file`, refusing other kinds and versions."""
    path = Path(path)
    if not path.is_file():
        raise LayerscanError(f"{path}: no such file")
    try:
        with open(path, "rb") as fh:
            header_len = int.from_bytes(fh.read(8), "little")
            if not 2 <= header_len <= 100_000_000:
                raise ValueError("bad header length")
            header_json = json.loads(fh.read(header_len))
        header = json.loads(header_json.get("__metadata__", {})[FORMAT_KEY])
        arrays = load_file(str(path))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise LayerscanError(f"{path}: not a layerscan {kind} file or corrupt ({exc})") from exc
    if header.get("kind") != kind:
        raise LayerscanError(f"{path}: is a layerscan {header.get('kind')!r} file, "
                             f"expected a {kind!r} file")
    if header.get("format_version") != format_version:
        raise LayerscanError(
            f"{path}: {kind} format version {header.get('format_version')} (written by layerscan "
            f"{header.get('layerscan_version')}); this layerscan reads version {format_version}. "
            f"Recreate the file with this version.")
    return arrays, header["meta"]
