"""The key of a frame: what the colours mean (caption or colour bar with units) and what the
surface is."""

from __future__ import annotations

from typing import NamedTuple

from vtkmodules.vtkRenderingAnnotation import vtkScalarBarActor
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkTextProperty, vtkTextRenderer

from layerscan.geometry.scene.overlays import DIM, INK, Label
from layerscan.geometry.scene.style import (
    MARGIN,
    lookup_table,
    position_lookup_table,
    use_font,
)

CAPTIONS = {
    "token": "colour = token: each chip below is the colour of its particles",
    "slot": "colour = particle slot (fixed per particle all movie long)",
}
"""The one-line colour key of the categorical modes (the continuous ones have a `Scale`)."""
BAR_BOTTOM, BAR_HEIGHT = 0.22, 0.36
"""Colour bar: bottom and height (fractions of the panel), at the panel's right margin."""
BAR_MIN_WIDTH, BAR_THICKNESS = 4.0, 1.2
"""Colour bar: least width of bar, labels and title, and the bar's own width (font sizes)."""


class Scale(NamedTuple):
    """A colour bar: what it measures, in which unit, and the value at its top."""

    caption: str
    """One line under the picture, e.g. "colour = local density of the particles"."""
    title: str
    """The bar's title with its unit (may span lines)."""
    top: float
    """The value at the top of the bar (colours saturate there)."""


def surface_caption(settings: dict) -> str:
    """One line saying what the drawn surface is, from the scan's settings."""
    surface = (settings.get("projection") or {}).get("surface") or {}
    if surface.get("method") == "alpha":
        return "surface: alpha shape around the particles"
    if surface.get("method") == "density":
        share = round(100 * (1.0 - float(surface.get("level_quantile", 0.2))))
        return f"surface: density isosurface holding ~{share} % of the tokens"
    return "surface: a density surface around the particles"


class Legend:
    """The colour key (a caption, plus a colour bar for the continuous modes) and the
    surface caption, in one panel's overlay renderer."""

    def __init__(
        self,
        overlay: vtkRenderer,
        size: int,
        viewport_px: tuple[int, int],
        y: float,
        scales: dict[str, Scale],
        surface_text: str,
    ) -> None:
        line = 1.5 * size / viewport_px[1]
        small = int(size * 0.85)
        self.colour = Label(overlay, 0.02, y + line, small, INK, valign="bottom")
        self.surface = Label(overlay, 0.02, y, small, DIM, valign="bottom")
        self.surface.set(surface_text)
        self.scales = scales
        # as wide as its widest title (which is centred over it), so no title is cut off
        width_px = max(
            [BAR_MIN_WIDTH * size] + [text_width(s.title, small) + size for s in scales.values()]
        )
        width = width_px / viewport_px[0]
        self.bar = vtkScalarBarActor()
        self.bar.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
        self.bar.SetPosition(1.0 - MARGIN - width, BAR_BOTTOM)
        self.bar.SetWidth(width)
        self.bar.SetHeight(BAR_HEIGHT)
        self.bar.SetNumberOfLabels(3)
        self.bar.SetLabelFormat("%.2g")
        self.bar.SetTextPad(3)
        self.bar.SetVerticalTitleSeparation(6)
        self.bar.SetBarRatio(BAR_THICKNESS * size / width_px)
        self.bar.UnconstrainedFontSizeOn()
        for prop, font in (
            (self.bar.GetTitleTextProperty(), small),
            (self.bar.GetLabelTextProperty(), int(size * 0.75)),
        ):
            prop.SetFontSize(font)
            prop.SetColor(*DIM)
            use_font(prop)
            prop.SetItalic(False)
            prop.SetShadow(False)
        self.bar.SetTextPositionToSucceedScalarBar()
        overlay.AddViewProp(self.bar)
        self.mode: str | None = None

    def show(self, mode: str, show_surface: bool, visible: bool = True) -> None:
        """Key for colour `mode`; the surface caption only while the surface is drawn."""
        self.colour.set_visible(visible)
        self.surface.set_visible(visible and show_surface)
        self.bar.SetVisibility(visible and mode in self.scales)
        if mode == self.mode:
            return
        self.mode = mode
        if mode in self.scales:
            scale = self.scales[mode]
            caption = f"{scale.caption} · scale at right"
            # the particles' table, relabelled in real units
            lut = position_lookup_table() if mode == "token" else lookup_table(mode)
            lut.scalar_range = (0.0, scale.top)
            self.bar.SetLookupTable(lut)
            self.bar.SetLabelFormat("%.0f" if scale.top >= 100 else "%.2g")  # 530, not 5.3e+02
            self.bar.SetTitle(scale.title)
        else:
            caption = CAPTIONS[mode]
        self.colour.set(caption)


def text_width(text: str, size: int) -> float:
    """Width in pixels of (multi-line) overlay text at font `size`."""
    prop = vtkTextProperty()
    prop.SetFontSize(size)
    use_font(prop)
    box = [0, 0, 0, 0]
    vtkTextRenderer().GetBoundingBox(prop, text, box, 72)
    return float(box[1] - box[0] + 1)
