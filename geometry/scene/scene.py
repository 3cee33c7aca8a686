"""The one object owning a `pyvista.Plotter`: a scan's actors built once, updated per frame."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyvista as pv
from vtkmodules.util.numpy_support import vtk_to_numpy
from vtkmodules.vtkRenderingCore import vtkRenderer

from layerscan.core.errors import LayerscanError
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.attention_arcs import attention_arcs
from layerscan.geometry.scene.camera import LayerCamera
from layerscan.geometry.scene.component_strip import BOX as STRIP_BOX
from layerscan.geometry.scene.component_strip import component_strip
from layerscan.geometry.scene.diff_view import (
    DiffMarks,
    divergence_scale,
    shared_colour_slots,
    token_colour_values,
)
from layerscan.geometry.scene.legend import Scale
from layerscan.geometry.scene.overlays import plain_text_backend, token_label
from layerscan.geometry.scene.panel import Panel
from layerscan.geometry.scene.scene_options import (
    COLOR_MODES,
    PARTS,
    SceneOptions,
    headless_egl,
)
from layerscan.geometry.scene.style import (
    DIFF_SURFACE_OPACITY,
    FONT_SIZE,
    FRAME_MARGIN,
    FREE_AREA,
    MIN_FONT_SIZE,
    MIN_POINT_SIZE,
    POINT_SIZE,
    REFERENCE_HEIGHT,
    SURFACE_OPACITY,
    VIEW_ANGLE,
    VIEW_AZIMUTH,
    VIEW_ELEVATION,
    clear_band,
    direction,
    software_theme,
    unit_scale,
    unit_top,
)
from layerscan.geometry.scene.token_trace import TokenTrace, check_trace


class Scene:
    """A scan (or a diff: two panels, linked cameras) drawn once and updated in place.

    Each panel has a 3D renderer and an overlay renderer on a higher layer of the same
    viewport, so text, chips, the legend and charts are drawn over the particles.

    Args:
        source: a Scan, or a DiffScan for side-by-side panels.
        options: drawing options (never modified; see `options` for the current ones).
        off_screen: render without a window (movies, tests).
    """

    def __init__(
        self, source: Scan | DiffScan, options: SceneOptions | None = None, off_screen: bool = True
    ) -> None:
        opts = options or SceneOptions()
        self.is_diff = isinstance(source, DiffScan)
        self.source = source
        scans = [source.a, source.b] if self.is_diff else [source]
        for scan in scans:
            scan.validate()
        if self.is_diff and source.a.positions.shape[1:] != source.b.positions.shape[1:]:
            raise LayerscanError(
                "the two scans of a diff have different layer or particle "
                "counts; recreate the diff with `layerscan diff`"
            )
        self.scans = scans
        plain_text_backend()
        w, h = opts.window_size
        size = max(MIN_FONT_SIZE, round(FONT_SIZE * h / REFERENCE_HEIGHT))
        self.font_size = size
        # the scene's own copy with the sizes resolved; the caller's options stay as given
        point_size = opts.point_size
        if point_size is None:
            point_size = max(MIN_POINT_SIZE, POINT_SIZE * h / REFERENCE_HEIGHT)
        opacity = opts.surface_opacity
        if opacity is None:
            opacity = DIFF_SURFACE_OPACITY if self.is_diff else SURFACE_OPACITY
        self.options = opts = replace(opts, point_size=point_size, surface_opacity=opacity)
        self.mode = opts.color_mode or ("displacement" if self.is_diff else "token")
        with headless_egl(off_screen):
            self.plotter = pv.Plotter(
                off_screen=off_screen,
                window_size=[w, h],
                shape=(1, len(scans)),
                border=self.is_diff,
                border_color="#2a3140",
                theme=software_theme(),
                lighting=None,
            )
        self.plotter.set_background(opts.background)
        if opts.anti_aliasing:
            self.plotter.enable_anti_aliasing("fxaa", all_renderers=True)
        # a new top layer (pyvista already uses layers for its shadow and border renderers)
        overlay_layer = self.plotter.render_window.GetNumberOfLayers()
        self.plotter.render_window.SetNumberOfLayers(overlay_layer + 1)
        displacements, scales = self._displacements()
        differing = list(source.changed) if self.is_diff else [None]
        slots = shared_colour_slots(source) if self.is_diff else [None]
        self.panels: list[Panel] = []
        self.overlays: list[vtkRenderer] = []
        for i, scan in enumerate(scans):
            self.plotter.subplot(0, i)
            # One headlight and plain alpha blending: the light kit's five lights and
            # order-independent translucency each cost more than the whole scene otherwise.
            self.plotter.renderer.add_light(pv.Light(light_type="headlight"))
            self.plotter.renderer.SetUseOIT(False)
            overlay = vtkRenderer()
            overlay.SetLayer(overlay_layer)
            overlay.SetViewport(self.plotter.renderer.GetViewport())
            overlay.InteractiveOff()
            self.plotter.render_window.AddRenderer(overlay)
            self.overlays.append(overlay)
            title = None if not self.is_diff else self._panel_title(i)
            self.panels.append(
                Panel(
                    self.plotter,
                    overlay,
                    scan,
                    opts,
                    size,
                    (w // len(scans), h),
                    displacements[i],
                    scales,
                    differing[i],
                    title,
                    legend=i == len(scans) - 1,
                    colour_slots=slots[i],
                )
            )
        self.chart = self.arrows = self.marks = None
        self.arcs = (
            None
            if self.is_diff
            else attention_arcs(self.plotter, self.overlays[0], scans[0], opts, size)
        )
        if self.arcs is not None:  # the arcs' line goes where the pick line was, that below it
            panel, line = self.panels[0], 1.3 * size / h
            y = panel.pick.actor.GetPosition()[1]
            self.arcs.caption.actor.SetPosition(0.02, y)
            panel.pick.actor.SetPosition(0.02, y - line)
            panel.labels.band = (panel.labels.band[0], panel.labels.band[1] - line)
        if self.is_diff:
            self._add_diff_parts(size, (w // 2, h))
        self._add_component_parts(size, (w, h))
        self._setup_camera()
        self.step = scans[0].n_steps - 1
        self.layer = 0.0
        self.azimuth = 0.0
        self.current_token: int | None = None
        self.picked_token: int | None = None
        """The token last picked (clicked or hovered) in the window."""
        self.update(self.step, 0.0)

    def _models_differ(self) -> bool:
        return self.is_diff and self.source.a.model_id != self.source.b.model_id

    def _panel_title(self, i: int) -> str:
        """ "A" / "B"; with the side's model when a diff compares two models."""
        name = "AB"[i]
        if not self._models_differ():
            return name
        return f"{name} · {token_label(self.scans[i].model_id, 60)}"

    def _add_diff_parts(self, size: int, viewport_px: tuple[int, int]) -> None:
        """Rings, arrows and the divergence chart (geometry/scene/diff_view.py)."""
        self.panels[1].head.set("")
        self.panels[1].sub.set("")
        self.panels[1].caption.set("")  # one caption (panel A's) explains both
        h = viewport_px[1]
        fig_y = self.options.overlay_bottom + 0.16 + 2.2 * size / h
        for panel in self.panels:  # the figures at the foot; the caption under, warning over them
            panel.fig.actor.SetPosition(0.02, fig_y)
            panel.caption.actor.SetPosition(0.02, fig_y - 1.1 * size / h)
            panel.warning.actor.SetPosition(0.02, fig_y + 1.4 * size / h)
            lo, hi = panel.labels.band  # labels stay in the free area, below the chart
            panel.labels.band = (lo, min(hi, FREE_AREA["diff"][3]))
        _, radius = fr.bounds_of(np.concatenate([s.positions.reshape(-1, 3) for s in self.scans]))
        self.marks = DiffMarks(self, size, viewport_px, radius)
        self.chart, self.arrows = self.marks.chart, self.marks.arrows
        self.plotter.link_views()

    def _add_component_parts(self, size: int, viewport_px: tuple[int, int]) -> None:
        """The component strip (scans with --components) and the token trace (single scans)."""
        scan = self.scans[0]
        check_trace(scan, self.options.trace)
        self.strip = None
        if not self.is_diff:
            lens = self.panels[0].lens
            top = 1.0 if lens is None else lens.bottom - 0.02
            self.strip = component_strip(
                self.overlays[0], scan, self.options, size, viewport_px, top
            )
        self.plotter.subplot(0, 0)
        self.trace = TokenTrace(self.plotter, scan, size, self.panels[0].labels, self.overlays[0])
        self.trace.token = self.options.trace
        if self.strip is not None:
            self.trace.right_edge = STRIP_BOX[0] - 0.005

    @property
    def n_layers(self) -> int:
        """Transformer blocks: the scene shows layers 0..n_layers (n_layers+1 states)."""
        return self.scans[0].n_layers

    @property
    def n_steps(self) -> int:
        return self.scans[0].n_steps

    def _displacements(self) -> tuple[list[np.ndarray], dict[str, Scale]]:
        """Per panel (n_layers+1, n_particles) displacement scaled to [0, 1], and the colour
        bars of the continuous modes in real units."""
        scales = {
            "density": Scale(
                "colour = local density in 3D, each token weighing 1",
                "density\n(1 = densest\nof the layer)",
                1.0,
            )
        }
        if self.is_diff:
            top, scales["displacement"] = divergence_scale(self.source)
            return token_colour_values(self.source, top), scales
        out = []
        for scan in self.scans:
            pos = scan.positions[-1]  # (n_layers+1, n_particles, 3)
            d = np.zeros(pos.shape[:2], np.float32)
            d[1:] = np.linalg.norm(np.diff(pos, axis=0), axis=-1)
            out.append(unit_scale(d))
            scales["displacement"] = Scale(
                "colour = distance moved since the previous layer",
                "moved since\nlast layer\n(3D units)",
                unit_top(d),
            )
        return out, scales

    def _setup_camera(self) -> None:
        """Frame the layer on show inside the free area (see camera.LayerCamera).

        The camera's window centre shifts the picture into the free area, clear of the
        header, the chips and the legend.
        """
        x0, y0, x1, y1 = FREE_AREA["diff" if self.is_diff else "single"]
        if getattr(self, "strip", None) is not None:  # the cloud keeps left of the strip
            x1 = min(x1, STRIP_BOX[0] - 0.01)
        y0 = y0 + self.options.overlay_bottom * (1 - y0)
        w, h = self.options.window_size
        if not self.is_diff:
            y0, y1 = clear_band(y0, y1, self.font_size, h, self.options.overlay_bottom)
            for line in (self.panels[0].warning._text, self.arcs):  # warning, arcs' line
                y1 -= 1.3 * self.font_size / h if line else 0.0
        aspect = w / len(self.scans) / h
        half_v = np.tan(np.radians(VIEW_ANGLE) / 2) / FRAME_MARGIN
        tan_half = ((x1 - x0) * aspect * half_v, (y1 - y0) * half_v)
        self.camera = LayerCamera(
            [s.positions for s in self.scans], np.radians(VIEW_ELEVATION), tan_half, VIEW_AZIMUTH
        )
        self.centre, self.distance = self.camera.at(self.scans[0].n_steps - 1, 0.0)
        self.free_area = (x0, y0, x1, y1)
        # VTK's window centre is where the view's centre goes, in [-1, 1] viewport units,
        # measured the other way round: (-0.1, -0.1) moves the picture up and to the right
        self.window_centre = (1.0 - x0 - x1, 1.0 - y0 - y1)
        self.plotter.camera.view_angle = VIEW_ANGLE
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
        cam.SetWindowCenter(*self.window_centre)

    def _follow_layer(self) -> None:
        """Move the focal point and distance to the shown layer's framing, keeping the view
        direction and any zoom the user made in the window."""
        centre, distance = self.camera.at(self.step, self.layer)
        cam = self.plotter.camera
        offset = np.asarray(cam.position) - np.asarray(cam.focal_point)
        length = float(np.linalg.norm(offset))
        if length < 1e-12:
            return
        zoom = length / self.distance if self.distance > 0 else 1.0
        self.centre, self.distance = centre, distance
        cam.focal_point = tuple(centre)
        cam.position = tuple(centre + distance * zoom * offset / length)
        cam.clipping_range = (distance * zoom * 0.05, distance * zoom * 3.0)

    def update(self, step: int, layer: float, current_token: int | None = None) -> None:
        """Show token step `step` at fractional `layer` (current token highlighted if given)."""
        self.step = int(np.clip(step, 0, self.n_steps - 1))
        self.layer = float(np.clip(layer, 0, self.n_layers))
        self.current_token = current_token
        if current_token is None and self.picked_token is not None:
            current_token = self.picked_token  # a picked token: its label first, its lens
        self._follow_layer()
        near = fr.nearest_layer(self.layer, self.n_layers)
        scan = self.scans[0]
        header = (
            f"layer {near} / {scan.n_layers}",
            f"{scan.layer_names[near]} · {token_label(scan.model_id, 40)}",
        )
        if current_token is None and self.n_steps > 1:
            current_token = scan.step_lengths[self.step] - 1
        currents = [current_token] * len(self.panels)
        if self.marks is not None and current_token is None:
            currents = list(self.marks.current_tokens())
        for i, panel in enumerate(self.panels):
            panel.update(self.step, self.layer, self.mode, currents[i], header if i == 0 else None)
        if self.marks is not None:
            self.marks.update([p.places for p in self.panels], self.layer)
        if self.arcs is not None:
            n_visible = scan.step_lengths[self.step]
            self.arcs.update(self.panels[0].places, near, n_visible, self.options.show_overlays)
        self._update_components(current_token)
        if self.chart is not None and self.options.show_overlays:
            self.chart.show(self.layer)

    def _update_components(self, current_token: int | None) -> None:
        """The trace grows to the current layer; the strip shows the traced token, else the
        current one (the newest in token-time), else the last."""
        visible = self.options.show_overlays
        self.trace.update(self.step, self.layer, visible)
        if self.strip is None:
            return
        self.strip.set_visible(visible and self.options.show_components)
        token = self.trace.token
        if token is None or token >= self.scans[0].step_lengths[self.step]:
            token = current_token
        if token is None:
            token = self.scans[0].step_lengths[self.step] - 1
        self.strip.update(token, self.layer, traced=token == self.trace.token)

    def toggle_components(self) -> bool:
        """Show or hide the component strip (window key k); returns the new state."""
        self.options = replace(self.options, show_components=not self.options.show_components)
        self.update(self.step, self.layer, self.current_token)
        return self.options.show_components

    def trace_particle(self, panel: int, point_id: int) -> int | None:
        """Trace the token of a clicked particle (the traced one again: no trace)."""
        if self.is_diff:
            return None
        near = fr.nearest_layer(self.layer, self.n_layers)
        token = int(self.scans[panel].particle_tokens[self.step, near, point_id])
        self.trace_token(None if token == self.trace.token else token)
        return self.trace.token

    def trace_token(self, token: int | None) -> None:
        """Trace `token` (None: no trace) and redraw."""
        check_trace(self.scans[0], token)
        self.trace.token = token
        self.update(self.step, self.layer, self.current_token)

    def describe_particle(self, panel: int, point_id: int) -> str:
        """Name the token and layer of particle `point_id` in panel `panel`, and show it."""
        text = self.panels[panel].describe_particle(self.step, self.layer, point_id)
        step = min(self.step, self.scans[panel].n_steps - 1)
        near = fr.nearest_layer(self.layer, self.n_layers)
        token = int(self.scans[panel].particle_tokens[step, near, point_id])
        self.picked_token = token
        if self.arcs is not None:  # only the picked token's arcs; picked again: all arcs
            self.arcs.token = None if token == self.arcs.token else token
        self.update(self.step, self.layer, self.current_token)
        if self.is_diff:
            text = f"{'AB'[panel]}: {text}"
        for i, p in enumerate(self.panels):
            p.pick.set(text if i == panel else "")
        return text

    def set_color_mode(self, mode: str) -> None:
        if mode not in COLOR_MODES:
            raise LayerscanError(
                f"unknown colour mode {mode!r}; use one of {', '.join(COLOR_MODES)}"
            )
        self.mode = mode
        self.update(self.step, self.layer, self.current_token)

    def cycle_color_mode(self) -> str:
        self.set_color_mode(COLOR_MODES[(COLOR_MODES.index(self.mode) + 1) % len(COLOR_MODES)])
        return self.mode

    def toggle(self, part: str) -> bool:
        """Flip one of points, surface, lines, overlays, labels; returns the new state."""
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
