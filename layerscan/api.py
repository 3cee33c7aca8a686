"""The Python API: the same pipeline and renderer as the command line, with its flags as keywords.

import layerscan
scan = layerscan.scan("The capital of France is", model="embedded")
layerscan.render(scan, "out.mp4")
d = layerscan.diff("The doctor said", "The lawyer said")
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import tempfile
import typing
from pathlib import Path
from typing import Any

from layerscan.core.errors import LayerscanError


def flag_keywords(cls: type, prefix: str = "") -> dict[str, tuple[str, ...]]:
    """{keyword: path of field names} of an option dataclass: the keyword is the command line's
    flag with "_" for "-" (`--projection-seed` → projection_seed, `--surface-grid` →
    surface_grid), so a keyword reads as the flag in `--help` does."""
    found: dict[str, tuple[str, ...]] = {}
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.metadata.get("cli", True):
            continue
        hint = hints[field.name]
        if dataclasses.is_dataclass(hint):
            for key, path in flag_keywords(hint, f"{prefix}{field.name}_").items():
                found[key] = (field.name, *path)
            continue
        flag = field.metadata.get("flag") or f"{prefix}{field.name}"
        found[flag.replace("-", "_")] = (field.name,)
    return found


def build_options(classes: list[type], keywords: dict[str, Any], what: str) -> list[Any]:
    """One object of each option class from `keywords`; an unknown keyword is a one-line error
    naming the closest ones."""
    tables = [flag_keywords(cls) for cls in classes]
    unknown = sorted(set(keywords) - {k for table in tables for k in table})
    if unknown:
        known = sorted({k for table in tables for k in table})
        close = difflib.get_close_matches(unknown[0], known, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(known)}"
        raise TypeError(f"{what} got an unknown option {unknown[0]!r}{hint}")
    objects = []
    for cls, table in zip(classes, tables, strict=True):
        values: dict[str, Any] = {}
        for key, path in table.items():
            if key in keywords:
                level = values
                for name in path[:-1]:
                    level = level.setdefault(name, {})
                level[path[-1]] = keywords[key]
        objects.append(_make(cls, values))
    return objects


def _make(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    nested = {k: _make(hints[k], v) for k, v in values.items() if isinstance(v, dict)}
    return cls(**{**values, **nested})


def _scan_classes() -> list[type]:
    from layerscan.autoencoder.capture.capture_file import CaptureOptions
    from layerscan.autoencoder.config import FitOptions
    from layerscan.geometry.scan_options import ScanOptions

    return [CaptureOptions, ScanOptions, FitOptions]


@functools.lru_cache(maxsize=2)
def _loaded(model: str, device: str, dtype: str, trust_remote_code: bool) -> Any:
    """The loaded model of these settings, kept so that a notebook's next call reuses it."""
    from layerscan.autoencoder.capture.loading import ModelOptions
    from layerscan.geometry.pipeline import Pipeline

    options = ModelOptions(model, device, dtype, trust_remote_code)
    return Pipeline(options).language_model()


def pipeline(
    model: str = "embedded",
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    autoencoder: str | None = None,
    model_b: str | None = None,
    adapter: str | None = None,
    **options: Any,
):
    """A `Pipeline` with the scan command's settings (flags as keywords, e.g. `generate=8`,
    `projection_seed=1`, `surface="none"`); the model loads once per settings and is reused.

    Args:
        model: "embedded", a local folder, or a hub id (online or cached).
        autoencoder: an autoencoder folder, "fit", or None (packaged, or fitted on first use).
        model_b, adapter: a second model for B of a diff (`--model-b`, `--adapter`).
    """
    from layerscan.autoencoder.capture.loading import ModelOptions
    from layerscan.autoencoder.capture.model_pair import SecondModelOptions
    from layerscan.geometry.pipeline import Pipeline

    capture, scan_options, fit = build_options(_scan_classes(), options, "layerscan.scan")
    ModelOptions(model, device, dtype, trust_remote_code)  # validates before any loading
    return Pipeline(
        _loaded(model, device, dtype, trust_remote_code),
        capture=capture,
        options=scan_options,
        autoencoder=autoencoder,
        fit=fit,
        second=SecondModelOptions(model_b=model_b, adapter=adapter),
    )


def scan(prompt: str, *, model: str = "embedded", autoencoder: str | None = None, **options):
    """The `Scan` of `prompt`: the same arrays as `layerscan scan PROMPT` with the same flags.

    Keywords are the scan command's flags (see `layerscan scan --help`), e.g.
    `scan("Hello", generate=8, token_time=True)`.
    """
    return pipeline(model, autoencoder=autoencoder, **options).scan(prompt)


def diff(
    prompt_a: str,
    prompt_b: str | None = None,
    *,
    model: str = "embedded",
    autoencoder: str | None = None,
    model_b: str | None = None,
    adapter: str | None = None,
    **options,
):
    """The `DiffScan` of two prompts (or of one prompt through `model` and `model_b`/`adapter`),
    as `layerscan diff A B -o x.scan` makes it."""
    if prompt_b is None:
        if model_b is None and adapter is None:
            raise LayerscanError("a diff needs two prompts, or one prompt with model_b/adapter")
        prompt_b = prompt_a
    made = pipeline(model, autoencoder=autoencoder, model_b=model_b, adapter=adapter, **options)
    return made.diff(prompt_a, prompt_b)


def _source(source):
    """A Scan or DiffScan, from itself or from a .scan file."""
    if isinstance(source, str | os.PathLike):
        from layerscan.geometry.diff_scan import load_any

        return load_any(source)
    return source


def render(source, output: str | os.PathLike, *, overwrite: bool = False, **options):
    """Render a Scan, DiffScan or .scan file to .mp4/.mov/.mkv, .gif, .png (a still) or a folder
    of PNG frames, with the render command's drawing and movie flags as keywords (e.g.
    `resolution=(640, 360)`, `layer=12`, `color="density"`). Returns the RenderStats."""
    from layerscan.geometry.diff_scan import DiffScan
    from layerscan.geometry.scan_options import DIFF_WINDOW_SIZE
    from layerscan.geometry.scene.render import RenderOptions, render_movie
    from layerscan.geometry.scene.scene import SceneOptions

    scene, movie = build_options([SceneOptions, RenderOptions], options, "layerscan.render")
    source = _source(source)
    if isinstance(source, DiffScan) and "resolution" not in options:
        scene = dataclasses.replace(scene, window_size=DIFF_WINDOW_SIZE)
    return render_movie(source, output, scene, movie, overwrite=overwrite)


class Still:
    """A rendered frame that shows itself in a notebook (`_repr_png_`); `.image` is the array."""

    def __init__(self, png: bytes, image) -> None:
        self.png = png
        self.image = image
        """(height, width, 3) uint8."""

    def _repr_png_(self) -> bytes:
        return self.png


def still(source, layer: float | None = None, **options) -> Still:
    """One frame of a Scan, DiffScan or .scan file (the last layer by default), for notebooks:
    `layerscan.still(scan)` as a cell's last line shows the picture."""
    import imageio.v3 as iio

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "still.png"
        render(source, path, layer=layer, progress=False, **options)
        png = path.read_bytes()
    return Still(png, iio.imread(png))
