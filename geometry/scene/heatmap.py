"""Draw a per-layer activation image (a `Heatmap`) off-screen with PyVista, to a PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyvista as pv
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (registers the text renderer)
from vtkmodules.vtkRenderingCore import vtkTextActor

from layerscan.core.errors import LayerscanError
from layerscan.core.outputs import atomic_path
from layerscan.core.signals import signals_held
from layerscan.geometry.heatmap import Heatmap
from layerscan.geometry.scene.overlays import DIM, INK, plain_text, plain_text_backend
from layerscan.geometry.scene.scene_options import headless_egl
from layerscan.geometry.scene.style import software_theme, use_font

COLORMAP = "RdBu_r"
"""Diverging: blue below 0, white at 0, red above; symmetric limits keep 0 white."""
BACKGROUND = "#0e1117"
MARGINS = (0.13, 0.14, 0.11, 0.12)
"""(left, right, bottom, top) of the image area, as fractions of the window."""
REFERENCE_HEIGHT = 720
FONT_SIZE = 15


def _text(
    plotter: pv.Plotter,
    text: str,
    x: float,
    y: float,
    size: int,
    color=INK,
    align: str = "left",
    valign: str = "center",
    angle: float = 0.0,
    bold: bool = False,
) -> vtkTextActor:
    """A text actor at pixel (x, y), anchored by `align`/`valign`."""
    actor = vtkTextActor()
    actor.SetInput(plain_text(text))
    actor.SetDisplayPosition(int(round(x)), int(round(y)))
    prop = actor.GetTextProperty()
    prop.SetFontSize(size)
    prop.SetColor(*color)
    prop.SetOrientation(angle)
    use_font(prop, bold)
    {
        "left": prop.SetJustificationToLeft,
        "right": prop.SetJustificationToRight,
        "center": prop.SetJustificationToCentered,
    }[align]()
    {
        "top": prop.SetVerticalJustificationToTop,
        "bottom": prop.SetVerticalJustificationToBottom,
        "center": prop.SetVerticalJustificationToCentered,
    }[valign]()
    plotter.renderer.AddViewProp(actor)
    return actor


def _lookup_table(limit: float) -> pv.LookupTable:
    import matplotlib

    rgba = matplotlib.colormaps[COLORMAP](np.linspace(0.0, 1.0, 256))  # (256, 4)
    lut = pv.LookupTable(values=(rgba * 255).astype(np.uint8))
    lut.scalar_range = (-limit, limit)
    return lut


def _ticks(n: int, most: int) -> list[int]:
    """At most `most` evenly spaced indices in 0..n-1, always the first and the last."""
    if n <= most:
        return list(range(n))
    step = int(np.ceil((n - 1) / (most - 1)))
    ticks = list(range(0, n - 1, step))
    if n - 1 - ticks[-1] < step / 2:
        ticks.pop()
    return ticks + [n - 1]


def heatmap_image(heatmap: Heatmap, window_size: tuple[int, int] = (1280, 720)) -> np.ndarray:
    """Draw the heatmap and return it top row first, (height, width, 3) uint8.

    Rows are layers with the embeddings at the top, columns hidden dimensions; colours run
    from -limit (blue) through 0 (white) to +limit (red), values beyond saturate.
    """
    with signals_held():  # VTK calls Python back: a signal there would exit 1 (see signals.py)
        return _heatmap_image(heatmap, window_size)


def _heatmap_image(heatmap: Heatmap, window_size: tuple[int, int]) -> np.ndarray:
    w, h = window_size
    if w < 200 or h < 150:
        raise LayerscanError(f"a heatmap needs at least 200x150 pixels, got {w}x{h}")
    values = np.asarray(heatmap.values, np.float32)  # (n_layers+1, d_model)
    n_rows, n_cols = values.shape
    left, right, bottom, top = MARGINS
    x0, x1, y0, y1 = left * w, (1 - right) * w, bottom * h, (1 - top) * h
    size = max(9, round(FONT_SIZE * h / REFERENCE_HEIGHT))
    plain_text_backend()
    with headless_egl(True):
        plotter = pv.Plotter(
            off_screen=True, window_size=[w, h], theme=software_theme(), lighting=None
        )
    try:
        plotter.set_background(BACKGROUND)
        # one cell per (layer, dimension); world units are pixels, the embeddings on top
        grid = pv.ImageData(
            dimensions=(n_cols + 1, n_rows + 1, 1),
            spacing=((x1 - x0) / n_cols, (y1 - y0) / n_rows, 1.0),
            origin=(x0, y0, 0.0),
        )
        grid.cell_data["value"] = values[::-1].ravel()  # cell id = column + row * n_cols
        plotter.add_mesh(
            grid,
            scalars="value",
            cmap=_lookup_table(heatmap.limit),
            clim=(-heatmap.limit, heatmap.limit),
            show_scalar_bar=False,
            lighting=False,
            interpolate_before_map=False,
        )
        label = "B − A" if heatmap.difference else "value"
        plotter.add_scalar_bar(
            title=f"{label}\n",
            vertical=True,
            n_labels=5,
            fmt="%.3g",
            color=INK,
            position_x=(x1 + 0.025 * w) / w,
            position_y=y0 / h,
            width=0.05,
            height=(y1 - y0) / h,
            title_font_size=size,
            label_font_size=size - 2,
        )
        cam = plotter.camera
        cam.parallel_projection = True
        cam.focal_point = (w / 2, h / 2, 0.0)
        cam.position = (w / 2, h / 2, 1000.0)
        cam.up = (0.0, 1.0, 0.0)
        cam.parallel_scale = h / 2
        cam.clipping_range = (1.0, 2000.0)
        row_h = (y1 - y0) / n_rows
        for i in _ticks(n_rows, max(2, int((y1 - y0) / (1.6 * size)))):
            _text(
                plotter,
                heatmap.layer_names[i],
                x0 - 8,
                y1 - (i + 0.5) * row_h,
                size - 2,
                DIM,
                align="right",
            )
        col_w = (x1 - x0) / n_cols
        for j in _ticks(n_cols, 9):
            _text(
                plotter,
                str(j),
                x0 + (j + 0.5) * col_w,
                y0 - 6,
                size - 2,
                DIM,
                align="center",
                valign="top",
            )
        _text(
            plotter,
            f"hidden dimension (0 … {n_cols - 1})",
            (x0 + x1) / 2,
            y0 - 1.9 * size,
            size,
            INK,
            align="center",
            valign="top",
        )
        _text(plotter, heatmap.title, x0, h - 0.035 * h, size, INK, valign="top", bold=True)
        prompt = heatmap.prompt if len(heatmap.prompt) <= 90 else heatmap.prompt[:89] + "…"
        _text(plotter, f"“{prompt}”", x0, h - 0.035 * h - 1.8 * size, size - 2, DIM, valign="top")
        _text(
            plotter,
            f"colour: −v … 0 … +v, v = {heatmap.limit:.3g} = "
            f"{heatmap.clip_percentile:g}th percentile of |{label}|; "
            f"beyond ±v saturates",
            x0,
            0.012 * h,
            size - 3,
            DIM,
            valign="bottom",
        )
        plotter.render()
        return np.asarray(plotter.screenshot(None, return_img=True))[..., :3].copy()
    finally:
        plotter.close()


def render_heatmap(
    heatmap: Heatmap, path: str | os.PathLike, window_size: tuple[int, int] = (1280, 720)
) -> Path:
    """Draw the heatmap to a PNG at `path`; the file appears only once complete."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LayerscanError(f"{path}: a heatmap is written as .png")
    image = heatmap_image(heatmap, window_size)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")
    return path
