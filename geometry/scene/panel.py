"""One scan's actors in one renderer: particles, lines, surfaces, token labels and overlays."""

from __future__ import annotations

import numpy as np
import pyvista as pv
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkRenderingCore import vtkRenderer

from layerscan.geometry.scan_file import Scan, token_centroids
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.caption import caption_for, warning_for
from layerscan.geometry.scene.chips import TokenChips
from layerscan.geometry.scene.figures_text import figures_text
from layerscan.geometry.scene.legend import Legend, Scale, surface_caption, text_width
from layerscan.geometry.scene.lens_panel import LensPanel
from layerscan.geometry.scene.meshes import surface_polydata
from layerscan.geometry.scene.overlays import DIM, INK, Label, token_label
from layerscan.geometry.scene.style import (
    CHIPS_TOP,
    CHIPS_TOP_TITLED,
    LINE_COLOR,
    LINE_OPACITY,
    MARGIN,
    SURFACE_COLOR,
    TOP,
    bake_shading,
    clear_band,
    colors_by_position,
    lookup_table,
    token_colors,
    token_lookup_table,
)
from layerscan.geometry.scene.tokens import TokenLabels

CONTINUOUS_MODES = ("slot", "density", "displacement")
CAPTION_WIDTH = 0.76
"""Share of the panel's width the caption may fill (the logit lens sits at the right)."""
WARN = (1.0, 0.72, 0.3)
"""Colour of the low-R² warning."""
"""Colour modes drawn through a continuous colour map (token mode is categorical)."""


class Panel:
    """The 3D actors and overlays of one scan: 3D in `plotter.renderer`, 2D in `overlay`.

    Args:
        plotter: the plotter, with the panel's subplot active.
        overlay: a renderer on a higher layer over the same viewport: drawn last, so text,
            chips and charts are never covered by particles.
        scan: the scan drawn.
        opts: SceneOptions.
        size: overlay font size in points.
        viewport_px: the panel's width and height in pixels.
        displacement: (n_layers+1, n_particles) displacement scaled to [0, 1].
        scales: colour bar per continuous mode in real units (no entry: no bar).
        differing: token positions that differ from the other prompt of a diff.
        title: "A" / "B" in a diff, else None.
        legend: draw the colour and surface key in this panel.
    """

    def __init__(
        self,
        plotter: pv.Plotter,
        overlay: vtkRenderer,
        scan: Scan,
        opts,
        size: int,
        viewport_px: tuple[int, int],
        displacement: np.ndarray,
        scales: dict[str, Scale],
        differing: list[int] | None,
        title: str | None,
        legend: bool = True,
        colour_slots: tuple[np.ndarray, int] | None = None,
    ) -> None:
        """`colour_slots`: (slot of each token, number of slots) when tokens share colours
        across panels (a diff's aligned pairs); default: one colour per token."""
        self.scan, self.opts, self.overlay = scan, opts, overlay
        renderer = plotter.renderer
        n_particles, n_tokens = scan.n_particles, len(scan.tokens)
        last = scan.n_steps - 1
        first = scan.positions[last, 0]  # (n_particles, 3)
        axis = np.linalg.svd(first - first.mean(0), full_matrices=False)[2][0]
        rank = np.argsort(np.argsort((first - first.mean(0)) @ axis))
        self.scalars = {
            "slot": np.repeat(rank[None] / max(n_particles - 1, 1), scan.n_layers + 1, 0).astype(
                np.float32
            ),
            "displacement": displacement,
        }
        slots, n_colours = colour_slots or (np.arange(n_tokens), n_tokens)
        # token i ↦ (slot + 0.5) / n_colours, the middle of its entry in the categorical table
        self.token_values = ((slots[scan.particle_tokens] + 0.5) / max(n_colours, 1)).astype(
            np.float32
        )  # (n_steps, n_layers+1, n_particles)
        self.token_rgb = token_colors(n_colours)[slots]  # (n_tokens, 3)
        self._density: dict[int, np.ndarray] = {}
        self.cloud = pv.PolyData(np.array(first, np.float32))
        self.cloud.point_data["color"] = np.zeros(n_particles, np.float32)
        self.luts = {mode: lookup_table(mode) for mode in CONTINUOUS_MODES}
        self.luts["token"] = token_lookup_table(n_colours)
        self.points_actor = plotter.add_mesh(
            self.cloud,
            scalars="color",
            clim=(0, 1),
            cmap="turbo",
            style="points",
            render_points_as_spheres=True,
            point_size=opts.point_size,
            show_scalar_bar=False,
            lighting=False,
            name="points",
        )
        self.lines = pv.PolyData()
        self.lines.SetPoints(self.cloud.GetPoints())
        self.lines_actor = plotter.add_mesh(
            self.lines,
            color=LINE_COLOR,
            opacity=LINE_OPACITY,
            line_width=1,
            lighting=False,
            name="lines",
            show_scalar_bar=False,
            pickable=False,
        )
        self._line_cells: dict[tuple[int, int], np.ndarray] = {}
        self._surfaces: dict[tuple[int, int], pv.PolyData] = {}
        self.surface_actors = [
            plotter.add_mesh(
                pv.PolyData(),
                color=SURFACE_COLOR,
                opacity=opts.surface_opacity,
                smooth_shading=True,
                specular=0.3,
                name=f"surface{i}",
                show_scalar_bar=False,
                culling="back",
                pickable=False,
                lighting=not opts.baked_shading,
            )
            for i in range(2)
        ]
        if opts.baked_shading:
            for actor in self.surface_actors:
                actor.mapper.SetScalarModeToUsePointFieldData()
                actor.mapper.SelectColorArray("shade")
                actor.mapper.SetColorModeToDirectScalars()
                actor.mapper.ScalarVisibilityOn()
        bottom = opts.overlay_bottom
        chips_top = bottom + (CHIPS_TOP if title is None else CHIPS_TOP_TITLED)
        self.chips = TokenChips(
            overlay, scan.tokens, size, viewport_px, y_top=chips_top, differing=differing
        )
        self.labels = TokenLabels(overlay, renderer, scan.tokens, self.token_rgb, int(size * 0.95))
        if title is None:  # labels stay clear of the header and the keys
            self.labels.band = clear_band(*self.labels.band, size, viewport_px[1], bottom)
        self.places = np.zeros((0, 3))
        self.legend = None
        if colors_by_position(n_colours):  # too many tokens for distinct colours
            scales = {
                **scales,
                "token": Scale(
                    "colour = token position in the prompt (first → last); labels name the tokens",
                    "token\nposition",
                    float(n_tokens - 1),
                ),
            }
        if legend:
            # a diff keeps the figures line just above the prompt title: go above it
            legend_y = chips_top + (0.012 if title is None else 0.035 + 3.0 * size / viewport_px[1])
            self.legend = Legend(
                overlay, size, viewport_px, legend_y, scales, surface_caption(scan.settings)
            )
        self.head = Label(overlay, MARGIN, TOP, int(size * 1.5), INK, bold=True)
        self.sub = Label(overlay, MARGIN, TOP - 2.3 * size / viewport_px[1], size, DIM)
        self.fig = Label(overlay, MARGIN, TOP - 3.9 * size / viewport_px[1], int(size * 0.9), DIM)
        # the figures line in words (or the PCA-fallback note), and a low-R² warning
        small = max(8, int(size * 0.8))
        self.caption = Label(overlay, MARGIN, TOP - 5.3 * size / viewport_px[1], small, DIM)
        room = (CAPTION_WIDTH if title is None else 0.6) * viewport_px[0]  # a diff's lens is nearer
        self.caption.set(caption_for(scan, lambda text: text_width(text, small) <= room))
        self.warning = Label(overlay, MARGIN, TOP - 6.5 * size / viewport_px[1], small, WARN)
        self.warning.set(warning_for(scan) or "")
        if self.warning._text and title is None:  # labels stay below the warning too
            lo, hi = self.labels.band
            self.labels.band = (lo, hi - 1.3 * size / viewport_px[1])
        pick_y = TOP - (7.7 if self.warning._text else 6.5) * size / viewport_px[1]
        self.pick = Label(overlay, MARGIN, pick_y, int(size * 0.9), INK)
        self.prompt_title = None
        if title is not None:
            self.prompt_title = Label(
                overlay,
                MARGIN,
                bottom + CHIPS_TOP_TITLED + 0.2 * size / viewport_px[1],
                size,
                INK,
                bold=True,
                valign="bottom",
            )
            self.prompt_title.set(title)
        self.lens = None
        if scan.lens_tokens is not None and scan.lens_probs is not None:
            self.lens = LensPanel(overlay, scan.lens_probs.shape[-1], size, viewport_px)
        # the figures line keeps left of the lens (drawn text runs ~1.2x the measured width)
        fig_room = (
            room if self.lens is None else min(room, (self.lens.left - MARGIN) * viewport_px[0])
        )
        longest = max(
            (figures_text(scan, scan.n_steps - 1, layer) for layer in range(scan.n_layers + 1)),
            key=len,
        )
        self._short_figures = 1.2 * text_width(longest, int(size * 0.9)) > fig_room  # once
        self._color_mode = ""
        self._line_key: tuple | None = None
        self._surface_key: tuple | None = None

    def density(self, step: int) -> np.ndarray:
        if step not in self._density:
            scan = self.scan
            self._density[step] = fr.local_density(scan.positions[step], scan.particle_tokens[step])
        return self._density[step]

    def surface_mesh(self, step: int, layer: int) -> pv.PolyData:
        key = (step, layer)
        if key not in self._surfaces:
            mesh = surface_polydata(self.scan.surfaces[step][layer])
            if mesh.n_cells:
                # Consistent outward winding, so back faces can be culled: a translucent
                # shell drawn once per pixel instead of twice.
                mesh = mesh.compute_normals(
                    auto_orient_normals=True, consistent_normals=True, split_vertices=False
                )
                if self.opts.baked_shading:
                    mesh.point_data["shade"] = bake_shading(mesh.point_data["Normals"])
            self._surfaces[key] = mesh
        return self._surfaces[key]

    def update(
        self,
        step: int,
        layer: float,
        mode: str,
        current_token: int | None,
        header: tuple[str, str] | None,
    ) -> None:
        scan, opts = self.scan, self.opts
        step = min(step, scan.n_steps - 1)
        lo, hi, t = fr.layer_pair(layer, scan.n_layers)
        near = hi if t >= 0.5 else lo
        pts = fr.interpolate(scan.positions[step], layer)  # (n_particles, 3)
        vtk_pts = self.cloud.GetPoints()
        vtk_to_numpy(vtk_pts.GetData())[:] = pts
        vtk_pts.Modified()
        if mode == "token":  # categorical: never blend two tokens' colours
            colors = self.token_values[step, near]
        else:
            values = self.density(step) if mode == "density" else self.scalars[mode]
            colors = fr.interpolate(values, layer)
        self.cloud.point_data["color"][:] = colors
        self.cloud.GetPointData().GetArray("color").Modified()
        if mode != self._color_mode:
            self._color_mode = mode
            self.points_actor.mapper.lookup_table = self.luts[mode]
            self.chips.set_colors(self.token_rgb if mode == "token" else None)
        self.points_actor.SetVisibility(opts.show_points)
        self.lines_actor.SetVisibility(opts.show_lines)
        if opts.show_lines and self._line_key != (step, near):
            self._line_key = (step, near)
            if (step, near) not in self._line_cells:
                self._line_cells[(step, near)] = fr.neighbor_lines(
                    scan.neighbors[step, near], opts.n_links
                )
            cells = self._line_cells[(step, near)]
            self.lines.lines = cells
        if opts.show_lines:
            self.lines.Modified()
        self._update_surfaces(step, lo, hi, t)
        n_visible = scan.step_lengths[step]
        self.places, counts = token_centroids(pts, scan.particle_tokens[step, near], n_visible)
        self.labels.set_enabled(opts.show_labels and opts.show_overlays)
        self.labels.set_places(
            self.places, counts, current_token, pts, scan.particle_tokens[step, near]
        )
        if self.legend is not None:
            self.legend.show(mode, opts.show_surface, opts.show_overlays)
        if not opts.show_overlays:
            return
        self.chips.show(n_visible, current_token)
        if header is not None:
            self.head.set(header[0])
            self.sub.set(header[1])
        self.fig.set(figures_text(scan, step, near, short=self._short_figures))
        if self.lens is not None:
            tok = n_visible - 1 if current_token is None else current_token
            tok = min(tok, len(scan.lens_tokens[near]) - 1)
            probs = scan.lens_probs[near, tok]
            if probs.any():
                self.lens.show(
                    f"logit lens after “{token_label(scan.tokens[tok], 14)}”",
                    scan.lens_tokens[near][tok],
                    probs,
                )
            else:  # before the last --lens-last tokens of a long prompt
                self.lens.show(
                    f"no logit lens for “{token_label(scan.tokens[tok], 14)}” (see --lens-last)",
                    [],
                    probs[:0],
                )

    def _update_surfaces(self, step: int, lo: int, hi: int, t: float) -> None:
        show = self.opts.show_surface
        key = (step, lo, hi, round(t, 3), show)
        if key == self._surface_key:
            return
        self._surface_key = key
        # Cross-fade only in the middle third of the move, where the particles move fastest:
        # two translucent surfaces cost nearly twice one in software rendering.
        fade = float(np.clip((t - 0.35) / 0.3, 0.0, 1.0))
        for actor, layer, weight in (
            (self.surface_actors[0], lo, 1.0 - fade),
            (self.surface_actors[1], hi, fade),
        ):
            visible = show and weight > 0.05 and (layer != lo or actor is self.surface_actors[0])
            actor.SetVisibility(visible)
            if visible:
                mesh = self.surface_mesh(step, layer)
                if actor.mapper.GetInput() is not mesh:
                    actor.mapper.SetInputData(mesh)
                actor.GetProperty().SetOpacity(self.opts.surface_opacity * weight)

    def describe_particle(self, step: int, layer: float, point_id: int) -> str:
        """Which token and layer particle `point_id` shows at this moment."""
        scan = self.scan
        step = min(step, scan.n_steps - 1)
        near = fr.nearest_layer(layer, scan.n_layers)
        token = int(scan.particle_tokens[step, near, point_id])
        return (
            f"particle {point_id}: token {token} “{token_label(scan.tokens[token], 24)}”, "
            f"layer {near} ({scan.layer_names[near]})"
        )

    def set_overlays_visible(self, visible: bool) -> None:
        for label in (
            self.head,
            self.sub,
            self.fig,
            self.caption,
            self.warning,
            self.pick,
            self.prompt_title,
        ):
            if label is not None:
                label.set_visible(visible)
        self.chips.set_visible(visible)
        if self.lens is not None:
            self.lens.set_visible(visible)
