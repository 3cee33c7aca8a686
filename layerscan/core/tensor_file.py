"""The container of every layerscan file: safetensors arrays, a JSON header in its metadata."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from layerscan import __version__
from layerscan.core.errors import LayerscanError
from layerscan.core.limits import LIMITS, memory_bytes
from layerscan.core.outputs import atomic_path

FORMAT_KEY = "layerscan"
"""The safetensors metadata key that holds layerscan's JSON header."""


def write_tensor_file(
    path: str | os.PathLike,
    kind: str,
    format_version: int,
    arrays: dict[str, np.ndarray],
    meta: dict,
) -> Path:
    """Write arrays and JSON-able metadata to one safetensors file, atomically."""
    header = {
        "kind": kind,
        "format_version": format_version,
        "layerscan_version": __version__,
        "meta": meta,
    }
    arrays = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(arrays, str(tmp), metadata={FORMAT_KEY: json.dumps(header)})
        except SafetensorError as exc:  # its I/O errors, e.g. a full disk, as OSError
            if "os error 28" in str(exc) or "No space left" in str(exc):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) from exc
            raise
    return Path(path)


def check_container(path: Path, kind: str) -> None:
    """Refuse, before reading it, a file that is missing, not regular, larger than a quarter of
    this machine's memory (sparse files declaring huge arrays), or whose header is out of bounds."""
    if not path.exists():
        raise LayerscanError(f"{path}: no such file")
    if not path.is_file():
        raise LayerscanError(f"{path}: is not a regular file; give a layerscan {kind} file")
    size = path.stat().st_size
    limit = memory_bytes() // 4  # loading, checking and drawing copy its arrays
    if size > limit:
        raise LayerscanError(
            f"{path}: is {size / 1e9:.1f} GB; layerscan reads {kind} files up to "
            f"{limit / 1e9:.1f} GB (a quarter of this machine's memory)"
        )
    try:
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise LayerscanError(f"{path}: cannot read it ({exc.strerror})") from None
    declared = int.from_bytes(head, "little") if len(head) == 8 else -1
    if not 0 < declared <= min(LIMITS["header_bytes"], size - 8):
        raise LayerscanError(
            f"{path}: not a layerscan {kind} file or corrupt (its header declares {declared} "
            f"bytes; the file has {size}, and headers are at most {LIMITS['header_bytes']})"
        )


def read_tensor_file(
    path: str | os.PathLike, kind: str, format_version: int
) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by `write_tensor_file`, refusing other kinds and versions."""
    path = Path(path)
    check_container(path, kind)
    try:
        with safe_open(str(path), framework="numpy") as handle:  # checks the header's offsets
            header = json.loads((handle.metadata() or {})[FORMAT_KEY])
        if not isinstance(header, dict):
            raise TypeError("the layerscan header is not an object")
        arrays = load_file(str(path))
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise LayerscanError(f"{path}: not a layerscan {kind} file or corrupt ({exc})") from exc
    if header.get("kind") != kind:
        raise LayerscanError(
            f"{path}: is a layerscan {header.get('kind')!r} file, expected a {kind!r} file"
        )
    if header.get("format_version") != format_version:
        raise LayerscanError(
            f"{path}: {kind} format version {header.get('format_version')} (written by layerscan "
            f"{header.get('layerscan_version')}); this layerscan reads version {format_version}. "
            f"Recreate the file with this version."
        )
    if not isinstance(header.get("meta"), dict):
        raise LayerscanError(f"{path}: its header has no 'meta' object; the {kind} file is corrupt")
    return arrays, header["meta"]
