"""A traced token (--trace TOKEN_INDEX, or a click in the window): its path through the layers as a
polyline through its places (the centroid of its particles at each layer, in the aligned 3D
space), growing with layer-time, and its logit-lens top-1 at each layer along the path."""

from __future__ import annotations

import numpy as np
import pyvista as pv
from vtkmodules.vtkRenderingCore import vtkBillboardTextActor3D, vtkRenderer

from layerscan.core.errors import LayerscanError
from layerscan.geometry.scan_file import Scan, token_centroids
from layerscan.geometry.scene.overlays import ACCENT, BACKING, plain_text, token_label
from layerscan.geometry.scene.style import use_font

MAX_LENS_LABELS = 8
"""Lens labels drawn along a path at most (evenly spaced, the head always)."""


def check_trace(scan: Scan, token: int | None) -> None:
    """Raise a one-line LayerscanError for a --trace index outside the scan's tokens."""
    if token is not None and not 0 <= token < len(scan.tokens):
        raise LayerscanError(
            f"--trace {token}: the scan has tokens 0..{len(scan.tokens) - 1}; pick one of those"
        )


def token_path(scan: Scan, step: int, token: int) -> np.ndarray:
    """(n_layers+1, 3) the token's place (centroid of its particles) at every layer of a step."""
    n_tokens = scan.step_lengths[step]
    places = []
    for layer in range(scan.n_layers + 1):
        owners = scan.particle_tokens[step, layer]
        places.append(token_centroids(scan.positions[step, layer], owners, n_tokens)[0][token])
    return np.stack(places)


class TokenTrace:
    """The path and lens labels of one token in a panel's 3D renderer.

    Args:
        plotter: the plotter, with the panel's subplot active.
        scan: the scan drawn.
        size: overlay font size in points.
    """

    def __init__(self, plotter: pv.Plotter, scan: Scan, size: int) -> None:
        self.scan = scan
        self.token: int | None = None
        self.line = pv.PolyData(np.zeros((2, 3), np.float32), lines=[2, 0, 1])
        self.actor = plotter.add_mesh(
            self.line,
            color=ACCENT,
            line_width=5,
            lighting=False,
            pickable=False,
            name="trace",
            render_lines_as_tubes=False,
            show_scalar_bar=False,
        )
        self.labels: list[vtkBillboardTextActor3D] = []
        renderer: vtkRenderer = plotter.renderer
        for _ in range(scan.n_layers + 1):
            actor = vtkBillboardTextActor3D()
            prop = actor.GetTextProperty()
            prop.SetFontSize(max(8, int(size * 0.8)))
            prop.SetColor(*ACCENT)
            prop.SetBackgroundColor(*BACKING)
            prop.SetBackgroundOpacity(0.75)
            use_font(prop, bold=False)
            actor.SetVisibility(False)
            actor.SetPickable(False)
            renderer.AddActor(actor)
            self.labels.append(actor)
        self._paths: dict[tuple[int, int], np.ndarray] = {}
        self._text: list[str | None] = [None] * len(self.labels)

    def _path(self, step: int, token: int) -> np.ndarray:
        if (step, token) not in self._paths:
            self._paths[(step, token)] = token_path(self.scan, step, token)
        return self._paths[(step, token)]

    def lens_top1(self, layer: int, token: int) -> str:
        """The logit lens' most likely next token at `layer` for `token` ('' without a lens)."""
        lens = self.scan.lens_tokens
        if lens is None or not lens[layer][token] or not lens[layer][token][0]:
            return ""
        return lens[layer][token][0]

    def update(self, step: int, layer: float, visible: bool) -> None:
        """Draw the path up to fractional `layer` (hidden without a token or when not visible)."""
        token = self.token
        shown = visible and token is not None and token < self.scan.step_lengths[step]
        self.actor.SetVisibility(shown)
        if not shown:
            for actor in self.labels:
                actor.SetVisibility(False)
            return
        path = self._path(step, token)  # (n_layers+1, 3)
        lo = int(np.floor(layer))
        hi = min(lo + 1, self.scan.n_layers)
        head = path[lo] + (layer - lo) * (path[hi] - path[lo])
        points = np.vstack([path[: lo + 1], head[None]])  # (lo+2, 3)
        self.line.points = points.astype(np.float32)
        self.line.lines = np.concatenate([[len(points)], np.arange(len(points))])
        every = max(1, int(np.ceil((self.scan.n_layers + 1) / MAX_LENS_LABELS)))
        near = int(round(layer))
        for i, actor in enumerate(self.labels):
            on = i <= near and (i % every == 0 or i == near)
            actor.SetVisibility(on)
            if not on:
                continue
            top = self.lens_top1(i, token)
            text = f"L{i} → {token_label(top, 12)}" if top else f"L{i}"
            if text != self._text[i]:
                self._text[i] = text
                actor.SetInput(plain_text(text))
            actor.SetPosition(*(path[i] if i < near or near == layer else head))
