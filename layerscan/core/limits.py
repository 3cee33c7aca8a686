"""Upper bounds on sizes that files, configs and flags may ask for, and one check that names them.

A small input must never ask for gigabytes: every size read from a file or a flag is checked
against this table before anything is allocated, and the message states the bound.
"""

from __future__ import annotations

import math
import os

from layerscan.core.errors import LayerscanError


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (16 GiB where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 << 30


LIMITS = {
    "n_particles": 65_536,
    "d_particle": 4_096,
    "d_model": 65_536,
    "d_hidden": 262_144,
    "n_layers": 1_024,
    "n_heads": 1_024,
    "vocab_size": 4_194_304,
    "context": 1_048_576,
    "n_tokens": 65_536,
    "top_k": 1_000,
    "generate": 65_536,
    "k_neighbors": 1_000,
    "surface_grid": 256,
    "threads": 256,
    "epochs": 10_000,
    "seed": 2**32 - 1,
    "frames_per_layer": 1_000,
    "neighbors": 1_000,
    "seconds": 3_600.0,
    "prompts_file_bytes": 64 << 20,
    "header_bytes": 64 << 20,
}
"""Largest accepted value of each size: several times what any published model or useful
picture needs, far below what would exhaust memory."""


def check_size(
    value: object, name: str, what: str, low: float = 1, limit: float | None = None
) -> int:
    """`value` as an int in [low, LIMITS[name] or limit], or a one-line LayerscanError.

    Args:
        value: the value read (from a file, a config, a flag); bools and strings are refused.
        name: its key in LIMITS (also the fallback of `limit`).
        what: how the message names it, e.g. "ae/config.json: n_particles".
        low: smallest accepted value.
        limit: upper bound (default LIMITS[name]).
    """
    limit = LIMITS[name] if limit is None else limit
    whole = isinstance(value, int) and not isinstance(value, bool)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value, whole = int(value), True
    if not whole or not low <= value <= limit:
        raise LayerscanError(
            f"{what} is {value!r}; expected a whole number from {low:g} to {limit:g}"
        )
    return value


def check_number(
    value: object, what: str, low: float, high: float, low_open: bool = False
) -> float:
    """`value` as a finite float in [low, high] (`low_open`: low itself excluded)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise LayerscanError(
            f"{what} is {value!r}; expected a finite number in {bracket}{low:g}, {high:g}]"
        )
    return float(value)
