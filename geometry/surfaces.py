"""A surface per layer: density isosurface of Gaussian-splatted particles, or an alpha shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from layerscan.errors import LayerscanError
from layerscan.geometry.scan_file import Surface

SurfaceMethod = Literal["density", "alpha", "none"]
SURFACE_METHODS: tuple[str, ...] = ("density", "alpha", "none")


@dataclass
class SurfaceOptions:
    """How layer surfaces are made."""

    method: SurfaceMethod = "density"
    """density: isosurface of Gaussian-splatted particles (the "fMRI" look); alpha: alpha
    shape of the particles (vtkDelaunay3D); none: no surfaces."""
    grid: int = 40
    """Voxels along each axis of the density grid."""
    bandwidth: float = 0.04
    """Gaussian width as a fraction of the layout's largest extent."""
    level_quantile: float = 0.2
    """The isosurface level is this quantile of the density at the particles, so the surface
    encloses about 1 - level_quantile of them."""
    alpha: float = 0.0
    """Alpha radius as a fraction of the largest extent (0: 4 x mean nearest-neighbour
    distance)."""

    def __post_init__(self):
        if self.method not in SURFACE_METHODS:
            raise LayerscanError(f"unknown surface method {self.method!r}: use "
                                 f"{', '.join(SURFACE_METHODS)}")
        if self.grid < 4 or not 0 < self.bandwidth < 1 or not 0 <= self.level_quantile < 1:
            raise LayerscanError("surface options need grid >= 4, 0 < bandwidth < 1 and "
                                 "0 <= level_quantile < 1")


def empty_surface() -> Surface:
    return Surface(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))


def _polydata_to_surface(poly) -> Surface:
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkFiltersCore import vtkTriangleFilter

    tri = vtkTriangleFilter()
    tri.SetInputData(poly)
    tri.PassLinesOff()
    tri.PassVertsOff()
    tri.Update()
    out = tri.GetOutput()
    if out.GetNumberOfPoints() == 0 or out.GetNumberOfPolys() == 0:
        return empty_surface()
    vertices = vtk_to_numpy(out.GetPoints().GetData()).astype(np.float32)
    conn = vtk_to_numpy(out.GetPolys().GetConnectivityArray()).astype(np.int32)
    return Surface(vertices.reshape(-1, 3), conn.reshape(-1, 3))


def splat_density(points: np.ndarray, grid: int, bandwidth: float
                  ) -> tuple[np.ndarray, np.ndarray, float]:
    """Sum of isotropic Gaussians at the points, on a regular grid around them.

    The 3D Gaussian is separable, so the grid is one matrix product per layer:
    density[x, y, z] = sum_p gx[p, x] * gy[p, y] * gz[p, z].

    Args:
        points: (n_points, 3) finite.

    Returns:
        density (grid, grid, grid) float32, the grid origin (3,), and the voxel spacing.
    """
    lo, hi = points.min(0), points.max(0)
    extent = max(float((hi - lo).max()), 1e-3)
    sigma = bandwidth * extent
    origin = lo - 3 * sigma - (extent - (hi - lo)) / 2  # a cube centred on the points
    spacing = (extent + 6 * sigma) / (grid - 1)
    axis = torch.arange(grid, dtype=torch.float32) * spacing  # (grid,)
    rel = torch.from_numpy((points - origin).astype(np.float32))  # (n_points, 3)
    g = torch.exp(-0.5 * ((rel[:, :, None] - axis) / sigma) ** 2)  # (n_points, 3, grid)
    yz = (g[:, 1, :, None] * g[:, 2, None, :]).reshape(len(points), -1)  # (n, grid * grid)
    density = (g[:, 0, :].T @ yz).reshape(grid, grid, grid)  # (grid, grid, grid) x, y, z
    return density.float().numpy(), origin.astype(np.float64), float(spacing)


def density_surface(points: np.ndarray, options: SurfaceOptions) -> Surface:
    """Isosurface of the splatted density at the `level_quantile` of the particles' density.

    Args:
        points: (n_points, 3) finite layout of one layer.
    """
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData
    from vtkmodules.vtkFiltersCore import vtkFlyingEdges3D

    if len(points) < 4 or np.ptp(points, axis=0).max() <= 0:
        return empty_surface()
    density, origin, spacing = splat_density(points, options.grid, options.bandwidth)
    at_points = map_coordinates(density, ((points - origin) / spacing).T, order=1)
    level = float(np.quantile(at_points, options.level_quantile))
    if not density.min() < level < density.max():
        return empty_surface()
    image = vtkImageData()
    image.SetDimensions(options.grid, options.grid, options.grid)
    image.SetOrigin(*origin)
    image.SetSpacing(spacing, spacing, spacing)
    # VTK wants x fastest: (x, y, z) C-order → Fortran order
    scalars = numpy_to_vtk(np.ascontiguousarray(density.transpose(2, 1, 0)).ravel(), deep=True)
    image.GetPointData().SetScalars(scalars)
    contour = vtkFlyingEdges3D()
    contour.SetInputData(image)
    contour.SetValue(0, level)
    contour.ComputeNormalsOff()
    contour.ComputeGradientsOff()
    contour.ComputeScalarsOff()
    contour.Update()
    return _polydata_to_surface(contour.GetOutput())


def alpha_surface(points: np.ndarray, options: SurfaceOptions) -> Surface:
    """The alpha shape's outer surface (vtkDelaunay3D with an alpha radius)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonCore import vtkPoints
    from vtkmodules.vtkCommonDataModel import vtkPolyData
    from vtkmodules.vtkFiltersCore import vtkDelaunay3D
    from vtkmodules.vtkFiltersGeometry import vtkDataSetSurfaceFilter

    if len(points) < 4 or np.ptp(points, axis=0).max() <= 0:
        return empty_surface()
    if options.alpha > 0:
        alpha = options.alpha * float(np.ptp(points, axis=0).max())
    else:
        from layerscan.geometry.neighbors import nearest_neighbors

        nn = nearest_neighbors(torch.from_numpy(points[None].astype(np.float32)), 1)
        alpha = 4.0 * float(nn.distances.mean())
    vtk_points = vtkPoints()
    vtk_points.SetData(numpy_to_vtk(points.astype(np.float64), deep=True))
    poly = vtkPolyData()
    poly.SetPoints(vtk_points)
    delaunay = vtkDelaunay3D()
    delaunay.SetInputData(poly)
    delaunay.SetAlpha(alpha)
    delaunay.AlphaTetsOn()
    delaunay.AlphaTrisOff()
    delaunay.AlphaLinesOff()
    delaunay.AlphaVertsOff()
    surface = vtkDataSetSurfaceFilter()
    surface.SetInputConnection(delaunay.GetOutputPort())
    surface.Update()
    return _polydata_to_surface(surface.GetOutput())


def layer_surfaces(layouts: np.ndarray, options: SurfaceOptions | None = None
                   ) -> list[Surface]:
    """One surface per layer.

    Args:
        layouts: (n_layers, n_points, 3) finite.

    Returns:
        n_layers surfaces; empty ones where a layer is degenerate (too few or coincident
        points) or the method is "none".
    """
    options = options or SurfaceOptions()
    make = {"density": density_surface, "alpha": alpha_surface,
            "none": lambda points, _: empty_surface()}[options.method]
    return [make(np.asarray(layout, np.float64), options) for layout in layouts]
