"""The container of every layerscan file: safetensors arrays, a JSON header in its metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file, save_file

from layerscan import __version__
from layerscan.core.errors import LayerscanError
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
        save_file(arrays, str(tmp), metadata={FORMAT_KEY: json.dumps(header)})
    return Path(path)


def read_tensor_file(
    path: str | os.PathLike, kind: str, format_version: int
) -> tuple[dict[str, np.ndarray], dict]:
    """Read a file written by `write_tensor_file`, refusing other kinds and versions."""
    path = Path(path)
    if not path.is_file():
        raise LayerscanError(f"{path}: no such file")
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
    return arrays, header["meta"]
