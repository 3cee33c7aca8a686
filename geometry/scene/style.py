"""Colours, sizes, camera angles and the render theme of the scene (no plotter here)."""

from __future__ import annotations

import functools

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
VIEW_ANGLE = 30.0
"""Camera view angle in degrees (vertical)."""
FRAME_MARGIN = 1.06
"""The camera keeps the bounding sphere of every layer this much inside the free area."""
FREE_AREA = {"single": (0.02, 0.22, 0.98, 0.84), "diff": (0.03, 0.30, 0.97, 0.66)}
"""(x0, y0, x1, y1) normalized area of a panel that the whole cloud of every layer fits in,
clear of the header, the chips and the legend (and of the divergence chart in a diff)."""
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


def unit_top(values: np.ndarray) -> float:
    """The value colours saturate at: the 99th percentile (1 when that is zero)."""
    top = float(np.percentile(values, 99)) if values.size else 0.0
    return top if top > 0 else 1.0


def unit_scale(values: np.ndarray) -> np.ndarray:
    """Scale to [0, 1] by the 99th percentile, so a few outliers don't wash out the colours."""
    return np.clip(values / unit_top(values), 0, 1).astype(np.float32)


TOKEN_PALETTE_SIZE = 64
"""Distinct token colours before the palette repeats."""
_PALETTE_LIGHTNESS = (52.0, 88.0)
"""CIELAB lightness range of token colours: readable on the dark background."""
_PALETTE_SEED_COLOURS = ("#4e9bff", "#ff7f2a", "#3ddc84", "#ff4d6d", "#c77dff", "#ffd23f")
"""The first token colours (hand-picked, most distinct); the rest are chosen greedily."""


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB in [0, 1] → (n, 3) CIELAB (D65)."""
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = linear @ m.T / np.array([0.95047, 1.0, 1.08883])  # (n, 3)
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


@functools.lru_cache(maxsize=1)
def token_palette() -> np.ndarray:
    """(TOKEN_PALETTE_SIZE, 3) float RGB in [0, 1]: a qualitative palette for dark backgrounds.

    Greedy farthest-point choice in CIELAB over an sRGB grid (as Glasbey palettes are made),
    so each new colour is as far as possible from all earlier ones; deterministic.
    """
    grid = np.linspace(0.0, 1.0, 16)
    candidates = np.stack(np.meshgrid(grid, grid, grid, indexing="ij"), -1).reshape(-1, 3)
    lab = _srgb_to_lab(candidates)  # (4096, 3)
    keep = (
        (lab[:, 0] >= _PALETTE_LIGHTNESS[0])
        & (lab[:, 0] <= _PALETTE_LIGHTNESS[1])
        & (np.hypot(lab[:, 1], lab[:, 2]) >= 25)
    )  # coloured, not grey
    candidates, lab = candidates[keep], lab[keep]
    seeds = np.array(
        [[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in _PALETTE_SEED_COLOURS]
    )
    chosen = list(seeds)
    nearest = np.min(np.linalg.norm(lab[:, None] - _srgb_to_lab(seeds)[None], axis=-1), 1)
    while len(chosen) < TOKEN_PALETTE_SIZE:
        best = int(np.argmax(nearest))
        chosen.append(candidates[best])
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[best], axis=1))
    return np.asarray(chosen, np.float64)


def token_colors(n_tokens: int) -> np.ndarray:
    """(n_tokens, 3) float RGB: token i's colour (the palette repeats past its size)."""
    palette = token_palette()
    return palette[np.arange(n_tokens) % len(palette)]


def token_lookup_table(n_tokens: int) -> pv.LookupTable:
    """A categorical table over [0, 1]: the value (i + 0.5) / n_tokens is token i's colour."""
    rgba = np.ones((max(n_tokens, 1), 4))
    rgba[:, :3] = token_colors(max(n_tokens, 1))
    lut = pv.LookupTable(values=np.round(rgba * 255).astype(np.uint8))
    lut.scalar_range = (0.0, 1.0)
    return lut


def ink_on(rgb) -> tuple[float, float, float]:
    """Dark or light text colour, whichever reads better on a background of colour `rgb`."""
    luminance = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return (0.06, 0.07, 0.09) if luminance > 0.45 else (0.96, 0.97, 0.98)


FONT_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
"""Overlay fonts (matplotlib ships them): VTK's built-in Arial has no `␣`, `↵` or `⇥`."""


@functools.lru_cache(maxsize=2)
def font_file(bold: bool = False) -> str | None:
    """Path of the overlay font, or None when matplotlib's copy is missing."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("matplotlib")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (
        Path(spec.submodule_search_locations[0]) / "mpl-data" / "fonts" / "ttf" / FONT_FILES[bold]
    )
    return str(path) if path.is_file() else None


def use_font(prop, bold: bool = False) -> None:
    """Give a vtkTextProperty the overlay font (which has glyphs for visible whitespace)."""
    path = font_file(bold)
    if path is None:
        prop.SetBold(bold)
        return
    prop.SetFontFamily(4)  # VTK_FONT_FILE
    prop.SetFontFile(path)
    prop.SetBold(False)
