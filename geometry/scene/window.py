"""The desktop viewer: a scene in a window with play/pause, layer stepping, sliders and toggles."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.outputs import atomic_path
from layerscan.core.signals import pending, signals_held
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene.style import use_font

_SLIDER = dict(
    style="modern",
    fmt="%.0f",
    title_height=0.018,
    slider_width=0.012,
    tube_width=0.003,
    color="#c8cdd6",
    title_color="#8a93a3",
    interaction_event="always",
)
SLIDER_BAND = 0.1
"""Fraction of the window height at the bottom that the sliders take."""
HELP = (
    "space play/pause · [ ] layer · - = token step · u surface · p points · l lines · "
    "t labels · c colour · o overlays · click a particle: its token · s screenshot · q quit"
)


def check_display() -> None:
    """Raise a one-line LayerscanError when there is no display to open a window on."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise LayerscanError(
            "no display to open a window on ($DISPLAY is not set); render a "
            "movie instead: layerscan render PROMPT -o layerscan.mp4"
        )


@dataclass(frozen=True)
class ViewerOptions:
    """How the window plays a scan."""

    fps: int = 30
    """Animation frames per second while playing."""
    frames_per_layer: int = field(default=8, metadata={"metavar": "N"})
    """Frames from one layer to the next while playing."""
    screenshot_dir: str = field(default=".", metadata={"metavar": "DIR"})
    """Where `s` saves screenshots."""

    def __post_init__(self) -> None:
        if not 1 <= self.fps <= 240:
            raise LayerscanError(f"--fps must be between 1 and 240, got {self.fps}")
        if self.frames_per_layer < 1:
            raise LayerscanError(
                f"--frames-per-layer must be at least 1, got {self.frames_per_layer}"
            )


class Viewer:
    """A scan (or diff) in a window: the animation, keys, sliders and screenshots.

    Args:
        source: a Scan or a DiffScan.
        scene_options: SceneOptions for the drawing.
        options: playing speed and where screenshots go (see ViewerOptions).
        off_screen: no real window (for tests without a display).
        **overrides: ViewerOptions fields to change, e.g. `fps=60`.
    """

    def __init__(
        self,
        source: Scan | DiffScan,
        scene_options=None,
        options: ViewerOptions | None = None,
        off_screen: bool = False,
        **overrides: Any,
    ) -> None:
        from layerscan.geometry.scene.scene import Scene, SceneOptions

        options = replace(options or ViewerOptions(), **overrides)
        if not off_screen:
            check_display()
        scene_options = scene_options or SceneOptions()
        scene_options = replace(  # the user orbits anywhere: light per pixel
            scene_options,
            overlay_bottom=max(scene_options.overlay_bottom, SLIDER_BAND),
            baked_shading=False,
        )
        self.scene = Scene(source, scene_options, off_screen=off_screen)
        self.plotter = self.scene.plotter
        self.fps, self.frames_per_layer = options.fps, options.frames_per_layer
        self.screenshot_dir = Path(options.screenshot_dir)
        self.playing = False
        self.closed = False
        self.screenshots: list[Path] = []
        self._timer_id: int | None = None
        self._syncing = True  # pyvista calls slider callbacks once while adding them
        self.picked: str | None = None
        self.message: str | None = None
        self._add_keys()
        self._add_picking()
        self._add_sliders()
        self._syncing = False
        # the key help: top centre of a single scan; bottom of the right panel of a diff
        hint = HELP if self.scene.n_steps > 1 else HELP.replace(" · - = token step", "")
        if self.scene.marks is not None:
            hint += " · n next change"
        if self.scene.arcs is not None:
            hint += " · a arcs · h/H head/mean"
        if self.scene.strip is not None:
            hint += " · k strip"
        self.plotter.subplot(0, len(self.scene.panels) - 1)
        self.hint = self.plotter.add_text(
            hint,
            position=(0.5, 0.03 if self.scene.is_diff else 0.975),
            viewport=True,
            font_size=6 if self.scene.is_diff else 7,
            color="#8a93a3",
            name="help",
        )
        self.hint.GetTextProperty().SetJustificationToCentered()
        use_font(self.hint.GetTextProperty())
        self.plotter.subplot(0, 0)

    # --- state -------------------------------------------------------------------------
    @property
    def layer(self) -> float:
        return self.scene.layer

    @property
    def step(self) -> int:
        return self.scene.step

    def show(self, layer: float | None = None, step: int | None = None) -> None:
        """Move to a layer / token step, update the sliders, redraw."""
        step = self.scene.step if step is None else step
        layer = self.scene.layer if layer is None else layer
        current = None
        if self.scene.n_steps > 1:
            current = self.scene.scans[0].step_lengths[int(step)] - 1
        self.scene.update(step, layer, current)
        self._sync_sliders()
        self.scene.render()

    def step_layer(self, delta: int) -> None:
        """Jump to the next (+1) or previous (-1) whole layer; pauses playback."""
        self.playing = False
        target = (
            np.floor(self.layer + 1e-6) + delta if delta > 0 else np.ceil(self.layer - 1e-6) + delta
        )
        self.show(layer=float(np.clip(target, 0, self.scene.n_layers)))

    def step_token(self, delta: int) -> None:
        """One token step back or on (`-`, `=`); says so when the scan has one step only."""
        if self.scene.n_steps < 2:
            self.notify(
                "this scan has one token step: scan with --token-time to step through tokens"
            )
            return
        self.show(step=int(np.clip(self.step + delta, 0, self.scene.n_steps - 1)))
        self.notify(f"token step {self.step + 1} / {self.scene.n_steps}")

    def notify(self, text: str) -> None:
        """A one-line message at the bottom of the window (and on stdout), until the next."""
        print(text, flush=True)
        self.message = text
        self.plotter.subplot(0, 0)
        actor = self.plotter.add_text(
            text,
            position=(0.02, 0.005),
            viewport=True,
            font_size=8,
            color="#ffc740",
            name="message",
        )
        use_font(actor.GetTextProperty())
        self.scene.render()

    def toggle_play(self) -> bool:
        self.playing = not self.playing
        if self.playing and self.layer >= self.scene.n_layers:
            self.show(layer=0.0)
        return self.playing

    def tick(self) -> None:
        """Advance the animation by one frame (called by the window's timer while playing)."""
        if not self.playing or self.closed:
            return
        last = self.scene.n_layers
        layer = self.layer + 1.0 / self.frames_per_layer
        if layer > last + 1e-6:
            if self.step < self.scene.n_steps - 1:
                self.show(layer=0.0, step=self.step + 1)
                return
            self.playing = False
            layer = float(last)
        self.show(layer=layer)

    def screenshot(self) -> Path:
        """Save the current view as a PNG in `screenshot_dir`; returns its path."""
        import imageio.v3 as iio

        near = int(round(self.layer))
        index = 0
        while (path := self.screenshot_dir / f"layerscan-layer{near:02d}-{index:03d}.png").exists():
            index += 1
        with atomic_path(path) as tmp:
            iio.imwrite(tmp, self.scene.image(), extension=".png")
        self.screenshots.append(path)
        self.notify(f"saved {path.resolve()}")
        return path

    # --- keys and widgets --------------------------------------------------------------
    def key_actions(self) -> dict:
        return {
            "space": self.toggle_play,
            "bracketright": lambda: self.step_layer(+1),
            "bracketleft": lambda: self.step_layer(-1),
            "equal": lambda: self.step_token(+1),
            "minus": lambda: self.step_token(-1),
            "u": lambda: self._toggle("surface"),
            "p": lambda: self._toggle("points"),
            "l": lambda: self._toggle("lines"),
            "o": lambda: self._toggle("overlays"),
            "t": lambda: self._toggle("labels"),
            "c": self._cycle_colour,
            "s": self.screenshot,
            "q": self.quit,
            "Escape": self.quit,
            **({"n": self.next_change} if self.scene.marks is not None else {}),
            "a": lambda: self._arcs("toggle"),
            "h": lambda: self._arcs("head"),
            "H": lambda: self._arcs("mean"),
            "k": self._components,
        }

    def quit(self) -> None:
        """End the window's event loop (`q`, Escape, closing the window, or SIGTERM)."""
        if self.plotter.iren is not None:
            self.plotter.iren.interactor.TerminateApp()

    def next_change(self) -> str:
        """A diff: select the next changed token (its ring, label and logit lens); says which."""
        text = self.scene.marks.next_change()
        self.scene.update(self.scene.step, self.scene.layer)
        for panel in self.scene.panels:
            panel.pick.set("")
        self.scene.panels[1].pick.set(text)
        self.scene.render()
        return text

    def press(self, key: str) -> None:
        """Act on a key as if it were pressed in the window (VTK key symbol, e.g. 'space')."""
        action = self.key_actions().get(key)
        if action is not None and not self.closed:
            action()

    def _components(self) -> None:
        """k: the component strip on/off (scans made with --components)."""
        self.scene.toggle_components()
        self.scene.render()

    def _toggle(self, part: str) -> None:
        self.scene.toggle(part)
        self.scene.render()

    def _arcs(self, action: str) -> None:
        """a: attention arcs on/off; h: the next head; H: the mean over heads."""
        arcs = self.scene.arcs
        if arcs is None:
            return
        {
            "toggle": lambda: arcs.set_visible(not arcs.visible),
            "head": arcs.cycle_head,
            "mean": arcs.mean_heads,
        }[action]()
        self.scene.update(self.scene.step, self.scene.layer, self.scene.current_token)
        self.scene.render()

    def _cycle_colour(self) -> None:
        self.scene.cycle_color_mode()
        self.scene.render()

    def _add_keys(self) -> None:
        iren = self.plotter.iren
        if iren is None:
            return
        style = iren.interactor.GetInteractorStyle()
        for event in ("CharEvent",):  # VTK's built-in keys (w, s, p, ...) would fight ours
            iren.interactor.RemoveObservers(event)
            if style is not None:
                style.RemoveObservers(event)
        iren.interactor.AddObserver("KeyPressEvent", self._on_key, 10.0)
        self.plotter.clear_events_for_key("q")  # pyvista's own q closes the plotter mid-event

    def _add_picking(self) -> None:
        """A click on a particle names its token and layer (VTK's point picker)."""
        if self.plotter.iren is None:
            return
        self.plotter.enable_point_picking(
            callback=self._on_pick,
            use_picker=True,
            show_message=False,
            show_point=False,
            left_clicking=True,
            picker="point",
            tolerance=0.01,
        )
        self.plotter.clear_events_for_key("p")  # pyvista's pick key; ours toggles points
        self.plotter.clear_events_for_key("P")
        # hovering names the token under the pointer too (its label first, its lens shown)
        from vtkmodules.vtkRenderingCore import vtkPointPicker

        self._hover_picker = vtkPointPicker()
        self._hover_picker.SetTolerance(0.005)
        self._hover_at: tuple[int, int] | None = None
        self.plotter.iren.interactor.AddObserver("MouseMoveEvent", self._on_hover, 1.0)

    def _on_hover(self, interactor, _event) -> None:
        x, y = interactor.GetEventPosition()
        if (
            self._hover_at is not None
            and abs(x - self._hover_at[0]) + abs(y - self._hover_at[1]) < 4
        ):
            return
        self._hover_at = (x, y)
        renderer = interactor.FindPokedRenderer(x, y)
        if renderer is None or not self._hover_picker.Pick(x, y, 0, renderer):
            return
        self._on_pick(None, self._hover_picker)

    def _on_pick(self, _point, picker) -> None:
        actor, point_id = picker.GetActor(), picker.GetPointId()
        if actor is None or point_id < 0:
            return
        address = actor.GetAddressAsString("vtkObject")  # VTK hands back a plain wrapper
        for i, panel in enumerate(self.scene.panels):
            if panel.points_actor.GetAddressAsString("vtkObject") == address:
                self.pick(i, point_id)
                return

    def pick(self, panel: int, point_id: int) -> str:
        """Name particle `point_id` of panel `panel` on screen (what a click does)."""
        self.picked = self.scene.describe_particle(panel, point_id)
        self.scene.trace_particle(panel, point_id)  # and trace its path (again: untrace)
        self.scene.render()
        return self.picked

    def _on_key(self, interactor, _event) -> None:
        self.press(interactor.GetKeySym())

    def _add_sliders(self) -> None:
        self.plotter.subplot(0, 0)
        last = self.scene.n_layers
        self.layer_slider = self.plotter.add_slider_widget(
            self._on_layer_slider,
            [0, last],
            value=0,
            title="layer",
            pointa=(0.04, 0.065),
            pointb=(0.46, 0.065),
            **_SLIDER,
        )
        self.token_slider = None
        if self.scene.n_steps > 1:
            self.token_slider = self.plotter.add_slider_widget(
                self._on_token_slider,
                [0, self.scene.n_steps - 1],
                value=self.step,
                title="token step",
                pointa=(0.54, 0.065),
                pointb=(0.96, 0.065),
                **_SLIDER,
            )

    def _on_layer_slider(self, value: float) -> None:
        if not self._syncing:
            self.playing = False
            self.show(layer=float(value))

    def _on_token_slider(self, value: float) -> None:
        if not self._syncing:
            self.show(step=int(round(value)))

    def _sync_sliders(self) -> None:
        self._syncing = True
        try:
            self.layer_slider.GetRepresentation().SetValue(self.layer)
            if self.token_slider is not None:
                self.token_slider.GetRepresentation().SetValue(self.step)
        finally:
            self._syncing = False

    # --- running -----------------------------------------------------------------------
    def start_timer(self) -> None:
        iren = self.plotter.iren
        iren.interactor.AddObserver(
            "TimerEvent", lambda *_: self.quit() if pending() is not None else self.tick()
        )
        self._timer_id = iren.interactor.CreateRepeatingTimer(max(1, int(1000 / self.fps)))

    def run(self, title: str = "layerscan") -> None:
        """Open the window and block until it is closed (closing mid-animation is fine)."""
        self.show(layer=0.0)
        self.start_timer()
        self.playing = True
        if self.plotter.iren is not None:  # the window manager's close button
            self.plotter.iren.interactor.AddObserver("ExitEvent", lambda *_: self.quit())
        try:
            # Ctrl-C and SIGTERM: recorded, the timer ends the loop, raised after
            with signals_held():
                self.plotter.show(title=title, auto_close=False)
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        self.playing = False
        if self._timer_id is not None and self.plotter.iren is not None:
            self.plotter.iren.interactor.DestroyTimer(self._timer_id)
            self._timer_id = None
        self.scene.close()
