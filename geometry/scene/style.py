"""Colours, sizes, camera angles and the render theme of the scene (no plotter here)."""

from __future__ import annotations

import numpy as np
import pyvista as pv

COLORMAPS = {"slot": "turbo", "density": "magma", "displacement": "plasma"}
"""Colour map per colour mode."""

SURFACE_COLOR = np.array([0x5F, 0xB3, 0xD9], np.float32) / 255
VIEW_AZIMUTH, VIEW_ELEVATION = 35.0, 22.0
"""Degrees: where the camera starts (and where baked shading is lit for)."""
LIGHT_AZIMUTH, LIGHT_ELEVATION = 75.0, 50.0
"""Degrees: the baked shading's light, from the upper left of the start view."""

REFERENCE_HEIGHT = 720
"""Window height (pixels) at which the sizes below hold; they scale with the height."""
FONT_SIZE = 15
"""Overlay font size at the reference height (never below MIN_FONT_SIZE)."""
MIN_FONT_SIZE = 10
POINT_SIZE = 6.5
"""Particle size in pixels at the reference height (never below MIN_POINT_SIZE)."""
MIN_POINT_SIZE = 2.0
SURFACE_OPACITY = 0.2
"""Surface opacity of one scan."""
DIFF_SURFACE_OPACITY = 0.12
"""Surface opacity in a diff: two panels of overlapping blobs."""
CAMERA_DISTANCE = 2.6
"""Camera distance in radii of the cloud's bounding sphere."""
MIN_PANEL_ASPECT = 1.3
"""Panels narrower than this (width / height) move the camera back to keep the cloud in view."""
LINE_COLOR, LINE_OPACITY = "#8fa3bf", 0.35
"""Neighbour lines: faint, so the particles stay in front."""
MARGIN, TOP = 0.02, 0.97
"""Left margin and top line of the text overlays (fractions of the panel)."""
CHIPS_TOP, CHIPS_TOP_TITLED = 0.105, 0.125
"""Top of the token chips above the bottom band; higher under a diff panel's A/B title."""


def direction(azimuth: float, elevation: float) -> np.ndarray:
    """(3,) unit vector at `azimuth` around z and `elevation` above the xy plane (degrees)."""
    a, e = np.radians(azimuth), np.radians(elevation)
    return np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])


def bake_shading(normals: np.ndarray) -> np.ndarray:
    """(n, 3) unit normals → (n, 3) uint8 colours: diffuse light from the upper left of the
    start view plus a rim that brightens edges seen side-on, like a translucent shell."""
    view = direction(VIEW_AZIMUTH, VIEW_ELEVATION).astype(np.float32)
    light = direction(LIGHT_AZIMUTH, LIGHT_ELEVATION).astype(np.float32)
    diffuse = np.clip(normals @ light, 0, 1)  # (n,)
    rim = (1.0 - np.abs(normals @ view)) ** 2
    shade = 0.35 + 0.55 * diffuse + 0.45 * rim
    rgb = np.clip(SURFACE_COLOR[None] * shade[:, None], 0, 1)
    return (rgb * 255).astype(np.uint8)


def lookup_table(mode: str) -> pv.LookupTable:
    """The mode's colour map over [0, 1], without the near-black end that vanishes on the
    dark background."""
    import matplotlib

    cmap = matplotlib.colormaps[COLORMAPS[mode]]
    start = 0.0 if mode == "slot" else 0.22
    rgba = cmap(np.linspace(start, 1.0, 256))  # (256, 4)
    lut = pv.LookupTable(values=(rgba * 255).astype(np.uint8))
    lut.scalar_range = (0.0, 1.0)
    return lut


def software_theme() -> pv.themes.Theme:
    """The default theme without multisampling (costly in software OpenGL)."""
    theme = pv.themes.Theme()
    theme.multi_samples = 0
    theme.anti_aliasing = None
    return theme


def unit_scale(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the 99th percentile, so a few outliers don't wash out the colours."""
    top = float(np.percentile(values, 99)) if values.size else 0.0
    return np.clip(values / (top if top > 0 else 1.0), 0, 1).astype(np.float32)
