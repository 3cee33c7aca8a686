"""A traced token (--trace TOKEN_INDEX, or a click in the window): its path through the layers as a
polyline through its places (the centroid of its particles at each layer, in the aligned 3D
space), growing with layer-time, and its logit-lens top-1 at each layer along the path."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyvista as pv
from vtkmodules.vtkRenderingCore import vtkRenderer, vtkTextActor, vtkTextRenderer

from layerscan.core.errors import LayerscanError
from layerscan.geometry.scan_file import Scan, token_centroids
from layerscan.geometry.scene.overlays import ACCENT, BACKING, plain_text, token_label
from layerscan.geometry.scene.style import use_font

if TYPE_CHECKING:
    from layerscan.geometry.scene.tokens import TokenLabels

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
    """The path and lens labels of one token in a panel.

    The path is a polyline in the 3D renderer; the lens labels are 2D text in the overlay,
    placed in display pixels after the token labels (just before each render), beside their
    layer's place and never on a token label or on each other: the head's label first, and
    labels with no free spot near their place are left out.

    Args:
        plotter: the plotter, with the panel's subplot active.
        scan: the scan drawn.
        size: overlay font size in points.
        labels: the panel's token labels (their boxes are kept clear), or None.
        overlay: the panel's overlay renderer (where the lens labels go), or None for the
            plotter's renderer.
    """

    def __init__(
        self,
        plotter: pv.Plotter,
        scan: Scan,
        size: int,
        labels: TokenLabels | None = None,
        overlay: vtkRenderer | None = None,
    ) -> None:
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
        self.token_labels = labels
        self.renderer: vtkRenderer = plotter.renderer
        self.overlay = overlay if overlay is not None else self.renderer
        self.labels: list[vtkTextActor] = []
        self.font_size = max(8, int(size * 0.8))
        for _ in range(scan.n_layers + 1):
            actor = vtkTextActor()
            actor.GetPositionCoordinate().SetCoordinateSystemToDisplay()
            prop = actor.GetTextProperty()
            prop.SetFontSize(self.font_size)
            prop.SetColor(*ACCENT)
            prop.SetBackgroundColor(*BACKING)
            prop.SetBackgroundOpacity(0.8)
            prop.SetVerticalJustificationToCentered()
            use_font(prop, bold=False)
            actor.SetVisibility(False)
            actor.SetPickable(False)
            self.overlay.AddViewProp(actor)
            self.labels.append(actor)
        self._paths: dict[tuple[int, int], np.ndarray] = {}
        self._text: list[str | None] = [None] * len(self.labels)
        self._extent: list[tuple[float, float]] = [(0.0, 0.0)] * len(self.labels)
        self._wanted: list[tuple[int, np.ndarray]] = []
        """(layer, world point) of each label wanted this frame, the first placed first."""
        self.right_edge = 1.0
        """Labels stay left of this fraction of the panel's width (the strip is right of it)."""
        self.placed: list[int] = []
        """Layers whose lens label is shown."""
        self.boxes = np.zeros((0, 4))
        """(len(placed), 4) display-pixel boxes x0, y0, x1, y1 of those labels."""
        self.overlay.AddObserver("StartEvent", self._place, -1.0)  # after the token labels

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
        self._wanted = []
        if not shown:
            for actor in self.labels:
                actor.SetVisibility(False)
            self.placed, self.boxes = [], np.zeros((0, 4))
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
        candidates = [i for i in range(near + 1) if i % every == 0 or i == near]
        for i in [near, *(c for c in candidates if c != near)]:  # the head's label first
            top = self.lens_top1(i, token)
            text = f"L{i} → {token_label(top, 12)}" if top else f"L{i}"
            if text != self._text[i]:
                self._text[i] = text
                self.labels[i].SetInput(plain_text(text))
                box = [0, 0, 0, 0]
                _MEASURER.GetBoundingBox(
                    self.labels[i].GetTextProperty(), plain_text(text), box, 72
                )
                self._extent[i] = (box[1] - box[0] + 4.0, box[3] - box[2] + 4.0)
            self._wanted.append((i, path[i] if i < near or near == layer else head))

    def _place(self, *_) -> None:
        """Greedy: each wanted label beside its place (right, left, then rings above and below)
        where it overlaps nothing; a label with no free spot is left out."""
        for actor in self.labels:
            actor.SetVisibility(False)
        self.placed, boxes = [], []
        if not self._wanted:
            self.boxes = np.zeros((0, 4))
            return
        taken = []
        vx0, vy0, vx1, vy1 = self.renderer.GetViewport()
        width, height = self.renderer.GetRenderWindow().GetSize()
        band = (0.0, 1.0)
        if self.token_labels is not None:  # the token labels' band: clear of header and keys
            band = self.token_labels.band
            if self.token_labels.enabled:
                taken = [tuple(b) for b in self.token_labels.boxes]
        area = (
            vx0 * width,
            (vy0 + band[0] * (vy1 - vy0)) * height,
            (vx0 + self.right_edge * (vx1 - vx0)) * width,
            (vy0 + band[1] * (vy1 - vy0)) * height,
        )
        xy = project(self.renderer, np.array([p for _, p in self._wanted]))  # (n, 2)
        gap = 6.0
        for (layer, _), (x, y) in zip(self._wanted, xy, strict=True):
            w, h = self._extent[layer]
            spots = [(x + gap, y), (x - gap - w, y)]
            for ring in range(1, 3):  # then above and below, further out each ring
                dy = ring * (h + gap)
                spots += [(x - w / 2, y + dy), (x - w / 2, y - dy), (x + gap, y + dy)]
                spots += [(x + gap, y - dy), (x - gap - w, y + dy), (x - gap - w, y - dy)]
            for x0, yc in spots:
                box = (x0, yc - h / 2, x0 + w, yc + h / 2)
                inside = area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1]
                if (
                    inside
                    and box[3] <= area[3]
                    and not any(
                        box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3]
                        for b in taken
                    )
                ):
                    break
            else:
                continue
            taken.append(box)
            boxes.append(box)
            self.placed.append(layer)
            self.labels[layer].GetPositionCoordinate().SetValue(box[0] + 2.0, (box[1] + box[3]) / 2)
            self.labels[layer].SetVisibility(True)
        self.boxes = np.asarray(boxes, np.float64).reshape(-1, 4)


_MEASURER = vtkTextRenderer()


def project(renderer: vtkRenderer, points: np.ndarray) -> np.ndarray:
    """(n, 3) world points → (n, 2) display pixels of `renderer` (origin bottom left)."""
    camera = renderer.GetActiveCamera()
    matrix = camera.GetCompositeProjectionTransformMatrix(renderer.GetTiledAspectRatio(), -1, 1)
    m = np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
    h = np.c_[points, np.ones(len(points))] @ m.T  # (n, 4) clip coordinates
    ndc = h[:, :2] / np.where(np.abs(h[:, 3:]) < 1e-12, 1e-12, h[:, 3:])
    x0, y0, x1, y1 = renderer.GetViewport()
    w, h_px = renderer.GetRenderWindow().GetSize()
    return np.stack(
        [(x0 + (ndc[:, 0] + 1) / 2 * (x1 - x0)) * w, (y0 + (ndc[:, 1] + 1) / 2 * (y1 - y0)) * h_px],
        1,
    )
