"""Draw a `JointView`: queries (spheres) and keys (cubes) coloured by position, lines from the
selected query to its top keys; one head (PNG), every head of a block (small multiples) or one
head through the blocks (MP4)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import numpy as np
import pyvista as pv

from layerscan.core.errors import LayerscanError
from layerscan.core.outputs import atomic_path
from layerscan.geometry.joint_qk import JointView
from layerscan.geometry.scene.overlays import plain_text_backend, token_label
from layerscan.geometry.scene.render import FrameSink, output_kind
from layerscan.geometry.scene.scene_options import headless_egl
from layerscan.geometry.scene.style import software_theme, use_font

TOP_LINES = 3
"""Lines from the selected query to this many of its largest keys."""
FRAMES_PER_BLOCK = 12
BACKGROUND = "#0e1117"
LINE_COLOR = "#ffbe5a"
CMAP = "cool"
"""Cyan (first token) to magenta (last): no colour as dark as the background."""


def _glyphs(queries: pv.PolyData, keys: pv.PolyData, radius: float):
    """Spheres at the queries, cubes at the keys (each carrying its token's position)."""
    side = 1.2 * radius
    cube = pv.Cube(x_length=side, y_length=side, z_length=side)
    sphere = pv.Sphere(radius=radius, theta_resolution=12, phi_resolution=12)
    return (
        queries.glyph(geom=sphere, scale=False, orient=False),
        keys.glyph(geom=cube, scale=False, orient=False),
    )


class _Panel:
    """One subplot: the glyphs of one head, updated in place."""

    def __init__(self, plotter: pv.Plotter, view: JointView, head: int, font: int, single: bool):
        self.view, self.head, self.single = view, head, single
        n = view.n_tokens
        order = np.arange(n, dtype=np.float32)
        self.queries = pv.PolyData(np.zeros((n, 3), np.float32))
        self.keys = pv.PolyData(np.zeros((n, 3), np.float32))
        for cloud in (self.queries, self.keys):
            cloud["position"] = order
        self.lines = pv.PolyData(np.zeros((1, 3), np.float32))
        self.radius = 0.6
        self.q_glyph, self.k_glyph = _glyphs(self.queries, self.keys, self.radius)
        clim = (0, max(n - 1, 1))
        common = dict(scalars="position", cmap=CMAP, clim=clim, show_scalar_bar=False)
        self.q_actor = plotter.add_mesh(self.q_glyph, smooth_shading=True, **common)
        self.k_actor = plotter.add_mesh(self.k_glyph, **common)
        self.l_actor = plotter.add_mesh(self.lines, color=LINE_COLOR, line_width=4, lighting=False)
        self.title = plotter.add_text("", position="upper_left", font_size=font, color="white")
        use_font(self.title.GetTextProperty())
        self.labels_name = f"labels{head}"
        self.plotter = plotter

    def update(self, positions: np.ndarray, weights: np.ndarray, block: int, b: int) -> None:
        """Positions (2n, 3) and weights (n, n) of this head at block index b (`block` 1-based)."""
        view, n = self.view, self.view.n_tokens
        q3, k3 = positions[:n], positions[n:]
        self.queries.points = q3
        self.keys.points = k3
        q_glyph, k_glyph = _glyphs(self.queries, self.keys, self.radius)
        self.q_glyph.copy_from(q_glyph)
        self.k_glyph.copy_from(k_glyph)
        row = weights[view.query]
        top = np.argsort(-row)[:TOP_LINES]
        top = top[row[top] > 0]
        lines = pv.PolyData()
        lines.points = np.concatenate([q3[view.query][None], k3[top]]).astype(np.float32)
        lines.lines = np.ravel([[2, 0, i + 1] for i in range(len(top))])
        self.lines.copy_from(lines)
        rho, base = view.correlation[b, self.head_index], view.baseline[b, self.head_index]
        head = view.heads[self.head_index]
        figure = f"ρ(weight, 3D distance) {rho:+.2f} (PCA-3 {base:+.2f})"
        if self.single:
            picked = token_label(view.tokens[view.query], 16)
            tops = ", ".join(f"“{token_label(view.tokens[j], 10)}” {row[j]:.2f}" for j in top)
            self.title.SetText(
                2,
                f"block {block} · head {head} · {token_label(view.model_id, 40)}\n"
                f"● queries  ■ keys · colour: position (first → last, {CMAP})\n"
                f"{figure}, mean over queries: negative = attended keys are near\n"
                f"lines: query “{picked}” → its top keys {tops}",
            )
        else:
            self.title.SetText(2, f"head {head} · ρ {rho:+.2f} (PCA-3 {base:+.2f})")
        label_points = np.concatenate([q3[view.query][None], k3[top]])
        label_text = [f"q “{token_label(view.tokens[view.query], 12)}”"] + [
            f"k “{token_label(view.tokens[j], 12)}”" for j in top
        ]
        self.plotter.add_point_labels(
            label_points,
            label_text,
            name=self.labels_name,
            font_size=max(8, int(self.title.GetTextProperty().GetFontSize() * 0.9)),
            text_color="white",
            shape_color="#1c2230",
            shape_opacity=0.7,
            show_points=False,
            always_visible=True,
        )

    head_index = 0


def _camera(plotter: pv.Plotter, positions: np.ndarray) -> None:
    centre = positions.reshape(-1, 3).mean(0)
    radius = float(np.linalg.norm(positions.reshape(-1, 3) - centre, axis=-1).max()) or 1.0
    plotter.camera.focal_point = tuple(centre)
    plotter.camera.position = tuple(centre + radius * 3.2 * np.array([0.8, -0.9, 0.55]))
    plotter.camera.up = (0.0, 0.0, 1.0)
    plotter.camera.clipping_range = (radius * 0.2, radius * 8.0)


def render_joint(
    view: JointView,
    path: str | os.PathLike,
    window_size: tuple[int, int] = (1280, 720),
    fps: int = 30,
    overwrite: bool = False,
) -> tuple[Path, int, float]:
    """Write the view: a PNG (one block; small multiples for several heads) or an MP4 (one
    head through the blocks). Returns the path, the frame count and the seconds taken."""
    start = time.perf_counter()
    path = Path(path)
    kind = output_kind(path)
    if kind not in ("png", "video"):
        raise LayerscanError(f"{path}: the joint view writes .png or .mp4")
    n_blocks, n_heads = view.positions.shape[:2]
    if kind == "png" and n_blocks != 1:
        raise LayerscanError("a PNG shows one block; give --layer, or write an .mp4")
    if kind == "video" and n_heads != 1:
        raise LayerscanError("an MP4 follows one head through the blocks; give --head H")
    plain_text_backend()
    cols = math.ceil(math.sqrt(n_heads))
    rows = math.ceil(n_heads / cols)
    size = window_size if n_heads == 1 else (window_size[0], max(window_size[1], 300 * rows))
    with headless_egl(True):
        plotter = pv.Plotter(
            off_screen=True,
            window_size=list(size),
            shape=(rows, cols),
            theme=software_theme(),
            border=n_heads > 1,
        )
    try:
        plotter.set_background(BACKGROUND)
        font = 11 if n_heads == 1 else 8
        panels = []
        for h in range(n_heads):
            plotter.subplot(h // cols, h % cols)
            panel = _Panel(plotter, view, h, font, single=n_heads == 1)
            panel.head_index = h
            panels.append(panel)
            _camera(plotter, view.positions[:, h])
        if n_heads > 1:
            plotter.subplot(0, 0)
            caption = plotter.add_text(  # fixed-size text: a corner annotation shrinks it
                f"block {view.blocks[0]} · every head · {token_label(view.model_id, 40)}\n"
                f"● queries ■ keys, colour = position\n"
                f"ρ: weight vs 3D distance (negative = good)",
                position=(0.012, 0.015),
                viewport=True,
                font_size=5,
                color="#b0b8c8",
            )
            use_font(caption.GetTextProperty())
        if kind == "png":
            for panel in panels:
                plotter.subplot(panel.head_index // cols, panel.head_index % cols)
                panel.update(
                    view.positions[0, panel.head_index],
                    view.weights[0, panel.head_index],
                    view.blocks[0],
                    0,
                )
            with atomic_path(path, overwrite=overwrite) as tmp:
                import imageio.v3 as iio

                plotter.render()
                iio.imwrite(tmp, plotter.screenshot(return_img=True), extension=".png")
            return path, 1, time.perf_counter() - start
        return _movie(plotter, panels[0], view, path, size, fps, overwrite, start)
    finally:
        plotter.close()


def _movie(plotter, panel, view, path, size, fps, overwrite, start) -> tuple[Path, int, float]:
    """Glide between the blocks' aligned layouts, holding each block a moment."""
    plan = []
    for b in range(len(view.blocks)):
        plan += [(b, 0.0)] * (FRAMES_PER_BLOCK // 2)
        if b + 1 < len(view.blocks):
            plan += [(b, t / FRAMES_PER_BLOCK) for t in range(1, FRAMES_PER_BLOCK)]
    w, h = size
    with atomic_path(path, overwrite=overwrite) as tmp:
        sink = FrameSink(tmp, "video", (w, h), fps, "high")
        try:
            for b, t in plan:
                a = view.positions[b, 0]
                z = view.positions[min(b + 1, len(view.blocks) - 1), 0]
                near = b if t < 0.5 else min(b + 1, len(view.blocks) - 1)
                panel.update((1 - t) * a + t * z, view.weights[near, 0], view.blocks[near], near)
                plotter.render()
                image = plotter.screenshot(return_img=True)  # (h, w, 3) top row first
                sink.put(np.ascontiguousarray(image[::-1]))
            sink.close()
        except BaseException:
            sink.abort()
            raise
    return path, len(plan), time.perf_counter() - start
