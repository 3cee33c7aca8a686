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
FRAME_MARGIN = 1.0
"""The camera keeps the layer on show this much inside the free area (1: the area is the margin)."""
DIFF_CHART = (0.12, 0.72, 0.50, 0.86)
"""(x0, y0, x1, y1) normalized box of a diff's divergence chart, at the top of B's panel."""
DIFF_CHART_KEY = 0.065
"""How far below the chart's box its key line (the marked layers) sits."""
FREE_AREA = {
    "single": (0.02, 0.19, 0.98, 0.85),
    # a diff's cloud and labels stay below the chart's key line and its descenders
    "diff": (0.03, 0.30, 0.97, DIFF_CHART[1] - DIFF_CHART_KEY - 0.035),
}
"""(x0, y0, x1, y1) normalized area of a panel that the whole cloud of every layer fits in,
clear of the header, the chips and the legend (and of the divergence chart in a diff)."""
LINE_COLOR, LINE_OPACITY = "#8fa3bf", 0.35
"""Neighbour lines: faint, so the particles stay in front."""
MARGIN, TOP = 0.02, 0.97
"""Left margin and top line of the text overlays (fractions of the panel)."""
CHIPS_TOP, CHIPS_TOP_TITLED = 0.105, 0.125
"""Top of the token chips above the bottom band; higher under a diff panel's A/B title."""


HEADER_LINES, FOOTER_LINES = 6.2, 3.2
"""Font sizes of text above the picture (layer, model, figures, caption, warning) and between
the chips and the picture (the colour and surface key)."""


def clear_band(y0: float, y1: float, size: int, height: int, bottom: float = 0.0) -> tuple:
    """The part of (y0, y1) (fractions of the panel height) clear of the header text and the
    keys above the chips, which take a larger share of small frames.

    Args:
        y0, y1: the band wanted.
        size: overlay font size in pixels.
        height: panel height in pixels.
        bottom: free band at the bottom the chips sit above (the viewer's sliders).
    """
    top = TOP - HEADER_LINES * size / height
    low = bottom + CHIPS_TOP + 0.012 + FOOTER_LINES * size / height
    return max(y0, low), min(y1, top)


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


def diff_palette(n_stops: int = 9) -> list[list[int]]:
    """The diff colour map (the frame's "displacement" lookup table) as RGB stops, for pages."""
    import matplotlib

    rgba = matplotlib.colormaps[COLORMAPS["displacement"]](np.linspace(0.22, 1.0, n_stops))
    return np.round(rgba[:, :3] * 255).astype(int).tolist()


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


TOKEN_PALETTE = (
    "#4e9bff", "#ff7f2a", "#3ddc84", "#ff4d6d", "#c77dff", "#ffd23f", "#00e8ff", "#8b8b46",
    "#ffb9e8", "#00a28b", "#b9e817", "#17a200", "#ff00b9", "#ffb9a2", "#2ea2b9", "#b9b9ff",
    "#b9745d", "#ff2e17", "#d1a25d", "#8be8d1", "#b9748b", "#d1d18b", "#7474ff", "#8bd1ff",
)  # fmt: skip
"""The token colours of prompts up to 24 tokens: chosen greedily far apart in CIEDE2000, no
two closer than 14.6 (scripts/make_palette.py makes them; tests check the distance)."""
TOKEN_PALETTE_SIZE = len(TOKEN_PALETTE)
POSITION_COLORMAP, POSITION_RANGE = "turbo", (0.06, 0.94)
"""Longer prompts colour tokens by position along the prompt (a colour bar is the key and the
labels carry identity): this map over this part of it, bright enough on the dark background."""


@functools.lru_cache(maxsize=1)
def token_palette() -> np.ndarray:
    """(TOKEN_PALETTE_SIZE, 3) float RGB in [0, 1]: the fixed categorical token palette."""
    return np.array(
        [[int(c[i : i + 2], 16) / 255 for i in (1, 3, 5)] for c in TOKEN_PALETTE], np.float64
    )


def colors_by_position(n_tokens: int) -> bool:
    """Whether a prompt this long is coloured by position (colour bar) instead of a palette."""
    return n_tokens > TOKEN_PALETTE_SIZE


def token_colors(n_tokens: int) -> np.ndarray:
    """(n_tokens, 3) float RGB: token i's colour, from the palette up to its size, else from
    the position colour map (first token at one end, last at the other)."""
    if not colors_by_position(n_tokens):
        return token_palette()[:n_tokens]
    import matplotlib

    lo, hi = POSITION_RANGE
    cmap = matplotlib.colormaps[POSITION_COLORMAP]
    return np.asarray(cmap(np.linspace(lo, hi, n_tokens))[:, :3], np.float64)


def position_lookup_table() -> pv.LookupTable:
    """The position colour map over [0, 1] (the colour bar of long prompts)."""
    import matplotlib

    rgba = matplotlib.colormaps[POSITION_COLORMAP](np.linspace(*POSITION_RANGE, 256))
    lut = pv.LookupTable(values=(rgba * 255).astype(np.uint8))
    lut.scalar_range = (0.0, 1.0)
    return lut


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
