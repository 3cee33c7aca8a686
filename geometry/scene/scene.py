"""The one object owning a `pyvista.Plotter`: a scan's actors built once, updated per frame."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal, get_args

import numpy as np
import pyvista as pv
from vtkmodules.util.numpy_support import vtk_to_numpy

from layerscan.errors import LayerscanError
from layerscan.geometry.scan_file import DiffScan, Scan
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.meshes import surface_polydata
from layerscan.geometry.scene.overlays import DIM, INK, Label, LayerChart, LensPanel, TokenChips
from layerscan.geometry.scene.style import (
    CAMERA_DISTANCE,
    CHIPS_TOP,
    CHIPS_TOP_TITLED,
    DIFF_SURFACE_OPACITY,
    FONT_SIZE,
    LINE_COLOR,
    LINE_OPACITY,
    MARGIN,
    MIN_FONT_SIZE,
    MIN_PANEL_ASPECT,
    MIN_POINT_SIZE,
    POINT_SIZE,
    REFERENCE_HEIGHT,
    SURFACE_COLOR,
    SURFACE_OPACITY,
    TOP,
    VIEW_AZIMUTH,
    VIEW_ELEVATION,
    bake_shading,
    direction,
    lookup_table,
    software_theme,
    unit_scale,
)


@contextlib.contextmanager
def _headless_egl(off_screen: bool) -> Iterator[None]:
    """Without a display, make VTK open an EGL window directly (no X-server warning).

    The variable is restored afterwards so that later windows, and child processes, are not
    forced onto EGL.
    """
    key = "VTK_DEFAULT_OPENGL_WINDOW"
    if not off_screen or os.environ.get("DISPLAY") or key in os.environ:
        yield
        return
    os.environ[key] = "vtkEGLRenderWindow"
    try:
        yield
    finally:
        del os.environ[key]


ColorMode = Literal["slot", "density", "displacement"]
COLOR_MODES: tuple[str, ...] = get_args(ColorMode)
PARTS = ("points", "surface", "lines", "overlays")


@dataclass
class SceneOptions:
    """How a scan is drawn."""

    window_size: tuple[int, int] = field(default=(1280, 720), metadata={"flag": "resolution"})
    """Width and height in pixels."""
    color_mode: ColorMode | None = field(default=None, metadata={"flag": "color"})
    """slot (a fixed colour per particle), density (local 3D density), displacement (movement
    since the previous layer; A→B distance in a diff). None: displacement for diffs, else slot."""
    show_points: bool = field(default=True, metadata={"flag": "points"})
    """Draw the particles."""
    show_surface: bool = field(default=True, metadata={"flag": "surfaces"})
    """Draw each layer's density surface."""
    show_lines: bool = field(default=False, metadata={"flag": "lines"})
    """Join each particle to its nearest neighbours in the particle cloud."""
    show_overlays: bool = field(default=True, metadata={"flag": "overlays"})
    """Layer title, prompt, logit lens, faithfulness figures (and the divergence chart)."""
    point_size: float | None = None
    """Particle size in pixels; None scales with the window height."""
    surface_opacity: float | None = None
    """Surface opacity; None: 0.2, or 0.12 for diffs (two panels of overlapping blobs)."""
    n_links: int = 2
    """Neighbour lines drawn per particle."""
    background: str = "#0e1117"
    """Background colour."""
    baked_shading: bool = True
    """Light the surfaces once per vertex for the starting view instead of per pixel every
    frame (~20% faster in software rendering; the viewer turns it off for free orbiting)."""
    anti_aliasing: bool = False
    """FXAA; costs render time in software rendering."""
    overlay_bottom: float = field(default=0.0, metadata={"cli": False})
    """Free band at the bottom (fraction of the height) that the prompt keeps clear, for
    the viewer's sliders."""

    def __post_init__(self) -> None:
        w, h = self.window_size
        if not (64 <= w <= 7680 and 64 <= h <= 4320):
            raise LayerscanError(f"resolution {w}x{h} is out of range (64x64 to 7680x4320)")
        if self.point_size is not None and not self.point_size > 0:
            raise LayerscanError(f"point size must be positive, got {self.point_size}")
        if self.surface_opacity is not None and not 0 <= self.surface_opacity <= 1:
            raise LayerscanError(f"surface opacity must be in 0..1, got {self.surface_opacity}")
        if self.n_links < 0:
            raise LayerscanError(f"lines per particle must be 0 or more, got {self.n_links}")
        if self.color_mode is not None and self.color_mode not in COLOR_MODES:
            raise LayerscanError(f"unknown colour mode {self.color_mode!r}; "
                                 f"use one of {', '.join(COLOR_MODES)}")


class _Panel:
    """The 3D actors and overlays of one scan in one renderer."""

    def __init__(self, plotter: pv.Plotter, scan: Scan, opts: SceneOptions, size: int,
                 viewport_px: tuple[int, int], displacement: np.ndarray,
                 differing: list[int] | None, title: str | None) -> None:
        self.scan, self.opts = scan, opts
        renderer = plotter.renderer
        n_particles = scan.n_particles
        last = scan.n_steps - 1
        first = scan.positions[last, 0]  # (n_particles, 3)
        axis = np.linalg.svd(first - first.mean(0), full_matrices=False)[2][0]
        rank = np.argsort(np.argsort((first - first.mean(0)) @ axis))
        self.scalars = {"slot": np.repeat(rank[None] / max(n_particles - 1, 1),
                                          scan.n_layers + 1, 0).astype(np.float32),
                        "displacement": displacement}
        self._density: dict[int, np.ndarray] = {}
        self.cloud = pv.PolyData(np.array(first, np.float32))
        self.cloud.point_data["color"] = np.zeros(n_particles, np.float32)
        self.luts = {mode: lookup_table(mode) for mode in COLOR_MODES}
        self.points_actor = plotter.add_mesh(
            self.cloud, scalars="color", clim=(0, 1), cmap="turbo",
            style="points", render_points_as_spheres=True, point_size=opts.point_size,
            show_scalar_bar=False, lighting=False, name="points")
        self.lines = pv.PolyData()
        self.lines.SetPoints(self.cloud.GetPoints())
        self.lines_actor = plotter.add_mesh(self.lines, color=LINE_COLOR, opacity=LINE_OPACITY,
                                            line_width=1, lighting=False, name="lines",
                                            show_scalar_bar=False)
        self._line_cells: dict[tuple[int, int], np.ndarray] = {}
        self._surfaces: dict[tuple[int, int], pv.PolyData] = {}
        self.surface_actors = [
            plotter.add_mesh(pv.PolyData(), color=SURFACE_COLOR, opacity=opts.surface_opacity,
                             smooth_shading=True, specular=0.3, name=f"surface{i}",
                             show_scalar_bar=False, culling="back",
                             lighting=not opts.baked_shading) for i in range(2)]
        if opts.baked_shading:
            for actor in self.surface_actors:
                actor.mapper.SetScalarModeToUsePointFieldData()
                actor.mapper.SelectColorArray("shade")
                actor.mapper.SetColorModeToDirectScalars()
                actor.mapper.ScalarVisibilityOn()
        bottom = opts.overlay_bottom
        self.chips = TokenChips(renderer, scan.tokens, size, viewport_px,
                                y_top=bottom + (CHIPS_TOP if title is None else CHIPS_TOP_TITLED),
                                differing=differing)
        self.head = Label(renderer, MARGIN, TOP, int(size * 1.5), INK, bold=True)
        self.sub = Label(renderer, MARGIN, TOP - 2.3 * size / viewport_px[1], size, DIM)
        self.fig = Label(renderer, MARGIN, TOP - 3.9 * size / viewport_px[1], int(size * 0.9),
                         DIM)
        self.prompt_title = None
        if title is not None:
            self.prompt_title = Label(renderer, MARGIN, bottom + CHIPS_TOP_TITLED + 0.2 * size
                                      / viewport_px[1], size, INK, bold=True, valign="bottom")
            self.prompt_title.set(title)
        self.lens = None
        if scan.lens_tokens is not None and scan.lens_probs is not None:
            self.lens = LensPanel(renderer, scan.lens_probs.shape[-1], size, viewport_px)
        self._color_mode = ""
        self._line_key: tuple | None = None
        self._surface_key: tuple | None = None

    def density(self, step: int) -> np.ndarray:
        if step not in self._density:
            self._density[step] = fr.local_density(self.scan.positions[step])
        return self._density[step]

    def surface_mesh(self, step: int, layer: int) -> pv.PolyData:
        key = (step, layer)
        if key not in self._surfaces:
            mesh = surface_polydata(self.scan.surfaces[step][layer])
            if mesh.n_cells:
                # Consistent outward winding, so back faces can be culled: a translucent
                # shell drawn once per pixel instead of twice.
                mesh = mesh.compute_normals(auto_orient_normals=True, consistent_normals=True,
                                            split_vertices=False)
                if self.opts.baked_shading:
                    mesh.point_data["shade"] = bake_shading(mesh.point_data["Normals"])
            self._surfaces[key] = mesh
        return self._surfaces[key]

    def update(self, step: int, layer: float, mode: str, current_token: int | None,
               header: tuple[str, str] | None) -> None:
        scan, opts = self.scan, self.opts
        step = min(step, scan.n_steps - 1)
        lo, hi, t = fr.layer_pair(layer, scan.n_layers)
        near = hi if t >= 0.5 else lo
        pts = fr.interpolate(scan.positions[step], layer)  # (n_particles, 3)
        vtk_pts = self.cloud.GetPoints()
        vtk_to_numpy(vtk_pts.GetData())[:] = pts
        vtk_pts.Modified()
        values = self.density(step) if mode == "density" else self.scalars[mode]
        self.cloud.point_data["color"][:] = fr.interpolate(values, layer)
        self.cloud.GetPointData().GetArray("color").Modified()
        if mode != self._color_mode:
            self._color_mode = mode
            self.points_actor.mapper.lookup_table = self.luts[mode]
        self.points_actor.SetVisibility(opts.show_points)
        self.lines_actor.SetVisibility(opts.show_lines)
        if opts.show_lines and self._line_key != (step, near):
            self._line_key = (step, near)
            if (step, near) not in self._line_cells:
                self._line_cells[(step, near)] = fr.neighbor_lines(
                    scan.neighbors[step, near], opts.n_links)
            cells = self._line_cells[(step, near)]
            self.lines.lines = cells
        if opts.show_lines:
            self.lines.Modified()
        self._update_surfaces(step, lo, hi, t)
        if not opts.show_overlays:
            return
        self.chips.show(scan.step_lengths[step], current_token)
        if header is not None:
            self.head.set(header[0])
            self.sub.set(header[1])
        r2, tw, co, dis = (float(getattr(scan, name)[step, near]) for name in
                           ("reconstruction_r2", "trustworthiness", "continuity", "disparity"))
        self.fig.set(f"autoencoder R² {r2:.2f}   trust {tw:.2f}   continuity {co:.2f}   "
                     f"Procrustes {dis:.3f}")
        if self.lens is not None:
            tok = scan.step_lengths[step] - 1 if current_token is None else current_token
            tok = min(tok, len(scan.lens_tokens[near]) - 1)
            self.lens.show(f"logit lens after “{_short(scan.tokens[tok])}”",
                           scan.lens_tokens[near][tok], scan.lens_probs[near, tok])

    def _update_surfaces(self, step: int, lo: int, hi: int, t: float) -> None:
        show = self.opts.show_surface
        key = (step, lo, hi, round(t, 3), show)
        if key == self._surface_key:
            return
        self._surface_key = key
        # Cross-fade only in the middle third of the move, where the particles move fastest:
        # two translucent surfaces cost nearly twice one in software rendering.
        fade = float(np.clip((t - 0.35) / 0.3, 0.0, 1.0))
        for actor, layer, weight in ((self.surface_actors[0], lo, 1.0 - fade),
                                     (self.surface_actors[1], hi, fade)):
            visible = show and weight > 0.05 and (layer != lo or actor is self.surface_actors[0])
            actor.SetVisibility(visible)
            if visible:
                mesh = self.surface_mesh(step, layer)
                if actor.mapper.GetInput() is not mesh:
                    actor.mapper.SetInputData(mesh)
                actor.GetProperty().SetOpacity(self.opts.surface_opacity * weight)

    def set_overlays_visible(self, visible: bool) -> None:
        for label in (self.head, self.sub, self.fig, self.prompt_title):
            if label is not None:
                label.set_visible(visible)
        self.chips.set_visible(visible)
        if self.lens is not None:
            self.lens.set_visible(visible)


def _short(token: str, limit: int = 14) -> str:
    text = token.strip().replace("\n", "\\n") or "·"
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Scene:
    """A scan (or a diff: two panels, linked cameras) drawn once and updated in place.

    Args:
        source: a Scan, or a DiffScan for side-by-side panels.
        options: drawing options.
        off_screen: render without a window (movies, tests).
    """

    def __init__(self, source: Scan | DiffScan, options: SceneOptions | None = None,
                 off_screen: bool = True) -> None:
        opts = options or SceneOptions()
        self.is_diff = isinstance(source, DiffScan)
        self.source = source
        scans = [source.a, source.b] if self.is_diff else [source]
        for scan in scans:
            scan.validate()
        if self.is_diff and source.a.positions.shape[1:] != source.b.positions.shape[1:]:
            raise LayerscanError("the two scans of a diff have different layer or particle "
                                 "counts; recreate the diff with `layerscan diff`")
        self.scans = scans
        self.mode = opts.color_mode or ("displacement" if self.is_diff else "slot")
        w, h = opts.window_size
        size = max(MIN_FONT_SIZE, round(FONT_SIZE * h / REFERENCE_HEIGHT))
        # the scene's own copy with the sizes resolved; the caller's options stay as given
        point_size = opts.point_size
        if point_size is None:
            point_size = max(MIN_POINT_SIZE, POINT_SIZE * h / REFERENCE_HEIGHT)
        opacity = opts.surface_opacity
        if opacity is None:
            opacity = DIFF_SURFACE_OPACITY if self.is_diff else SURFACE_OPACITY
        self.options = opts = replace(opts, point_size=point_size, surface_opacity=opacity)
        with _headless_egl(off_screen):
            self.plotter = pv.Plotter(off_screen=off_screen, window_size=[w, h],
                                      shape=(1, len(scans)), border=self.is_diff,
                                      border_color="#2a3140", theme=software_theme(),
                                      lighting=None)
        self.plotter.set_background(opts.background)
        if opts.anti_aliasing:
            self.plotter.enable_anti_aliasing("fxaa", all_renderers=True)
        displacements = self._displacements()
        differing = list(source.differing_tokens) if self.is_diff else None
        self.panels: list[_Panel] = []
        for i, scan in enumerate(scans):
            self.plotter.subplot(0, i)
            # One headlight and plain alpha blending: the light kit's five lights and
            # order-independent translucency each cost more than the whole scene otherwise.
            self.plotter.renderer.add_light(pv.Light(light_type="headlight"))
            self.plotter.renderer.SetUseOIT(False)
            title = None if not self.is_diff else ("A" if i == 0 else "B")
            self.panels.append(_Panel(self.plotter, scan, opts, size, (w // len(scans), h),
                                      displacements[i], differing, title))
        self.chart = None
        if self.is_diff:
            self.plotter.subplot(0, 1)
            peak = source.a.layer_names[source.peak_layer]
            self.chart = LayerChart(self.plotter.renderer, source.divergence, size,
                                    (0.05, 0.70, 0.50, 0.86),
                                    f"A–B divergence by layer · peak {peak}")
            self.panels[1].head.set("")
            self.panels[1].sub.set("")
            for panel in self.panels:
                panel.fig.actor.SetPosition(0.02, opts.overlay_bottom + 0.16 + 2.2 * size / h)
            self.plotter.link_views()
        self._setup_camera()
        self.step = scans[0].n_steps - 1
        self.layer = 0.0
        self.azimuth = 0.0
        self.current_token: int | None = None
        self.update(self.step, 0.0)

    @property
    def n_layers(self) -> int:
        """Transformer blocks: the scene shows layers 0..n_layers (n_layers+1 states)."""
        return self.scans[0].n_layers

    @property
    def n_steps(self) -> int:
        return self.scans[0].n_steps

    def _displacements(self) -> list[np.ndarray]:
        """Per panel (n_layers+1, n_particles) displacement scaled to [0, 1]."""
        if self.is_diff:
            d = np.asarray(self.source.displacement_cloud, np.float32)
            return [unit_scale(d)] * 2
        out = []
        for scan in self.scans:
            pos = scan.positions[-1]  # (n_layers+1, n_particles, 3)
            d = np.zeros(pos.shape[:2], np.float32)
            d[1:] = np.linalg.norm(np.diff(pos, axis=0), axis=-1)
            out.append(unit_scale(d))
        return out

    def _setup_camera(self) -> None:
        pos = np.concatenate([s.positions.reshape(-1, 3) for s in self.scans])
        self.centre, radius = fr.bounds_of(pos)
        w, h = self.options.window_size
        aspect = w / len(self.scans) / h  # narrow panels need the camera further back
        self.distance = radius * CAMERA_DISTANCE * max(1.0, MIN_PANEL_ASPECT / aspect)
        self.plotter.camera.view_angle = 30.0
        self.set_azimuth(0.0)

    def set_azimuth(self, degrees: float) -> None:
        """Orbit the camera around the cloud's centre (degrees from the start view)."""
        self.azimuth = degrees
        offset = direction(VIEW_AZIMUTH + degrees, VIEW_ELEVATION)
        cam = self.plotter.camera
        cam.focal_point = tuple(self.centre)
        cam.position = tuple(self.centre + self.distance * offset)
        cam.up = (0.0, 0.0, 1.0)
        cam.clipping_range = (self.distance * 0.05, self.distance * 3.0)

    def update(self, step: int, layer: float, current_token: int | None = None) -> None:
        """Show token step `step` at fractional `layer` (current token highlighted if given)."""
        self.step = int(np.clip(step, 0, self.n_steps - 1))
        self.layer = float(np.clip(layer, 0, self.n_layers))
        self.current_token = current_token
        near = fr.nearest_layer(self.layer, self.n_layers)
        scan = self.scans[0]
        header = (f"layer {near} / {scan.n_layers}",
                  f"{scan.layer_names[near]} · {_short(scan.model_id, 40)}")
        if current_token is None and self.n_steps > 1:
            current_token = scan.step_lengths[self.step] - 1
        for i, panel in enumerate(self.panels):
            panel.update(self.step, self.layer, self.mode, current_token,
                         header if i == 0 else None)
        if self.chart is not None and self.options.show_overlays:
            self.chart.show(self.layer)

    def set_color_mode(self, mode: str) -> None:
        if mode not in COLOR_MODES:
            raise LayerscanError(f"unknown colour mode {mode!r}; use one of "
                                 f"{', '.join(COLOR_MODES)}")
        self.mode = mode
        self.update(self.step, self.layer, self.current_token)

    def cycle_color_mode(self) -> str:
        self.set_color_mode(COLOR_MODES[(COLOR_MODES.index(self.mode) + 1) % len(COLOR_MODES)])
        return self.mode

    def toggle(self, part: str) -> bool:
        """Flip one of points, surface, lines, overlays; returns the new state."""
        if part not in PARTS:
            raise LayerscanError(f"unknown part {part!r}; use one of {', '.join(PARTS)}")
        name = f"show_{part}"
        value = not getattr(self.options, name)
        self.options = replace(self.options, **{name: value})
        for panel in self.panels:
            panel.opts = self.options
        if part == "overlays":
            for panel in self.panels:
                panel.set_overlays_visible(value)
            if self.chart is not None:
                self.chart.set_visible(value)
        self.update(self.step, self.layer, self.current_token)
        return value

    def render(self) -> None:
        """Draw the current state into the window's back buffer."""
        self.plotter.render_window.Render()

    def read_pixels(self, out: np.ndarray | None = None) -> np.ndarray:
        """The last rendered image as (height, width, 3) uint8, bottom row FIRST (OpenGL order).

        Args:
            out: a reusable (height, width, 3) uint8 buffer.
        """
        w, h = self.plotter.render_window.GetSize()
        if not hasattr(self, "_vtk_buffer"):
            from vtkmodules.vtkCommonCore import vtkUnsignedCharArray

            self._vtk_buffer = vtkUnsignedCharArray()
        self.plotter.render_window.GetPixelData(0, 0, w - 1, h - 1, 0, self._vtk_buffer, 0)
        view = vtk_to_numpy(self._vtk_buffer).reshape(h, w, 3)
        if out is None:
            return view.copy()
        np.copyto(out, view)
        return out

    def image(self) -> np.ndarray:
        """Render and return the image top row first, (height, width, 3) uint8."""
        self.render()
        return self.read_pixels()[::-1].copy()

    def close(self) -> None:
        self.plotter.close()
