"""Scans as files other tools open: per-layer VTK/PLY meshes for ParaView, and offline HTML."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.outputs import atomic_path
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.diff_tokens import ONLY_HERE
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.camera import smooth
from layerscan.geometry.scene.caption import caption_for, warning_for
from layerscan.geometry.scene.mesh_bytes import encode_mesh
from layerscan.geometry.scene.placement import importance
from layerscan.geometry.scene.style import colors_by_position, token_colors

if TYPE_CHECKING:
    from layerscan.geometry.scene.scene import SceneOptions

MESH_FORMATS = ("vtp", "vtk", "ply")
HTML_SUFFIXES = (".html", ".htm")


def cloud_mesh(scan: Scan, step: int, layer: int, displacement: np.ndarray | None = None):
    """One layer's particles as a pyvista PolyData with slot, density and feature arrays."""
    import pyvista as pv

    pos = scan.positions[step, layer]  # (n_particles, 3)
    mesh = pv.PolyData(np.ascontiguousarray(pos, np.float32))
    mesh.point_data["slot"] = np.arange(scan.n_particles, dtype=np.int32)
    mesh.point_data["density"] = fr.local_density(
        scan.positions[step, layer : layer + 1], scan.particle_tokens[step, layer : layer + 1]
    )[0]
    mesh.point_data["features"] = np.ascontiguousarray(scan.clouds[step, layer], np.float32)
    if displacement is not None:
        mesh.point_data["displacement"] = np.asarray(displacement, np.float32)
    mesh.field_data["layer_name"] = [scan.layer_names[layer]]
    return mesh


def surface_mesh(scan: Scan, step: int, layer: int):
    """One layer's density surface as a pyvista PolyData (empty when the layer has none)."""
    from layerscan.geometry.scene.meshes import surface_polydata

    return surface_polydata(scan.surfaces[step][layer])


def export_kind(path: str | os.PathLike) -> str:
    """'html' for a .html/.htm page, 'meshes' for a folder (a name without a suffix)."""
    suffix = Path(path).suffix.lower()
    if suffix in HTML_SUFFIXES:
        return "html"
    if suffix == "":
        return "meshes"
    raise LayerscanError(
        f"{path}: unknown export type {suffix!r}; use NAME.html for a page or "
        f"a folder name without a suffix for meshes"
    )


def export_meshes(
    source: Scan | DiffScan,
    folder: str | os.PathLike,
    fmt: str = "vtp",
    step: int = -1,
    overwrite: bool = False,
) -> Path:
    """Write every layer's cloud and surface to `folder`, atomically.

    vtp files come with `clouds.pvd` and `surfaces.pvd`, which ParaView opens as a time
    series (one time step per layer). A diff writes `a/` and `b/` with a displacement array.

    Args:
        source: a scan or a diff scan.
        folder: output folder; an existing one must be empty, or an earlier layerscan export
            with `overwrite` set.
        fmt: vtp (VTK XML, default), vtk (legacy VTK) or ply.
        step: token-time step to export (default the last).
        overwrite: replace an earlier layerscan output folder.
    """
    if fmt not in MESH_FORMATS:
        raise LayerscanError(f"unknown mesh format {fmt!r}; use one of {', '.join(MESH_FORMATS)}")
    folder = Path(folder)
    with atomic_path(
        folder, suffix="", folder=True, overwrite=overwrite, kind=f"{fmt}-meshes"
    ) as tmp:
        tmp.mkdir()
        if isinstance(source, DiffScan):
            disp = np.asarray(source.displacement_cloud)
            for name, scan in (("a", source.a), ("b", source.b)):
                _write_scan(scan, tmp / name, fmt, step, disp)
        else:
            _write_scan(source, tmp, fmt, step, None)
    return folder


def _write_scan(
    scan: Scan, folder: Path, fmt: str, step: int, displacement: np.ndarray | None
) -> None:
    folder.mkdir(exist_ok=True)
    step = range(scan.n_steps)[step]
    entries: dict[str, list[tuple[int, str]]] = {"clouds": [], "surfaces": []}
    for layer in range(scan.n_layers + 1):
        disp = None if displacement is None else displacement[layer]
        for kind, mesh in (
            ("clouds", cloud_mesh(scan, step, layer, disp)),
            ("surfaces", surface_mesh(scan, step, layer)),
        ):
            name = f"{kind[:-1]}_layer{layer:02d}.{fmt}"
            (folder / name).write_bytes(encode_mesh(mesh, fmt))  # a full disk: an OSError
            entries[kind].append((layer, name))
    if fmt == "vtp":
        for kind, files in entries.items():
            rows = "\n".join(
                f'    <DataSet timestep="{layer}" part="0" file="{name}"/>' for layer, name in files
            )
            (folder / f"{kind}.pvd").write_text(
                '<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n'
                f"  <Collection>\n{rows}\n  </Collection>\n</VTKFile>\n"
            )


def _b64(array: np.ndarray, dtype: type) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype).tobytes()).decode("ascii")


def _panel_data(scan: Scan, step: int, max_faces: int) -> dict:
    pos = scan.positions[step]  # (n_layers+1, n_particles, 3)
    centre, radius = fr.bounds_of(pos)
    surfaces = scan.surfaces[step]
    n_faces = sum(len(s.faces) for s in surfaces)
    panel = {
        "prompt": scan.prompt,
        "tokens": scan.tokens[: scan.step_lengths[step]],
        "layer_names": scan.layer_names,
        "n_particles": scan.n_particles,
        "positions": _b64((pos - centre) / radius, np.float32),
        "metrics": {
            name: np.round(getattr(scan, name)[step], 4).tolist()
            for name in (
                "reconstruction_r2",
                "token_trust",
                "baseline_trust",
                "distance_correlation",
                "baseline_correlation",
            )
        },
        "particle_tokens": _b64(scan.particle_tokens[step], np.int32),
        "token_colors": [_hex(rgb) for rgb in token_colors(len(scan.tokens))],
        "surfaces": None,
        "label_order": importance(scan.tokens[: scan.step_lengths[step]], None),
        "caption": caption_for(scan, lambda _text: True),
        "warning": warning_for(scan),
        "colour_key": (
            "colour = token position in the prompt (first → last); labels name the tokens"
            if colors_by_position(len(scan.tokens))
            else "colour = token: each chip below is the colour of its particles"
        ),
    }
    normalized = (pos - centre) / radius  # (n_layers+1, n_particles, 3)
    # the page's camera frames the layer on show, smoothed through layer-time (camera.py)
    centres = smooth(np.median(normalized, axis=1))  # (n_layers+1, 3)
    spread = np.linalg.norm(normalized - centres[:, None], axis=-1)  # (n_layers+1, n_particles)
    radii = smooth(np.log(np.maximum(np.percentile(spread, 98, axis=1), 1e-6)))
    panel["frame_centres"] = np.round(centres, 5).tolist()
    panel["frame_radii"] = np.round(np.exp(radii), 5).tolist()
    if n_faces <= max_faces:
        panel["surfaces"] = [
            {"v": _b64((s.vertices - centre) / radius, np.float32), "f": _b64(s.faces, np.int32)}
            for s in surfaces
        ]
    if scan.lens_tokens is not None and scan.lens_probs is not None:
        # every token's lens at every layer (empty before the last --lens-last tokens)
        n_tok = min(scan.step_lengths[step], scan.lens_probs.shape[1])
        panel["lens"] = [
            [
                [
                    [t, round(float(p), 4)]
                    for t, p in zip(
                        scan.lens_tokens[layer][tok], scan.lens_probs[layer, tok], strict=True
                    )
                ]
                if scan.lens_probs[layer, tok].any()
                else []
                for tok in range(n_tok)
            ]
            for layer in range(scan.n_layers + 1)
        ]
    return panel


def _diff_data(diff: DiffScan, panels: list[dict]) -> dict:
    """What the page needs to draw a diff as the MP4 frame does: each token coloured by its
    hidden-state divergence (the frame's colour bar and map), changed tokens ringed."""
    from layerscan.geometry.scene.diff_view import (
        RING_COLORS,
        divergence_scale,
        onset_marks,
        shared_colour_slots,
    )
    from layerscan.geometry.scene.style import diff_palette

    top, scale = divergence_scale(diff)
    values = (diff.token_divergence_a, diff.token_divergence_b)  # (n_layers+1, n_tokens) each
    for i, (panel, status) in enumerate(zip(panels, diff.status, strict=True)):
        slots, n_colours = shared_colour_slots(diff)[i]  # an aligned pair: one colour
        panel["token_colors"] = [_hex(rgb) for rgb in token_colors(n_colours)[slots]]
        if diff.joint_trust is not None:  # the fair baseline of one shared space, as the frame
            metrics = panel["metrics"]
            metrics["baseline_trust"] = np.round(diff.joint_trust[i], 4).tolist()
            metrics["baseline_correlation"] = np.round(diff.joint_correlation[i], 4).tolist()
            panel["baseline_name"] = "joint PCA-3 of A+B"
        panel["token_divergence"] = _b64(np.clip(values[i] / top, 0, 1), np.float32)
        panel["colour_key"] = scale.caption
        panel["changed"] = [
            [int(t), ("vanishes" if i == 0 else "appears") if status[t] == ONLY_HERE else "changed"]
            for t in np.flatnonzero(status)
        ]
    onsets, onset_key = onset_marks(diff)
    return {
        "divergence": np.round(diff.divergence, 5).tolist(),
        "threshold": float(diff.threshold),
        "onsets": onsets,
        "onset_key": onset_key,
        "peak_layer": int(diff.peak_layer),
        "differing_tokens": [int(i) for i in diff.differing_tokens],
        "colour_bar": {
            "caption": scale.caption,
            "title": " ".join(scale.title.split()),
            "top": float(top),
            "palette": diff_palette(),
        },
        "ring_colors": {k: _hex(rgb) for k, rgb in RING_COLORS.items()},
    }


def _hex(rgb) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def export_html(
    source: Scan | DiffScan,
    path: str | os.PathLike,
    max_faces: int = 300_000,
    options: SceneOptions | None = None,
) -> Path:
    """Write a single self-contained HTML page that plays the scan in a browser, offline.

    The page carries its data (base64 float32) and a small canvas viewer inline: no script,
    style or font is fetched from anywhere. A single scan made with --attention gets its arcs
    (pruned as in the MP4), one made with --components the component strip.

    Args:
        source: a scan or a diff scan (two panels, one camera).
        path: the .html file to write.
        max_faces: surfaces are left out when they hold more triangles than this in all.
        options: the scene options the arcs, strip and trace follow (default: SceneOptions()).
    """
    from layerscan.geometry.scene.html_overlays import attention_data, components_data
    from layerscan.geometry.scene.scene import SceneOptions
    from layerscan.geometry.scene.token_trace import check_trace

    options = SceneOptions() if options is None else options
    path = Path(path)
    if path.suffix.lower() not in HTML_SUFFIXES:
        raise LayerscanError(f"{path}: an HTML export needs a .html file name")
    if isinstance(source, DiffScan):
        panels = [_panel_data(scan, 0, max_faces // 2) for scan in (source.a, source.b)]
        extra = _diff_data(source, panels)
    else:
        panels = [_panel_data(source, source.n_steps - 1, max_faces)]
        check_trace(source, options.trace)
        panels[0]["attention"] = attention_data(source, options)
        panels[0]["components"] = components_data(source, options)
        panels[0]["trace"] = options.trace
        extra = {}
    data = {
        "model_id": (source.a if isinstance(source, DiffScan) else source).model_id,
        "panels": panels,
        **extra,
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    from layerscan.geometry.scene.html_viewer import page

    html = page(payload)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
