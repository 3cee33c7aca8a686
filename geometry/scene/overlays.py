"""2D overlay widgets for the scene: text labels, token chips, logit-lens bars, a layer chart."""

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
    vtkTextProperty,
    vtkTextRenderer,
)

from layerscan.geometry.scene.style import ink_on, use_font

INK = (0.93, 0.94, 0.96)
DIM = (0.55, 0.58, 0.64)
ACCENT = (1.0, 0.78, 0.25)
CHIP = (0.20, 0.24, 0.31)
CHIP_CURRENT = (1.0, 0.78, 0.25)
CHIP_FUTURE = (0.12, 0.14, 0.18)
CHIP_DIFF = (0.75, 0.22, 0.25)
BACKING = (0.055, 0.067, 0.09)
"""Colour behind overlay text (the scene background)."""
BACKING_OPACITY = 0.7
"""How much of what lies behind overlay text the backing hides."""
CHIP_TEXT_LIMIT = 24
"""Longest token text on a chip."""
CHIP_INK = (0.08, 0.08, 0.1)
ELLIPSIS = "…"
"""The chip standing for tokens scrolled out before the first chip shown."""
"""Text on the highlighted (current) chip."""

# Sizes in font sizes, so the overlays scale with the window.
CHIP_PAD, CHIP_GAP, CHIP_ROW = 0.45, 0.35, 1.75
"""Token chips: padding inside a chip, gap between chips, row height."""
CHIP_ROWS_USED = 0.92
"""Share of the chip rows filled before older tokens scroll out."""
LENS_ROW, LENS_BAR = 1.6, 9.0
"""Logit-lens panel: row height and the length of a 100% bar."""


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


class Quads:
    """Filled axis-aligned rectangles and polylines in normalized viewport coordinates."""

    def __init__(
        self, renderer: vtkRenderer, color: tuple, opacity: float = 1.0, line_width: float = 1.0
    ) -> None:
        self.poly = vtkPolyData()
        self.poly.SetPoints(vtkPoints())
        coord = vtkCoordinate()
        coord.SetCoordinateSystemToNormalizedViewport()
        mapper = vtkPolyDataMapper2D()
        mapper.SetInputData(self.poly)
        mapper.SetTransformCoordinate(coord)
        self.actor = vtkActor2D()
        self.actor.SetMapper(mapper)
        self.actor.GetProperty().SetColor(*color)
        self.actor.GetProperty().SetOpacity(opacity)
        self.actor.GetProperty().SetLineWidth(line_width)
        renderer.AddViewProp(self.actor)

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


class TokenChips:
    """The prompt as a row of token chips: seen, current (highlighted), not yet seen, differing.

    With token colours set (`set_colors`), each chip carries its token's particle colour: the
    chips are the key of the token colour mode.
    """

    def __init__(
        self,
        renderer: vtkRenderer,
        tokens: list[str],
        size: int,
        viewport_px: tuple[int, int],
        x0: float = 0.02,
        x1: float = 0.98,
        y_top: float = 0.13,
        max_rows: int = 2,
        differing: list[int] | None = None,
    ) -> None:
        # long tokens are cut with "…", shorter at small widths (24 characters at 1280 px)
        limit = max(8, round(CHIP_TEXT_LIMIT * viewport_px[0] / 1280))
        self.labels = [plain_text(token_label(t, limit)) for t in tokens]
        self.differing = set(differing or [])
        measurer = vtkTextRenderer()
        prop = vtkTextProperty()
        prop.SetFontSize(size)
        use_font(prop)
        box = [0, 0, 0, 0]
        widths = []
        for label in [*self.labels, ELLIPSIS]:
            measurer.GetBoundingBox(prop, label, box, 72)
            widths.append(box[1] - box[0] + 1)
        more_width = widths.pop()
        w_px, h_px = viewport_px
        pad, gap = CHIP_PAD * size / w_px, CHIP_GAP * size / w_px
        self.widths = np.asarray(widths) / w_px + 2 * pad
        self.more_width = more_width / w_px + 2 * pad
        self.row_h = CHIP_ROW * size / h_px
        self.x0, self.x1, self.y_top, self.max_rows, self.pad, self.gap = (
            x0,
            x1,
            y_top,
            max_rows,
            pad,
            gap,
        )
        self.actors = []
        for label in [*self.labels, ELLIPSIS]:
            actor = vtkTextActor()
            actor.SetInput(label)
            actor.GetPositionCoordinate().SetCoordinateSystemToNormalizedViewport()
            tp = actor.GetTextProperty()
            tp.SetFontSize(size)
            use_font(tp)
            tp.SetBackgroundOpacity(1.0)
            tp.SetFrameWidth(2)
            tp.SetVerticalJustificationToBottom()
            renderer.AddViewProp(actor)
            self.actors.append(actor)
        # "…" before the first chip shown when earlier tokens scrolled out
        self.more = self.actors.pop()
        self.more.GetTextProperty().SetBackgroundColor(*CHIP_FUTURE)
        self.more.GetTextProperty().SetColor(*DIM)
        self.more.SetVisibility(False)
        self.colors: np.ndarray | None = None
        self._state: tuple | None = None

    def set_colors(self, colors: np.ndarray | None) -> None:
        """(n_tokens, 3) RGB per chip (the token colour mode), or None for neutral chips."""
        self.colors = None if colors is None else np.asarray(colors, np.float64)
        self._state = None

    def show(self, n_visible: int, current: int | None) -> None:
        """Lay out the chips so the current token is on screen, then colour them."""
        if self._state == (n_visible, current):
            return
        self._state = (n_visible, current)
        focus = len(self.labels) - 1 if current is None else current
        start = self._first_shown(focus)
        x, row = self.x0, 0
        self.more.SetVisibility(start > 0)
        if start > 0:
            self.more.SetPosition(x + self.pad, self.y_top - self.row_h)
            x += self.more_width + self.gap
        for i, actor in enumerate(self.actors):
            if i < start or row >= self.max_rows:
                actor.SetVisibility(False)
                continue
            if x + self.widths[i] > self.x1 and x > self.x0:
                x, row = self.x0, row + 1
                if row >= self.max_rows:
                    actor.SetVisibility(False)
                    continue
            actor.SetVisibility(True)
            actor.SetPosition(x + self.pad, self.y_top - (row + 1) * self.row_h)
            x += self.widths[i] + self.gap
            self._paint(actor.GetTextProperty(), i, n_visible, current)

    def _paint(self, tp: vtkTextProperty, i: int, n_visible: int, current: int | None) -> None:
        tp.SetFrame(False)
        use_font(tp, bold=i == current)
        if i >= n_visible:
            tp.SetBackgroundColor(*CHIP_FUTURE)
            tp.SetColor(*DIM)
        elif self.colors is not None:
            # the token's own colour; current and differing tokens get a frame instead
            tp.SetBackgroundColor(*self.colors[i])
            tp.SetColor(*ink_on(self.colors[i]))
            if i == current or i in self.differing:
                tp.SetFrame(True)
                tp.SetFrameColor(*(INK if i == current else CHIP_DIFF))
        elif i == current:
            tp.SetBackgroundColor(*CHIP_CURRENT)
            tp.SetColor(*CHIP_INK)
        elif i in self.differing:
            tp.SetBackgroundColor(*CHIP_DIFF)
            tp.SetColor(*INK)
        else:
            tp.SetBackgroundColor(*CHIP)
            tp.SetColor(*INK)

    def set_visible(self, visible: bool) -> None:
        """Hide every chip, or show the ones the last layout placed (and lay out anew)."""
        for actor in [*self.actors, self.more]:
            actor.SetVisibility(visible and actor.GetVisibility())
        if not visible:
            self._state = None

    def _first_shown(self, focus: int) -> int:
        """First token index such that `focus` still fits in the rows (greedy from the end)."""
        width = (self.x1 - self.x0) * self.max_rows * CHIP_ROWS_USED - self.more_width - self.gap
        start, used = focus, self.widths[focus] + self.gap
        while start > 0 and used + self.widths[start - 1] + self.gap <= width:
            start -= 1
            used += self.widths[start] + self.gap
        return start


class LensPanel:
    """Logit-lens top-k tokens with probability bars."""

    def __init__(
        self,
        renderer: vtkRenderer,
        top_k: int,
        size: int,
        viewport_px: tuple[int, int],
        x_right: float = 0.98,
        y_top: float = 0.96,
    ) -> None:
        w_px, h_px = viewport_px
        self.row_h = LENS_ROW * size / h_px
        self.bar_w = LENS_BAR * size / w_px
        self.x_bar = x_right - self.bar_w
        self.y_top = y_top
        self.title = Label(renderer, x_right, y_top, size, DIM, align="right")
        self.track = Quads(renderer, CHIP, opacity=0.8)
        self.bars = Quads(renderer, ACCENT, opacity=0.9)
        rows = np.arange(top_k)
        y0 = y_top - (rows + 1.75) * self.row_h
        self.track.set_rects(
            np.stack(
                [np.full(top_k, self.x_bar), y0, np.full(top_k, x_right), y0 + 0.72 * self.row_h], 1
            )
        )
        self.rows = [
            Label(
                renderer,
                self.x_bar - 4.2 * size / w_px,
                y + 0.36 * self.row_h,
                size,
                INK,
                align="right",
                valign="center",
            )
            for y in y0
        ]
        self.values = [
            Label(
                renderer,
                self.x_bar - 0.6 * size / w_px,
                y + 0.36 * self.row_h,
                int(size * 0.85),
                ACCENT,
                align="right",
                valign="center",
            )
            for y in y0
        ]
        self.value_w = 3.4 * size / w_px
        self.y0 = y0
        self._state: tuple | None = None

    def show(self, title: str, tokens: list[str], probs: np.ndarray) -> None:
        state = (title, tuple(tokens), tuple(np.round(probs, 4)))
        if state == self._state:
            return
        self._state = state
        self.title.set(title)
        for i, (row, value) in enumerate(zip(self.rows, self.values, strict=True)):
            has = i < len(tokens)
            label = token_label(tokens[i]) if has else ""
            row.set(f"“{label}”" if len(label) == 1 and not label.isalnum() else label)
            value.set(f"{100 * probs[i]:.0f}%" if has else "")
        p = np.clip(np.asarray(probs[: len(self.y0)], np.float64), 0, 1)
        y0 = self.y0[: len(p)]
        self.bars.set_rects(
            np.stack(
                [
                    np.full(len(p), self.x_bar),
                    y0,
                    self.x_bar + np.maximum(p, 0.004) * self.bar_w,
                    y0 + 0.72 * self.row_h,
                ],
                1,
            )
        )

    def set_visible(self, visible: bool) -> None:
        for item in [self.title, self.track, self.bars, *self.rows, *self.values]:
            item.actor.SetVisibility(visible)


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
    ) -> None:
        x0, y0, x1, y1 = box
        self.box = box
        v = np.asarray(values, np.float64)
        top = nice_ceiling(float(v.max()))
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
