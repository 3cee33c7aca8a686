"""What a diff frame adds to its two linked panels: where the prompts part.

Each token is coloured by its hidden-state divergence from its counterpart (a colour bar in
those units); rings mark the changed tokens (orange: substituted, green: only in B, it
appears; red: only in A, it vanishes); an arrow runs from each aligned token's place in A to its
place in B, lengthened by a stated factor so the largest move is clearly visible; the chart
marks the threshold and the first layer where the changed token and the tokens after it pass it.
"""

from __future__ import annotations

import numpy as np
import pyvista as pv
from vtkmodules.util.numpy_support import vtk_to_numpy

from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.diff_tokens import ONLY_HERE, changes, first_change, first_over
from layerscan.geometry.scan_file import diverges, token_centroids
from layerscan.geometry.scene.legend import Scale
from layerscan.geometry.scene.overlays import DIM, Label, LayerChart, Quads, nice_ceiling
from layerscan.geometry.scene.style import DIFF_CHART, DIFF_CHART_KEY
from layerscan.geometry.scene.tokens import TokenArrows

RING_COLORS = {
    "changed": (1.0, 0.62, 0.1),
    "appears": (0.25, 0.95, 0.45),
    "vanishes": (1.0, 0.3, 0.3),
}
"""Ring colour of a substituted token, a token only in B, a token only in A."""
RING_POINTS = 32
"""Points of one ring's polyline."""
ARROW_TARGET = 0.35
"""The longest A→B move is drawn at least this share of the layout's mean radius."""
MIN_MOVE = 1e-4
"""Moves below this share of the radius are float noise (a shared prefix computed in two
sequences), never lengthened into arrows."""
ARROW_COLOR = (0.92, 0.94, 0.98)


def token_colour_values(diff: DiffScan, top: float) -> list[np.ndarray]:
    """Per panel (n_layers+1, n_particles) float32 in [0, 1]: each particle's token divergence."""
    out = []
    for scan, values in ((diff.a, diff.token_divergence_a), (diff.b, diff.token_divergence_b)):
        owner = scan.particle_tokens[0]  # (n_layers+1, n_particles)
        per = np.take_along_axis(values, owner, axis=1)  # (n_layers+1, n_particles)
        out.append(np.clip(per / top, 0, 1).astype(np.float32))
    return out


def divergence_scale(diff: DiffScan) -> tuple[float, Scale]:
    """The colour bar of a diff: each token's relative hidden-state distance."""
    pairs = np.asarray(diff.aligned_tokens)
    aligned = diff.token_divergence_b[:, pairs[:, 1]] if len(pairs) else diff.token_divergence_b
    # the aligned tokens span the colours; a changed token (far from everything) saturates
    # never below the threshold: float noise of a shared prefix (~1e-6) is not a colour range
    top = nice_ceiling(max(float(np.percentile(aligned, 99)), diff.threshold))
    norm = diff.a.settings.get("normalization", "captured")
    return top, Scale(
        "colour = each token's hidden-state distance to its counterpart in the other prompt",
        f"|h_A − h_B| / |h|\n(hidden states,\n{norm};\nchanged tokens\nsaturate)",
        top,
    )


def arrow_factor(moves: np.ndarray, radius: float) -> float:
    """Arrows are drawn this many times (1, 2, 2.5, 5, 10, ...) their true length, so that the
    longest of `moves` (one layer's A→B moves) is at least ARROW_TARGET of `radius`."""
    longest = float(np.max(moves, initial=0.0))
    if longest <= MIN_MOVE * radius or longest >= ARROW_TARGET * radius:
        return 1.0  # nothing moved (float noise is not magnified), or the move shows as it is
    return nice_ceiling(ARROW_TARGET * radius / longest)


def onset_marks(diff: DiffScan) -> tuple[list[int], str]:
    """The layers a diff's chart marks, and their key: the first layer where the changed
    tokens pass the threshold, and where the median token after the change does."""
    n_a, n_b = len(diff.a.tokens), len(diff.b.tokens)
    pairs = np.asarray(diff.aligned_tokens, np.int64)
    lines = [f"orange: threshold {diff.threshold:g}"]
    marks = []
    changed_b = [j for _, run in changes(pairs, n_a, n_b) for j in run]
    if changed_b:
        first = first_over(diff.token_divergence_b[:, changed_b], diff.threshold)
        if (first >= 0).any():
            layer = int(first[first >= 0].min())
            marks.append(layer)
            lines.append(f"changed token passes it at {layer}")
    _, start_b = first_change(pairs, n_a, n_b)
    after = pairs[pairs[:, 1] >= start_b, 1]
    if len(after):
        first = first_over(diff.token_divergence_b[:, after], diff.threshold)
        hit = first[first >= 0]
        if len(hit):
            marks.append(int(np.median(hit)))
            lines.append(
                f"the median later token at {int(np.median(hit))} ({len(hit)}/{len(after)})"
            )
        else:
            lines.append("no later token passes it")
    return marks, " · ".join(lines)


def _places(scan) -> np.ndarray:
    """(n_layers+1, n_tokens, 3) each token's place (its particles' centroid)."""
    n = len(scan.tokens)
    return np.stack(
        [
            token_centroids(p, o, n)[0]
            for p, o in zip(scan.positions[0], scan.particle_tokens[0], strict=True)
        ]
    )


class DiffMarks:
    """Rings, arrows, the scale note and the chart marks of a diff scene.

    Args:
        scene: the Scene (two panels, `overlays`, `plotter`), with its diff as `source`.
        size: overlay font size.
        viewport_px: one panel's size in pixels.
        radius: the layout's mean radius (rings and arrow heads scale with it).
    """

    def __init__(self, scene, size: int, viewport_px: tuple[int, int], radius: float) -> None:
        diff: DiffScan = scene.source
        self.diff, self.scene = diff, scene
        n_a, n_b = len(diff.a.tokens), len(diff.b.tokens)
        self.pairs = np.asarray(diff.aligned_tokens, np.int64)
        self.changes = changes(self.pairs, n_a, n_b)
        """[(A range, B range)] the runs of changed tokens, in order."""
        self.selected = 0
        self.factor, self.radius = 1.0, radius
        self.ring_radius = 0.09 * radius
        status_a, status_b = diff.status
        self.rings = []
        for i, status in enumerate((status_a, status_b)):
            tokens = np.flatnonzero(status)
            kinds = [
                ("vanishes" if i == 0 else "appears") if status[t] == ONLY_HERE else "changed"
                for t in tokens
            ]
            rgb = np.array([RING_COLORS[k] for k in kinds]).reshape(-1, 3)
            self.rings.append(_Rings(scene.plotter, i, tokens, rgb))
        self.arrows = TokenArrows(np.tile(ARROW_COLOR, (len(self.pairs), 1)), 0.08 * radius)
        for i in range(2):
            scene.plotter.subplot(0, i)
            scene.plotter.add_mesh(
                self.arrows.mesh,
                scalars="rgb",
                rgb=True,
                line_width=3,
                lighting=False,
                pickable=False,
                name="arrows",
                render_lines_as_tubes=False,
                show_scalar_bar=False,
            )
        self.chart = self._chart(size, viewport_px)
        self.note = Label(scene.overlays[0], 0.02, 0.875, int(size * 0.85), DIM)

    def _chart(self, size: int, viewport_px: tuple[int, int]) -> LayerChart:
        diff = self.diff
        peak = (
            f"peak {diff.a.layer_names[diff.peak_layer]}"
            if diverges(diff.divergence)
            else "aligned tokens do not diverge"
        )
        box = DIFF_CHART
        chart = LayerChart(
            self.scene.overlays[1],
            diff.divergence,
            size,
            box,
            f"divergence |h_A − h_B| / |h| · {peak}",
            viewport_px,
            floor=diff.threshold,
        )
        x0, y0, x1, y1 = box
        top = nice_ceiling(max(float(np.max(diff.divergence)), diff.threshold))  # as the chart
        thr_y = y0 + (y1 - y0) * min(diff.threshold / top, 1.0)
        self.threshold_line = Quads(self.scene.overlays[1], (1.0, 0.62, 0.1), opacity=0.7)
        self.threshold_line.set_rects([[x0, thr_y - 0.0015, x1, thr_y + 0.0015]])
        marks, text = self.first_layers()
        n = len(diff.divergence)
        self.layer_marks = Quads(self.scene.overlays[1], (1.0, 0.62, 0.1), opacity=0.9)
        xs = [x0 + (x1 - x0) * layer / max(n - 1, 1) for layer in marks]
        self.layer_marks.set_rects([[x - 0.002, y0 - 0.02, x + 0.002, y1] for x in xs])
        self.marks_label = Label(
            self.scene.overlays[1], x0, y0 - DIFF_CHART_KEY, int(size * 0.8), DIM
        )
        self.marks_label.set(text)
        return chart

    def first_layers(self) -> tuple[list[int], str]:
        """The layers the chart marks, and their key (see `onset_marks`)."""
        return onset_marks(self.diff)

    def current_tokens(self) -> tuple[int | None, int | None]:
        """The selected change's first token in A and in B (None where the side has none)."""
        if not self.changes:
            return None, None
        run_a, run_b = self.changes[self.selected % len(self.changes)]
        return (run_a.start if run_a else None), (run_b.start if run_b else None)

    def next_change(self) -> str:
        """Select the next changed run (the viewer's key); returns its description."""
        if not self.changes:
            return "no changed tokens"
        self.selected = (self.selected + 1) % len(self.changes)
        run_a, run_b = self.changes[self.selected]
        text_a = "".join(self.diff.a.tokens[i] for i in run_a)
        text_b = "".join(self.diff.b.tokens[j] for j in run_b)
        return f"change {self.selected + 1}/{len(self.changes)}: {text_a!r} → {text_b!r}"

    def update(self, places: list[np.ndarray], layer: float) -> None:
        """Move arrows and rings to the panels' current token places; refresh the readout.

        Args:
            places: per panel (n_tokens, 3) token places at the shown layer.
        """
        start = places[0][self.pairs[:, 0]]  # (n_pairs, 3)
        end = places[1][self.pairs[:, 1]]
        moves = np.linalg.norm(end - start, axis=-1)  # (n_pairs,)
        self.factor = arrow_factor(moves, self.radius)
        self.arrows.set(start, start + self.factor * (end - start))
        longest = float(moves.max(initial=0.0))
        scale = f", drawn ×{self.factor:g}" if self.factor != 1 else ""
        self.note.set(
            f"arrows: each aligned token's place in A → in B{scale}\n"
            f"longest true move {longest:.2g} = {longest / max(self.radius, 1e-12):.0%} of the "
            "radius\n"
            "rings: orange changed · green only in B (appears) · red only in A (vanishes)"
        )
        self._figures(int(round(layer)))
        camera = self.scene.plotter.camera
        for ring, where in zip(self.rings, places, strict=True):
            ring.set(where, camera, self.ring_radius)
        if self.chart is not None and self.diff.cka is not None:
            near = int(round(layer))
            models = self.diff.a.model_id != self.diff.b.model_id
            if models:
                self.chart.readout.set(
                    f"layer {near}: {self.diff.divergence[near]:.3g} · "
                    f"linear CKA {self.diff.cka[near]:.3f}"
                )

    def _figures(self, near: int) -> None:
        """Each panel's figures beside the fair baseline of one shared space: a joint PCA-3."""
        diff = self.diff
        if diff.joint_trust is None or not self.scene.options.show_overlays:
            return
        drawn = diff.fallback_layers is not None and bool(diff.fallback_layers[near])
        for i, (panel, scan) in enumerate(zip(self.scene.panels, (diff.a, diff.b), strict=True)):
            panel.fig.set(
                f"R² {scan.reconstruction_r2[0, near]:.2f}   token trust "
                f"{scan.token_trust[0, near]:.2f} (joint PCA-3 of A+B "
                f"{diff.joint_trust[i, near]:.2f})"
                f"   distance corr. {scan.distance_correlation[0, near]:.2f} (joint "
                f"{diff.joint_correlation[i, near]:.2f})" + ("   = joint PCA-3" if drawn else "")
            )


class _Rings:
    """Circles facing the camera around some tokens' places, in one panel."""

    def __init__(self, plotter: pv.Plotter, panel: int, tokens: np.ndarray, rgb: np.ndarray):
        self.tokens = tokens
        n, m = len(tokens), RING_POINTS
        points = np.zeros((max(n, 1) * m, 3), np.float32)
        if n:
            cells = np.c_[
                np.full(n, m + 1), np.arange(n)[:, None] * m + np.arange(m), np.arange(n) * m
            ]  # closed polylines
            self.mesh = pv.PolyData(points, lines=cells.ravel())
            self.mesh.cell_data["rgb"] = (rgb * 255).astype(np.uint8)
        else:
            self.mesh = pv.PolyData(points)
        plotter.subplot(0, panel)
        self.actor = plotter.add_mesh(
            self.mesh,
            scalars="rgb" if n else None,
            rgb=bool(n),
            line_width=4,
            lighting=False,
            pickable=False,
            name="rings",
            show_scalar_bar=False,
        )
        self.actor.SetVisibility(bool(n))
        self.centres = np.zeros((n, 3))

    def set(self, places: np.ndarray, camera, radius: float) -> None:
        """Rings around `places[tokens]`, in the plane facing the camera."""
        if not len(self.tokens):
            return
        self.centres = places[self.tokens]
        view = np.subtract(camera.focal_point, camera.position)
        view /= max(np.linalg.norm(view), 1e-12)
        right = np.cross(view, camera.up)
        right /= max(np.linalg.norm(right), 1e-12)
        up = np.cross(right, view)
        angle = np.linspace(0, 2 * np.pi, RING_POINTS, endpoint=False)
        circle = np.cos(angle)[:, None] * right + np.sin(angle)[:, None] * up  # (m, 3)
        pts = self.centres[:, None] + radius * circle[None]  # (n, m, 3)
        vtk_pts = self.mesh.GetPoints()
        vtk_to_numpy(vtk_pts.GetData())[:] = pts.reshape(-1, 3)
        vtk_pts.Modified()


def shared_colour_slots(diff: DiffScan) -> list[tuple[np.ndarray, int]]:
    """Colour slots of A's and of B's tokens: an aligned pair (the same token in both prompts)
    shares one, every other token has its own (see Panel's `colour_slots`)."""
    n_a, n_b = len(diff.a.tokens), len(diff.b.tokens)
    pairs = np.asarray(diff.aligned_tokens, np.int64).reshape(-1, 2)
    slots_b = np.full(n_b, -1, np.int64)
    slots_b[pairs[:, 1]] = pairs[:, 0]
    alone = slots_b < 0
    slots_b[alone] = n_a + np.arange(int(alone.sum()))
    n_colours = n_a + int(alone.sum())
    return [(np.arange(n_a), n_colours), (slots_b, n_colours)]
