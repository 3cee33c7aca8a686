"""Token groups in the scene: their centroids, their text labels in 3D, and A→B move arrows."""

from __future__ import annotations

import numpy as np
import pyvista as pv
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy
from vtkmodules.vtkCommonDataModel import vtkCellArray
from vtkmodules.vtkRenderingCore import (
    vtkRenderer,
    vtkTextActor,
    vtkTextRenderer,
)

from layerscan.geometry.scene.overlays import plain_text, polydata_2d, token_label
from layerscan.geometry.scene.placement import importance, leader_segments, place
from layerscan.geometry.scene.style import ink_on, use_font

LABEL_TEXT_LIMIT = 12
"""Longest token text of a 3D label."""
MAX_LABELS = 48
"""Most labels shown at once; the rest are thinned away."""
MAX_TRIED = 4 * MAX_LABELS
"""Most tokens tried for a label each frame (a long prompt's thousand tokens would cost the
frame rate, and could not all be shown anyway)."""
LABEL_BACKGROUND_OPACITY = 0.85
"""Opacity of a label's token-coloured box (the particles behind it show faintly)."""
LABEL_RIM = (0.055, 0.067, 0.09)
"""Colour of the rim around a label's box."""
LEADER_COLOR = (0.80, 0.84, 0.90)
"""Colour of the line from a group to a label placed away from it."""
LABEL_BAND = (0.16, 0.84)
"""Bottom and top of the band labels stay in (fractions of the panel height): clear of the
chips below and the header above."""
GROUP_EDGE = 90.0
"""Percentile of a group's on-screen offsets taken as its edge (stray particles ignored)."""
ARROW_HEAD_SIDES = 6
"""Facets of an arrow's cone head."""
ARROW_SHAFT_GREY = 225
"""Grey level of arrow shafts (the heads carry the token colour)."""


def label_font_size(size: int, n_tokens: int) -> int:
    """Label font size: the overlay size for short prompts, smaller for long ones."""
    scale = 1.0 if n_tokens <= 16 else 0.85 if n_tokens <= 48 else 0.75
    return max(8, int(round(size * scale)))


class TokenLabels:
    """Each token's text at its group (just above it, else just below, so a compact group is
    never hidden), in the token's colour, thinned so that no two labels overlap (the current
    and the latest tokens first).

    The labels are 2D text actors in the overlay renderer, placed in display pixels from the
    groups' projection through the 3D renderer's camera before every render, so they follow
    the layout and the camera.
    """

    def __init__(
        self,
        overlay: vtkRenderer,
        renderer: vtkRenderer,
        tokens: list[str],
        colors: np.ndarray,
        size: int,
    ) -> None:
        self.overlay, self.renderer = overlay, renderer
        self.font_size = label_font_size(size, len(tokens))
        self.tokens = list(tokens)
        self.band = LABEL_BAND
        self._ranks: dict[int, list[int]] = {}
        self.leaders = LeaderLines(overlay)
        texts = [plain_text(token_label(t, LABEL_TEXT_LIMIT)) for t in tokens]
        measurer, box = vtkTextRenderer(), [0, 0, 0, 0]
        self.actors: list[vtkTextActor] = []
        extents = []
        for text, color in zip(texts, colors, strict=True):
            actor = vtkTextActor()
            actor.SetInput(text)
            actor.GetPositionCoordinate().SetCoordinateSystemToDisplay()
            prop = actor.GetTextProperty()
            prop.SetFontSize(self.font_size)
            use_font(prop, bold=True)
            # like the token's chip: its colour behind dark or light text
            prop.SetColor(*ink_on(color))
            prop.SetBackgroundColor(*color)
            prop.SetBackgroundOpacity(LABEL_BACKGROUND_OPACITY)
            prop.SetFrame(True)  # a dark rim sets the box apart from its own particles
            prop.SetFrameColor(*LABEL_RIM)
            prop.SetFrameWidth(2)
            prop.SetJustificationToCentered()
            prop.SetVerticalJustificationToCentered()
            actor.SetVisibility(False)
            overlay.AddViewProp(actor)
            measurer.GetBoundingBox(prop, text, box, 72)
            extents.append((box[1] - box[0] + 6, box[3] - box[2] + 4))
            self.actors.append(actor)
        self.extents = np.asarray(extents, np.float64).reshape(-1, 2)  # (n_tokens, 2) px
        self.places = np.zeros((len(tokens), 3))
        self.points = np.zeros((0, 3))
        self.groups: list[np.ndarray] = [np.zeros(0, np.int64)] * len(tokens)
        self.order: list[int] = []
        self.enabled = True
        self.shown: list[int] = []
        self.boxes = np.zeros((0, 4))
        """(len(shown), 4) display-pixel boxes x0, y0, x1, y1 of the shown labels."""
        overlay.AddObserver("StartEvent", self._thin)

    def set_places(
        self,
        places: np.ndarray,
        counts: np.ndarray,
        current: int | None,
        points: np.ndarray,
        particle_tokens: np.ndarray,
    ) -> None:
        """The groups the labels go with.

        Args:
            places: (n_tokens_step, 3) each token's centroid.
            counts: (n_tokens_step,) particles per token.
            current: the highlighted token, labelled first.
            points: (n_particles, 3) the layout drawn.
            particle_tokens: (n_particles,) token of each particle.
        """
        n = len(places)
        self.places[:n] = places
        self.points = points
        by_token = np.argsort(particle_tokens, kind="stable")
        bounds = np.searchsorted(particle_tokens[by_token], np.arange(n + 1))
        self.groups = [by_token[bounds[i] : bounds[i + 1]] for i in range(n)]
        if n not in self._ranks:
            self._ranks[n] = importance(self.tokens[:n], None)
        ranked = [current, *self._ranks[n]] if current is not None else self._ranks[n]
        has = np.asarray(counts[:n]) > 0
        self.order = [i for i in dict.fromkeys(ranked) if i < n and has[i]]

    def set_enabled(self, enabled: bool) -> None:
        self.enabled = enabled
        if not enabled:
            for actor in self.actors:
                actor.SetVisibility(False)
            self.leaders.set_segments(np.zeros((0, 2, 2)))
            self.shown = []

    def project(self, places: np.ndarray) -> np.ndarray:
        """(n, 3) world points → (n, 2) display pixels of the 3D renderer (origin bottom left)."""
        renderer = self.renderer
        camera = renderer.GetActiveCamera()
        if self.overlay.GetActiveCamera() is not camera:
            self.overlay.SetActiveCamera(camera)  # linked views swap cameras after we start
        matrix = camera.GetCompositeProjectionTransformMatrix(renderer.GetTiledAspectRatio(), -1, 1)
        m = np.array([[matrix.GetElement(i, j) for j in range(4)] for i in range(4)])
        h = np.c_[places, np.ones(len(places))] @ m.T  # (n, 4) clip coordinates
        ndc = h[:, :2] / np.where(np.abs(h[:, 3:]) < 1e-12, 1e-12, h[:, 3:])
        x0, y0, x1, y1 = renderer.GetViewport()
        w, h_px = renderer.GetRenderWindow().GetSize()
        return np.stack(
            [
                (x0 + (ndc[:, 0] + 1) / 2 * (x1 - x0)) * w,
                (y0 + (ndc[:, 1] + 1) / 2 * (y1 - y0)) * h_px,
            ],
            1,
        )

    def _thin(self, *_) -> None:
        if not self.enabled:
            return
        order = self.order[:MAX_TRIED]
        shown: list[int] = []
        boxes = np.zeros((0, 4))
        segments = np.zeros((0, 2, 2))
        if order and len(self.points):
            xy = self.project(self.places[order])  # (len(order), 2)
            point_y = self.project(self.points)[:, 1]  # (n_particles,)
            tops, bottoms = group_edges([self.groups[i] for i in order], point_y, xy[:, 1])
            x0, y0, x1, y1 = self.renderer.GetViewport()
            w, h = self.renderer.GetRenderWindow().GetSize()
            fy0, fy1 = self.band
            bounds = (x0 * w, (y0 + fy0 * (y1 - y0)) * h, x1 * w, (y0 + fy1 * (y1 - y0)) * h)
            local = np.arange(len(order))
            fit = place(xy, self.extents[order], tops, bottoms, list(local), bounds, MAX_LABELS)
            shown = [order[k] for k in fit.shown]
            for k in fit.shown:
                self.actors[order[k]].GetPositionCoordinate().SetValue(*fit.centres[k])
            half = self.extents[shown] / 2
            centres = fit.centres[fit.shown].reshape(-1, 2)
            boxes = np.concatenate([centres - half, centres + half], 1)
            lead = [k for k in fit.shown if fit.leader[k]]
            segments = leader_segments(xy, fit.centres, self.extents[order], lead)
        visible = set(shown)
        for i, actor in enumerate(self.actors):
            actor.SetVisibility(i in visible)
        self.leaders.set_segments(segments)
        self.shown = shown
        self.boxes = boxes.reshape(-1, 4)


class LeaderLines:
    """Thin lines in display pixels from a group to its label when the label sits apart."""

    def __init__(self, overlay: vtkRenderer, color=LEADER_COLOR) -> None:
        self.poly, self.actor = polydata_2d(overlay, "pixels", color, 0.8, 1.5)

    def set_segments(self, segments: np.ndarray) -> None:
        """segments: (m, 2, 2) start and end pixels of each line."""
        pts = np.zeros((2 * len(segments), 3))
        pts[:, :2] = np.asarray(segments, np.float64).reshape(-1, 2)
        self.poly.GetPoints().SetData(numpy_to_vtk(pts, deep=True))
        arr = vtkCellArray()
        offsets = numpy_to_vtkIdTypeArray(
            np.arange(0, 2 * len(segments) + 1, 2, dtype=np.int64), True
        )
        arr.SetData(
            offsets, numpy_to_vtkIdTypeArray(np.arange(2 * len(segments), dtype=np.int64), True)
        )
        self.poly.SetLines(arr)
        self.poly.Modified()

    def set_visible(self, visible: bool) -> None:
        self.actor.SetVisibility(visible)


def group_edges(
    groups: list[np.ndarray], point_y: np.ndarray, centre_y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How far each group's particles reach above and below its centre on screen.

    Args:
        groups: particle indices of each group (none empty).
        point_y: (n_particles,) display y of every particle.
        centre_y: (n_groups,) display y of each group's centre.

    Returns:
        top (>= 0) and bottom (<= 0), (n_groups,) each: the GROUP_EDGE and 100 - GROUP_EDGE
        percentiles of the particles' offsets (numpy's linear interpolation), all groups at
        once.
    """
    sizes = np.array([len(g) for g in groups])
    owner = np.repeat(np.arange(len(groups)), sizes)
    dy = point_y[np.concatenate(groups)] - centre_y[owner]
    dy = dy[np.lexsort((dy, owner))]  # each group's offsets, ascending, groups in order
    starts = np.cumsum(sizes) - sizes

    def percentile(q: float) -> np.ndarray:
        at = q / 100 * (sizes - 1)
        low = np.floor(at).astype(np.int64)
        high = np.minimum(low + 1, sizes - 1)
        return dy[starts + low] + (at - low) * (dy[starts + high] - dy[starts + low])

    return np.maximum(percentile(GROUP_EDGE), 0.0), np.minimum(percentile(100 - GROUP_EDGE), 0.0)


class TokenArrows:
    """One arrow per token from its centroid in A to its centroid in B: a line and a small cone
    head, coloured like the token; the points move in place, the topology never changes."""

    def __init__(self, colors: np.ndarray, head_length: float) -> None:
        n, s = len(colors), ARROW_HEAD_SIDES
        self.n, self.head_length = n, head_length
        per = 2 + 1 + s  # line start, line end, cone tip, cone ring
        base = np.arange(n)[:, None] * per
        lines = np.c_[np.full(n, 2), base, base + 1]  # (n, 3)
        ring = base + 3 + np.arange(s)[None]  # (n, s)
        tris = np.stack(
            [np.full((n, s), 3), np.repeat(base + 2, s, 1), ring, np.roll(ring, -1, 1)], -1
        ).reshape(-1, 4)  # (n*s, 4)
        self.mesh = pv.PolyData(
            np.zeros((n * per, 3), np.float32), lines=lines.ravel(), faces=tris.ravel()
        )
        rgb = (np.asarray(colors) * 255).astype(np.uint8)
        shaft = np.full_like(rgb, ARROW_SHAFT_GREY)  # light shafts show over same-coloured dots
        # VTK orders cells verts, lines, polys: n lines then n*s triangles
        self.mesh.cell_data["rgb"] = np.concatenate([shaft, np.repeat(rgb, s, 0)])

    def set(self, starts: np.ndarray, ends: np.ndarray) -> None:
        """Arrows from (n, 3) `starts` to (n, 3) `ends`; a zero move draws nothing visible."""
        s = ARROW_HEAD_SIDES
        d = ends - starts  # (n, 3)
        length = np.linalg.norm(d, axis=1, keepdims=True)
        unit = d / np.maximum(length, 1e-12)
        head = np.minimum(self.head_length, 0.45 * length)  # (n, 1)
        helper = np.where(np.abs(unit[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
        u = np.cross(unit, helper)
        u /= np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        v = np.cross(unit, u)
        angle = np.linspace(0, 2 * np.pi, s, endpoint=False)
        radius = 0.4 * head[:, :, None]  # (n, 1, 1)
        ring = (ends - unit * head)[:, None] + radius * (
            np.cos(angle)[None, :, None] * u[:, None] + np.sin(angle)[None, :, None] * v[:, None]
        )
        pts = np.concatenate(
            [starts[:, None], (ends - unit * head)[:, None], ends[:, None], ring], 1
        ).reshape(-1, 3)  # (n * (3 + s), 3)
        vtk_pts = self.mesh.GetPoints()
        vtk_to_numpy(vtk_pts.GetData())[:] = pts
        vtk_pts.Modified()
