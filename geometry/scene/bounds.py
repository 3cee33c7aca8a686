"""Upper bounds of the drawing and movie options, so no flag asks for an endless movie or
an unbounded allocation (`--duration 1e9`, `--hold 1e9`, `--point-size 1e300`)."""

from __future__ import annotations

from layerscan.core.limits import LIMITS, check_number, check_size

MAX_POINT_SIZE = 200.0
"""Largest particle size in pixels (the frame is at most 7680 pixels wide)."""
MAX_ORBIT = 36_000.0
"""Largest camera orbit in degrees (a hundred turns)."""


def check_movie_bounds(
    duration: float | None,
    hold: float,
    orbit: float,
    frames_per_layer: int | None,
    seconds_per_layer: float = 0.2,
) -> None:
    """RenderOptions' sizes: seconds up to LIMITS["seconds"], a bounded orbit and frame count."""
    seconds = LIMITS["seconds"]
    if duration is not None:
        check_number(duration, "--duration", 0, seconds, low_open=True)
    check_number(hold, "--hold", 0, seconds)
    check_number(orbit, "--orbit", -MAX_ORBIT, MAX_ORBIT)
    check_number(seconds_per_layer, "--seconds-per-layer", 0, seconds, low_open=True)
    if frames_per_layer is not None:
        check_size(frames_per_layer, "frames_per_layer", "--frames-per-layer")


def check_scene_bounds(point_size: float | None, n_links: int) -> None:
    """SceneOptions' sizes: a finite point size and a bounded number of lines per particle."""
    if point_size is not None:
        check_number(point_size, "--point-size", 0, MAX_POINT_SIZE, low_open=True)
    check_size(n_links, "k_neighbors", "--n-links", low=0)
