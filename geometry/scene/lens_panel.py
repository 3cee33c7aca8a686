"""The logit-lens panel: the top-k next tokens of the current token, with probability bars."""

from __future__ import annotations

import numpy as np
from vtkmodules.vtkRenderingCore import vtkRenderer

from layerscan.geometry.scene.overlays import ACCENT, CHIP, DIM, INK, Label, Quads, token_label

LENS_ROW, LENS_BAR = 1.6, 9.0
"""Logit-lens panel: row height and the length of a 100% bar."""


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
        self.left = self.x_bar - 9.7 * size / w_px
        """Normalized left edge of the panel's widest token text (what sits left keeps clear)."""
        self.y_top = y_top
        self.title = Label(renderer, x_right, y_top, size, DIM, align="right")
        self.track = Quads(renderer, CHIP, opacity=0.8)
        self.bars = Quads(renderer, ACCENT, opacity=0.9)
        rows = np.arange(top_k)
        y0 = y_top - (rows + 1.75) * self.row_h
        self.bottom = y_top - (top_k + 1.75) * self.row_h
        """Normalized bottom of the panel (what sits below keeps under it)."""
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
