"""Scan records as PyVista meshes: the one place a surface becomes a PolyData."""

from __future__ import annotations

import numpy as np
import pyvista as pv

from layerscan.geometry.scan_file import Surface


def surface_polydata(surface: Surface) -> pv.PolyData:
    """A layer surface as a triangle PolyData (empty when the layer has none)."""
    if len(surface.faces) == 0:
        return pv.PolyData()
    faces = np.hstack(
        [np.full((len(surface.faces), 1), 3, np.int64), np.asarray(surface.faces, np.int64)]
    )  # (n_faces, 4): 3, i, j, k
    return pv.PolyData(np.asarray(surface.vertices, np.float32), faces.ravel())
