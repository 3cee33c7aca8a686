"""Attention arcs between token places: each query to its top keys, the sink as a halo."""

from __future__ import annotations

import numpy as np
import pyvista as pv
from vtkmodules.vtkRenderingCore import vtkRenderer

from layerscan.core.errors import LayerscanError
from layerscan.geometry.attention_summary import SINK, Arcs, select_arcs
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene.overlays import INK, Label, token_label
from layerscan.geometry.scene.style import MARGIN, REFERENCE_HEIGHT, TOP

ARC_SEGMENTS = 16
"""Straight pieces per arc."""
ARC_LIFT = 0.3
"""How far an arc bows out, as a fraction of its length."""
WIDTH_BINS = ((0.0, 1.5), (0.15, 3.0), (0.4, 5.5))
"""(lowest weight, line width in pixels at 720p): one actor per bin."""
SINK_COLOR = (1.0, 0.82, 0.25)
ARC_COLOR = np.array([255, 190, 90], np.float32)


def arc_points(starts: np.ndarray, ends: np.ndarray, segments: int = ARC_SEGMENTS) -> np.ndarray:
    """Quadratic Bézier arcs (n, 3) → (n, segments+1, 3), bowed sideways from the vertical."""
    chord = ends - starts  # (n, 3)
    length = np.linalg.norm(chord, axis=-1, keepdims=True)
    unit = chord / np.maximum(length, 1e-9)
    up = np.array([0.0, 0.0, 1.0])
    side = up - (unit @ up)[:, None] * unit  # the vertical, made perpendicular to the chord
    flat = np.linalg.norm(side, axis=-1) < 1e-6
    side[flat] = np.array([1.0, 0.0, 0.0])
    side /= np.linalg.norm(side, axis=-1, keepdims=True)
    control = (starts + ends) / 2 + ARC_LIFT * length * side  # (n, 3)
    t = np.linspace(0.0, 1.0, segments + 1)[None, :, None]  # (1, segments+1, 1)
    return (
        (1 - t) ** 2 * starts[:, None] + 2 * t * (1 - t) * control[:, None] + t**2 * ends[:, None]
    )


def _lines(points: np.ndarray, alphas: np.ndarray) -> pv.PolyData:
    """Arcs (n, m, 3) with per-arc opacity → one PolyData of polylines with RGBA points."""
    n, m, _ = points.shape
    if n == 0:  # one hidden point: pyvista adds no empty mesh
        mesh = pv.PolyData(np.zeros((1, 3), np.float32))
        mesh.point_data["rgba"] = np.zeros((1, 4), np.uint8)
        return mesh
    mesh = pv.PolyData()
    mesh.points = points.reshape(-1, 3).astype(np.float32)
    ids = np.arange(n * m).reshape(n, m)
    mesh.lines = np.hstack([np.full((n, 1), m), ids]).ravel()
    fade = np.linspace(0.7, 1.0, m)[None, :]  # brighter towards the key: the arc's direction
    rgba = np.empty((n, m, 4), np.uint8)
    rgba[..., :3] = (ARC_COLOR[None, None] * fade[..., None]).astype(np.uint8)
    rgba[..., 3] = (255 * alphas[:, None] * np.ones((1, m))).astype(np.uint8)
    mesh.point_data["rgba"] = rgba.reshape(-1, 4)
    return mesh


class AttentionArcs:
    """The arcs of one scan's panel, rebuilt when the block, head or token changes.

    Args:
        plotter: with the panel's subplot active.
        overlay: the panel's overlay renderer (for the caption).
        scan: a scan with `attention`.
        size: font size in pixels; height: window height (line widths scale with it).
        top, mass, show_sink: pruning (see `select_arcs`).
    """

    def __init__(
        self,
        plotter: pv.Plotter,
        overlay: vtkRenderer,
        scan: Scan,
        size: int,
        height: int,
        top: int = 3,
        mass: float = 0.8,
        show_sink: bool = False,
        head: int | None = None,
    ) -> None:
        self.scan, self.top, self.mass, self.show_sink = scan, top, mass, show_sink
        self.head = head
        self.token: int | None = None
        self.visible = True
        self.arcs: Arcs | None = None
        scale = height / REFERENCE_HEIGHT
        self.meshes = [_lines(np.zeros((0, 2, 3)), np.zeros(0)) for _ in WIDTH_BINS]
        self.actors = [
            plotter.add_mesh(
                mesh,
                line_width=width * scale,
                lighting=False,
                pickable=False,
                name=f"arcs{i}",
                render_lines_as_tubes=False,
                show_scalar_bar=False,
            )
            for i, (mesh, (_, width)) in enumerate(zip(self.meshes, WIDTH_BINS, strict=True))
        ]
        for actor in self.actors:
            actor.mapper.SetScalarModeToUsePointFieldData()
            actor.mapper.SelectColorArray("rgba")
            actor.mapper.SetColorModeToDirectScalars()
            actor.mapper.ScalarVisibilityOn()
        self.halo_mesh = pv.Sphere(radius=1.0, theta_resolution=24, phi_resolution=16)
        self.halo_unit = self.halo_mesh.points.copy()
        self.halo = plotter.add_mesh(
            self.halo_mesh,
            color=SINK_COLOR,
            opacity=0.35,
            lighting=False,
            pickable=False,
            name="sink",
            show_scalar_bar=False,
        )
        self.caption = Label(overlay, MARGIN, TOP - 6.9 * size / height, int(size * 0.9), INK)
        self.compact = False
        """A narrow frame: the caption leaves out the pruning (top-k, mass) it uses."""

    def cycle_head(self) -> str:
        """Next head (after the last: the mean); returns what is shown."""
        n = self.scan.attention.n_heads
        self.head = 0 if self.head is None else (None if self.head + 1 >= n else self.head + 1)
        return self.head_name

    def mean_heads(self) -> None:
        self.head = None

    @property
    def head_name(self) -> str:
        n = self.scan.attention.n_heads
        return f"mean of {n} heads" if self.head is None else f"head {self.head}"

    def set_visible(self, visible: bool) -> None:
        self.visible = visible

    def update(self, places: np.ndarray, near: int, n_visible: int, overlays: bool) -> None:
        """Draw the arcs of the block that made layer `near` between these token places.

        Args:
            places: (n_visible, 3) token centroids of the shown frame.
            near: the scan frame shown (0 = embeddings: no attention yet).
        """
        summary = self.scan.attention
        show = self.visible and near >= 1
        if show:
            self.arcs = select_arcs(
                summary,
                near - 1,
                self.head,
                n_visible,
                self.top,
                self.mass,
                self.show_sink,
                self.token,
            )
            arcs = self.arcs
            points = arc_points(places[arcs.queries], places[arcs.keys])
            alphas = 0.45 + 0.55 * np.clip(arcs.weights / 0.5, 0, 1)
            for i, (mesh, (low, _)) in enumerate(zip(self.meshes, WIDTH_BINS, strict=True)):
                high = WIDTH_BINS[i + 1][0] if i + 1 < len(WIDTH_BINS) else np.inf
                chosen = (arcs.weights >= low) & (arcs.weights < high)
                mesh.copy_from(_lines(points[chosen], alphas[chosen]))
        for actor in self.actors:
            actor.SetVisibility(show)
        self.halo.SetVisibility(show and not self.show_sink and n_visible > 1)
        if show and n_visible > 1:
            share = self.arcs.sink_share
            # sized by the shown tokens' spread: the whole scan's (every step and layer) can
            # be many times the frame's, and the halo would cover it
            radius = float(np.ptp(places[:n_visible], axis=0).max()) / 2 or 1.0
            r = radius * (0.03 + 0.12 * np.sqrt(share))
            self.halo_mesh.points = (self.halo_unit * r + places[SINK]).astype(np.float32)
        self.caption.set_visible(overlays and self.visible)
        if not (overlays and self.visible):
            return
        if near == 0:
            self.caption.set("attention: none at the embeddings (arcs start at block 1)")
            return
        what = (
            ""
            if self.token is None
            else f" from and to “{token_label(self.scan.tokens[self.token], 16)}”"
        )
        sink = (
            ""
            if self.show_sink
            else (
                f" · sink “{token_label(self.scan.tokens[SINK], 12)}” "
                f"{'' if self.compact else 'holds '}{100 * self.arcs.sink_share:.0f}%"
                f"{'' if self.compact else ' (halo)'}"
            )
        )
        entropy = ""
        if self.head is not None:
            entropy = f" ({summary.entropy[near - 1, self.head]:.1f} bits)"
        pruning = "" if self.compact else f" (top {self.top}, to {100 * self.mass:.0f}% per query)"
        self.caption.set(
            f"attention of block {near} · {self.head_name}{entropy}{what}: arcs show "
            f"{100 * self.arcs.coverage:.0f}% of attention{pruning}{sink}"
        )


COMPACT_WIDTH = 1000
"""Frames narrower than this (pixels) get the short arcs caption."""


def attention_arcs(
    plotter: pv.Plotter, overlay: vtkRenderer, scan: Scan, options, size: int
) -> AttentionArcs | None:
    """The arcs of a single scan's panel as SceneOptions ask, or None (no attention, --no-arcs).

    Raises:
        LayerscanError: --arc-head names a head the scan does not have.
    """
    if scan.attention is None or not options.show_attention:
        return None
    n_heads = scan.attention.n_heads
    if options.arc_head is not None and not 0 <= options.arc_head < n_heads:
        raise LayerscanError(f"--arc-head {options.arc_head}: the scan has heads 0..{n_heads - 1}")
    plotter.subplot(0, 0)
    arcs = AttentionArcs(
        plotter,
        overlay,
        scan,
        size,
        options.window_size[1],
        options.arc_top_k,
        options.arc_mass,
        options.arc_sink,
        options.arc_head,
    )
    arcs.compact = options.window_size[0] < COMPACT_WIDTH
    return arcs
