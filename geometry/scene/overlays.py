"""2D overlay widgets for the scene: text labels, quads, a layer chart (chips: chips.py; the
logit-lens panel: lens_panel.py)."""

from __future__ import annotations

import numpy as np
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (registers the text renderer)
from vtkmodules.util.numpy_support import numpy_to_vtk
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkPolyData
from vtkmodules.vtkRenderingCore import (
    vtkActor2D,
    vtkCoordinate,
    vtkPolyDataMapper2D,
    vtkRenderer,
    vtkTextActor,
    vtkTextRenderer,
)

from layerscan.geometry.scene.style import use_font

INK = (0.93, 0.94, 0.96)
DIM = (0.55, 0.58, 0.64)
ACCENT = (1.0, 0.78, 0.25)
CHIP = (0.20, 0.24, 0.31)
BACKING = (0.055, 0.067, 0.09)
"""Colour behind overlay text (the scene background)."""
BACKING_OPACITY = 0.7
"""How much of what lies behind overlay text the backing hides."""


VISIBLE_WHITESPACE = {" ": "␣", "\n": "↵", "\t": "⇥", "\r": "␍"}
"""How whitespace is drawn in token text, so " because" and "because" look different."""


def token_label(token: str, limit: int | None = None) -> str:
    """A token as shown on screen: visible whitespace (`␣the`), no control characters.

    Args:
        token: the token's text.
        limit: longest result; longer text ends in "…".
    """
    text = "".join(VISIBLE_WHITESPACE.get(ch, ch if ch.isprintable() else "?") for ch in token)
    text = text or "∅"
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def plain_text_backend() -> None:
    """Render all text with FreeType, never as matplotlib math text.

    VTK's default backend detection hands some strings (a `$`, or text FreeType fails on, as in
    a logit lens listing `<|endoftext|>` and `↵␣␣␣`) to math text, which warns "Text shadow is
    not supported with math text" on every shadowed label. Token text is never math.
    """
    renderer = vtkTextRenderer.GetInstance()
    if renderer is not None:
        renderer.SetDefaultBackend(vtkTextRenderer.FreeType)


def plain_text(text: str) -> str:
    """Text for a VTK text actor: `$` escaped, so VTK never takes it for math text (which
    warns "Text shadow is not supported with math text" and drops the dollars)."""
    return text.replace("$", "\\$")


class Label:
    """A text actor in normalized viewport coordinates; `set` touches VTK only on change."""

    def __init__(
        self,
        renderer: vtkRenderer,
        x: float,
        y: float,
        size: int,
        color: tuple = INK,
        bold: bool = False,
        mono: bool = False,
        align: str = "left",
        valign: str = "top",
    ) -> None:
        self.actor = vtkTextActor()
        self.actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
        self.actor.SetPosition(x, y)
        prop = self.actor.GetTextProperty()
        prop.SetFontSize(size)
        prop.SetColor(*color)
        use_font(prop, bold)
        # a dark backing instead of a shadow: dim text stays legible over bright particles
        prop.SetBackgroundColor(*BACKING)
        prop.SetBackgroundOpacity(BACKING_OPACITY)
        if mono:
            prop.SetFontFamilyToCourier()
        {
            "left": prop.SetJustificationToLeft,
            "right": prop.SetJustificationToRight,
            "center": prop.SetJustificationToCentered,
        }[align]()
        {
            "top": prop.SetVerticalJustificationToTop,
            "bottom": prop.SetVerticalJustificationToBottom,
            "center": prop.SetVerticalJustificationToCentered,
        }[valign]()
        self._text: str | None = None
        renderer.AddViewProp(self.actor)

    def set(self, text: str) -> None:
        if text != self._text:
            self._text = text
            self.actor.SetInput(plain_text(text))

    def set_visible(self, visible: bool) -> None:
        self.actor.SetVisibility(visible)


def polydata_2d(
    renderer: vtkRenderer, units: str, color: tuple, opacity: float, line_width: float
) -> tuple[vtkPolyData, vtkActor2D]:
    """An empty 2D polydata drawn over `renderer`, its points in normalized viewport units
    (`units` "viewport") or display pixels ("pixels"); returns it and its actor."""
    poly = vtkPolyData()
    poly.SetPoints(vtkPoints())
    coord = vtkCoordinate()
    if units == "viewport":
        coord.SetCoordinateSystemToNormalizedViewport()
    else:
        coord.SetCoordinateSystemToDisplay()
    mapper = vtkPolyDataMapper2D()
    mapper.SetInputData(poly)
    mapper.SetTransformCoordinate(coord)
    actor = vtkActor2D()
    actor.SetMapper(mapper)
    actor.GetProperty().SetColor(*color)
    actor.GetProperty().SetOpacity(opacity)
    actor.GetProperty().SetLineWidth(line_width)
    renderer.AddViewProp(actor)
    return poly, actor


class Quads:
    """Filled axis-aligned rectangles and polylines in normalized viewport coordinates."""

    def __init__(
        self, renderer: vtkRenderer, color: tuple, opacity: float = 1.0, line_width: float = 1.0
    ) -> None:
        self.poly, self.actor = polydata_2d(renderer, "viewport", color, opacity, line_width)

    def set_rects(self, rects: np.ndarray) -> None:
        """rects: (n, 4) rows of x0, y0, x1, y1."""
        rects = np.asarray(rects, np.float64).reshape(-1, 4)
        corners = np.stack(
            [rects[:, [0, 1]], rects[:, [2, 1]], rects[:, [2, 3]], rects[:, [0, 3]]], 1
        ).reshape(-1, 2)  # (4n, 2)
        cells = np.arange(4 * len(rects)).reshape(-1, 4)
        self._set(corners, cells, lines=False)

    def set_polyline(self, xy: np.ndarray) -> None:
        """xy: (n, 2) points joined in order."""
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        self._set(xy, np.arange(len(xy))[None, :], lines=True)

    def _set(self, xy: np.ndarray, cells: np.ndarray, lines: bool) -> None:
        pts = np.zeros((len(xy), 3))
        pts[:, :2] = xy
        self.poly.GetPoints().SetData(numpy_to_vtk(pts, deep=True))
        arr = vtkCellArray()
        for cell in cells:
            arr.InsertNextCell(len(cell), [int(i) for i in cell])
        if lines:
            self.poly.SetLines(arr)
        else:
            self.poly.SetPolys(arr)
        self.poly.Modified()


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k that is ≥ value (an axis top)."""
    if value <= 0:
        return 1.0
    power = 10.0 ** np.floor(np.log10(value))
    return float(next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= value * (1 - 1e-9)))


class LayerChart:
    """A small line chart of one value per layer (divergence) with the current layer marked.

    The y axis starts at zero and has labelled ticks, so 0.74-0.96 reads as the small change
    it is. All zeros (a prompt diffed with itself) draws a flat line at zero.
    """

    def __init__(
        self,
        renderer: vtkRenderer,
        values: np.ndarray,
        size: int,
        box: tuple[float, float, float, float],
        title: str,
        viewport_px: tuple[int, int] = (1280, 720),
        floor: float = 0.0,
    ) -> None:
        """`floor`: the axis reaches at least this (e.g. a threshold drawn on the chart)."""
        x0, y0, x1, y1 = box
        self.box = box
        v = np.asarray(values, np.float64)
        top = nice_ceiling(max(float(v.max()), floor))
        self.xs = x0 + (x1 - x0) * np.linspace(0, 1, len(v))
        self.ys = y0 + (y1 - y0) * np.clip(v / top, 0, 1)
        self.frame = Quads(renderer, CHIP, opacity=0.55)
        self.frame.set_rects([[x0 - 0.01, y0 - 0.02, x1 + 0.01, y1 + 0.015]])
        ticks = np.array([0.0, 0.5, 1.0])
        self.grid = Quads(renderer, DIM, opacity=0.35)
        self.grid.set_rects(
            np.stack(
                [
                    np.full(3, x0),
                    y0 + (y1 - y0) * ticks - 0.001,
                    np.full(3, x1),
                    y0 + (y1 - y0) * ticks + 0.001,
                ],
                1,
            )
        )
        self.tick_labels = []
        for tick in ticks:
            label = Label(
                renderer,
                x0 - 0.015,
                y0 + (y1 - y0) * tick,
                int(size * 0.8),
                DIM,
                align="right",
                valign="center",
            )
            label.set(f"{tick * top:.3g}")
            self.tick_labels.append(label)
        self.line = Quads(renderer, INK, line_width=2.0)
        self.line.set_polyline(np.stack([self.xs, self.ys], 1))
        self.marker = Quads(renderer, ACCENT, line_width=2.0)
        self.dot = Quads(renderer, ACCENT)
        self.title = Label(
            renderer, x0, y1 + 0.015 + 1.5 * size / viewport_px[1], size, DIM, valign="bottom"
        )
        self.title.set(title)
        self.values = v
        self.readout = Label(renderer, x1, y0 - 0.03, int(size * 0.9), ACCENT, align="right")
        self._shown: int | None = None

    def show(self, layer: float) -> None:
        x = float(np.interp(layer, np.arange(len(self.xs)), self.xs))
        y = float(np.interp(layer, np.arange(len(self.ys)), self.ys))
        _, y0, _, y1 = self.box
        self.marker.set_polyline([[x, y0 - 0.02], [x, y1 + 0.015]])
        self.dot.set_rects([[x - 0.006, y - 0.01, x + 0.006, y + 0.01]])
        near = int(round(layer))
        if near != self._shown:
            self._shown = near
            self.readout.set(f"layer {near}: {self.values[near]:.3g}")

    def set_visible(self, visible: bool) -> None:
        for item in (
            self.frame,
            self.grid,
            self.line,
            self.marker,
            self.dot,
            self.title,
            self.readout,
            *self.tick_labels,
        ):
            item.actor.SetVisibility(visible)
