"""How a scan is drawn (SceneOptions, the colour modes and toggled parts), and the headless
EGL switch: the scene's settings, apart from the scene itself."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from layerscan.core.errors import LayerscanError
from layerscan.geometry.scene.bounds import check_scene_bounds


@contextlib.contextmanager
def headless_egl(off_screen: bool) -> Iterator[None]:
    """Without a display, make VTK open an EGL window directly (no X-server warning).

    The variable is restored afterwards so that later windows, and child processes, are not
    forced onto EGL.
    """
    key = "VTK_DEFAULT_OPENGL_WINDOW"
    if not off_screen or os.environ.get("DISPLAY") or key in os.environ:
        yield
        return
    os.environ[key] = "vtkEGLRenderWindow"
    try:
        yield
    finally:
        del os.environ[key]


ColorMode = Literal["token", "slot", "density", "displacement"]
COLOR_MODES: tuple[str, ...] = get_args(ColorMode)
PARTS = ("points", "surface", "lines", "overlays", "labels")


@dataclass
class SceneOptions:
    """How a scan is drawn."""

    window_size: tuple[int, int] = field(default=(1280, 720), metadata={"flag": "resolution"})
    """Width and height in pixels."""
    color_mode: ColorMode | None = field(default=None, metadata={"flag": "color"})
    """token (each token's particles in the token's colour, the chips as the key), slot (a
    fixed colour per particle), density (local 3D density), displacement (movement since the
    previous layer; A→B distance in a diff). None: displacement for diffs, else token."""
    show_points: bool = field(default=True, metadata={"flag": "points"})
    """Draw the particles."""
    show_surface: bool = field(default=False, metadata={"flag": "surfaces"})
    """Draw each layer's density surface (off by default: around token groups it is a faint
    shadow that explains little; `u` in the window, --surfaces here)."""
    show_lines: bool = field(default=False, metadata={"flag": "lines"})
    """Join each particle to its nearest neighbours in the particle cloud."""
    show_overlays: bool = field(default=True, metadata={"flag": "overlays"})
    """Layer title, prompt, logit lens, faithfulness figures (and the divergence chart)."""
    show_labels: bool = field(default=True, metadata={"flag": "labels"})
    """Each token's text at its group of particles (thinned to stay readable)."""
    point_size: float | None = None
    """Particle size in pixels; None scales with the window height."""
    surface_opacity: float | None = None
    """Surface opacity; None: 0.2, or 0.12 for diffs (two panels of overlapping blobs)."""
    n_links: int = 2
    """Neighbour lines drawn per particle."""
    background: str = "#0e1117"
    """Background colour."""
    baked_shading: bool = True
    """Light the surfaces once per vertex for the starting view instead of per pixel every
    frame (~20% faster in software rendering; the viewer turns it off for free orbiting)."""
    anti_aliasing: bool = False
    """FXAA; costs render time in software rendering."""
    show_attention: bool = field(default=True, metadata={"flag": "arcs"})
    """Attention arcs between token places, for scans made with --attention."""
    arc_top_k: int = 3
    """Arcs drawn per query at most (its largest weights)."""
    arc_mass: float = 0.8
    """A query's arcs stop once they cover this share of its attention."""
    arc_head: int | None = None
    """Head whose arcs are drawn; None: the mean over heads."""
    arc_sink: bool = False
    """Draw arcs to the first token too (else it is a halo with its share stated)."""
    show_components: bool = field(default=True, metadata={"flag": "strip"})
    """The component strip beside the cloud, for scans made with --components."""
    trace: int | None = field(default=None, metadata={"metavar": "TOKEN_INDEX"})
    """Trace this token (0 = the first): its path through the layers, its logit-lens top-1
    along it, and its writes in the component strip."""
    overlay_bottom: float = field(default=0.0, metadata={"cli": False})
    """Free band at the bottom (fraction of the height) that the prompt keeps clear, for
    the viewer's sliders."""

    def __post_init__(self) -> None:
        w, h = self.window_size
        if not (64 <= w <= 7680 and 64 <= h <= 4320):
            raise LayerscanError(f"resolution {w}x{h} is out of range (64x64 to 7680x4320)")
        if self.point_size is not None and not self.point_size > 0:
            raise LayerscanError(f"point size must be positive, got {self.point_size}")
        if self.surface_opacity is not None and not 0 <= self.surface_opacity <= 1:
            raise LayerscanError(f"surface opacity must be in 0..1, got {self.surface_opacity}")
        if self.n_links < 0:
            raise LayerscanError(f"lines per particle must be 0 or more, got {self.n_links}")
        check_scene_bounds(self.point_size, self.n_links)
        if self.arc_top_k < 1 or not 0 < self.arc_mass <= 1:
            raise LayerscanError("--arc-top-k must be 1 or more and --arc-mass in (0, 1]")
        if self.color_mode is not None and self.color_mode not in COLOR_MODES:
            raise LayerscanError(
                f"unknown colour mode {self.color_mode!r}; use one of {', '.join(COLOR_MODES)}"
            )
