"""The prompt as token chips under the cloud: seen, current, not yet seen, differing."""

from __future__ import annotations

import numpy as np
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkTextActor, vtkTextProperty, vtkTextRenderer

from layerscan.geometry.scene.overlays import CHIP, DIM, INK, plain_text, token_label
from layerscan.geometry.scene.style import ink_on, use_font

CHIP_CURRENT = (1.0, 0.78, 0.25)
CHIP_FUTURE = (0.12, 0.14, 0.18)
CHIP_DIFF = (0.75, 0.22, 0.25)
CHIP_TEXT_LIMIT = 24
"""Longest token text on a chip."""
CHIP_INK = (0.08, 0.08, 0.1)
"""Text on the highlighted (current) chip."""
ELLIPSIS = "…"
"""The chip standing for tokens scrolled out before the first chip shown."""
# Sizes in font sizes, so the chips scale with the window.
CHIP_PAD, CHIP_GAP, CHIP_ROW = 0.45, 0.35, 1.75
"""Token chips: padding inside a chip, gap between chips, row height."""
CHIP_ROWS_USED = 0.92
"""Share of the chip rows filled before older tokens scroll out."""


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
        for label in [*self.labels, ELLIPSIS, ELLIPSIS]:
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
        # "…" before the first chip shown when earlier tokens scrolled out, "… +N" after the
        # last when later ones do not fit
        self.after = self.actors.pop()
        self.more = self.actors.pop()
        for chip in (self.more, self.after):
            chip.GetTextProperty().SetBackgroundColor(*CHIP_FUTURE)
            chip.GetTextProperty().SetColor(*DIM)
            chip.SetVisibility(False)
        self.measurer, self.prop, self.viewport_px = measurer, prop, viewport_px
        self.colors: np.ndarray | None = None
        self._state: tuple | None = None

    def set_colors(self, colors: np.ndarray | None) -> None:
        """(n_tokens, 3) RGB per chip (the token colour mode), or None for neutral chips."""
        self.colors = None if colors is None else np.asarray(colors, np.float64)
        self._state = None

    def show(self, n_visible: int, current: int | None) -> None:
        """Lay out the chips so the current token is on screen, then colour them; tokens
        scrolled out before the first chip shown are one "…" chip, and those past the last
        row one "… +N" chip, so the strip never drops a token without saying so."""
        if self._state == (n_visible, current):
            return
        self._state = (n_visible, current)
        focus = len(self.labels) - 1 if current is None else current
        start = self._first_shown(focus)
        x0 = self.x0 + (self.more_width + self.gap if start > 0 else 0.0)
        self.more.SetVisibility(start > 0)
        if start > 0:
            self.more.SetPosition(self.x0 + self.pad, self.y_top - self.row_h)
        spots = self._flow(start, x0)
        hidden = len(self.labels) - start - len(spots)
        while hidden > 0 and spots:
            # the "… +N" chip goes after the last chip shown, on its row
            self.after.SetInput(f"{ELLIPSIS} +{hidden}")
            width = self._width(self.after.GetInput())
            x, row = spots[-1][1] + self.widths[spots[-1][0]] + self.gap, spots[-1][2]
            if x + width <= self.x1 or spots[-1][0] <= focus:  # the focus stays shown
                self.after.SetPosition(x + self.pad, self.y_top - (row + 1) * self.row_h)
                break
            spots.pop()
            hidden += 1
        self.after.SetVisibility(hidden > 0)
        shown = {i: (x, row) for i, x, row in spots}
        for i, actor in enumerate(self.actors):
            actor.SetVisibility(i in shown)
            if i in shown:
                x, row = shown[i]
                actor.SetPosition(x + self.pad, self.y_top - (row + 1) * self.row_h)
                self._paint(actor.GetTextProperty(), i, n_visible, current)

    def _flow(self, start: int, x: float) -> list[tuple[int, float, int]]:
        """(token, x, row) of the chips from `start` that fit in the rows, in order."""
        spots, row = [], 0
        for i in range(start, len(self.labels)):
            if x + self.widths[i] > self.x1 and x > self.x0:
                x, row = self.x0, row + 1
            if row >= self.max_rows:
                break
            spots.append((i, x, row))
            x += self.widths[i] + self.gap
        return spots

    def _width(self, text: str) -> float:
        """A chip's width for `text`, as a share of the viewport's width."""
        box = [0, 0, 0, 0]
        self.measurer.GetBoundingBox(self.prop, text, box, 72)
        return (box[1] - box[0] + 1) / self.viewport_px[0] + 2 * self.pad

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
        for actor in [*self.actors, self.more, self.after]:
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
