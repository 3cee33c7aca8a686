"""A surface per layer: density isosurface of Gaussian-splatted particles, or an alpha shape."""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import map_coordinates

from layerscan.geometry.scan_file import Surface
from layerscan.geometry.scan_options import SurfaceOptions


def empty_surface() -> Surface:
    return Surface(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32))


def splat_density(
    points: np.ndarray, grid: int, bandwidth: float, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """Weighted sum of isotropic Gaussians at the points, on a regular grid around them.

    The 3D Gaussian is separable, so the grid is one matrix product per layer:
    density[x, y, z] = sum_p w[p] * gx[p, x] * gy[p, y] * gz[p, z].

    Args:
        points: (n_points, 3) finite.
        weights: (n_points,) each point's mass (see `scan_file.token_weights`), None: 1.

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
    gx = g[:, 0, :]  # (n_points, grid)
    if weights is not None:
        gx = gx * torch.from_numpy(np.asarray(weights, np.float32))[:, None]
    density = (gx.T @ yz).reshape(grid, grid, grid)  # (grid, grid, grid) x, y, z
    return density.float().numpy(), origin.astype(np.float64), float(spacing)


def density_surface(
    points: np.ndarray, options: SurfaceOptions, weights: np.ndarray | None = None
) -> Surface:
    """Isosurface of the splatted density at the `level_quantile` of the particles' density.

    Marching cubes (scikit-image, Lewiner) on the density grid. With token weights, every
    token counts once, in the density and in the quantile, however many particles it has.

    Args:
        points: (n_points, 3) finite layout of one layer.
        weights: (n_points,) each particle's mass, None: 1 each.
    """
    from skimage.measure import marching_cubes

    if len(points) < 4 or np.ptp(points, axis=0).max() <= 0:
        return empty_surface()
    density, origin, spacing = splat_density(points, options.grid, options.bandwidth, weights)
    at_points = map_coordinates(density, ((points - origin) / spacing).T, order=1)
    level = float(
        np.quantile(at_points, options.level_quantile)
        if weights is None
        else np.quantile(at_points, options.level_quantile, weights=weights, method="inverted_cdf")
    )
    if not density.min() < level < density.max():
        return empty_surface()
    vertices, faces, _, _ = marching_cubes(
        density, level, spacing=(spacing,) * 3, allow_degenerate=False
    )  # (n_vertices, 3) x, y, z
    if len(faces) == 0:
        return empty_surface()
    return Surface((vertices + origin).astype(np.float32), faces.astype(np.int32))


def circumradii(tetrahedra: np.ndarray) -> np.ndarray:
    """(n, 4, 3) tetrahedra → (n,) circumsphere radii; inf for flat ones."""
    edges = tetrahedra[:, 1:] - tetrahedra[:, :1]  # (n, 3, 3)
    rhs = 0.5 * (edges**2).sum(-1)  # (n, 3)
    det = np.linalg.det(edges)  # (n,)
    scale = np.abs(edges).max((1, 2)) ** 3
    flat = np.abs(det) <= 1e-12 * np.maximum(scale, 1e-300)
    radii = np.full(len(tetrahedra), np.inf)
    if (~flat).any():
        centre = np.linalg.solve(edges[~flat], rhs[~flat][..., None])[..., 0]  # (m, 3)
        radii[~flat] = np.linalg.norm(centre, axis=-1)
    return radii


def alpha_surface(
    points: np.ndarray, options: SurfaceOptions, weights: np.ndarray | None = None
) -> Surface:
    """The alpha shape's outer surface: the triangles of exactly one Delaunay tetrahedron
    whose circumsphere is smaller than the alpha radius (a shape, not a density: `weights`
    are not used)."""
    from scipy.spatial import Delaunay, QhullError

    if len(points) < 4 or np.ptp(points, axis=0).max() <= 0:
        return empty_surface()
    if options.alpha > 0:
        alpha = options.alpha * float(np.ptp(points, axis=0).max())
    else:
        from layerscan.geometry.neighbors import nearest_neighbors

        nn = nearest_neighbors(torch.from_numpy(points[None].astype(np.float32)), 1)
        alpha = 4.0 * float(nn.distances.mean())
    try:
        tets = Delaunay(points).simplices  # (n_tets, 4)
    except QhullError:  # coplanar or collinear points: no volume
        return empty_surface()
    kept = tets[circumradii(points[tets]) <= alpha]
    if len(kept) == 0:
        return empty_surface()
    # each tetrahedron's 4 faces (the scene orients the winding when it draws them)
    faces = kept[:, [[1, 2, 3], [0, 3, 2], [0, 1, 3], [0, 2, 1]]].reshape(-1, 3)
    _, index, counts = np.unique(
        np.sort(faces, axis=1), axis=0, return_index=True, return_counts=True
    )
    outer = faces[np.sort(index[counts == 1])]  # (n_faces, 3), in a deterministic order
    used, compact = np.unique(outer, return_inverse=True)
    return Surface(points[used].astype(np.float32), compact.reshape(-1, 3).astype(np.int32))


def layer_surfaces(
    layouts: np.ndarray, options: SurfaceOptions | None = None, weights: np.ndarray | None = None
) -> list[Surface]:
    """One surface per layer.

    Args:
        layouts: (n_layers, n_points, 3) finite.
        weights: (n_points,) each point's mass in a density (the same at every layer), None: 1.

    Returns:
        n_layers surfaces; empty ones where a layer is degenerate (too few or coincident
        points) or the method is "none".
    """
    options = options or SurfaceOptions()
    make = {
        "density": density_surface,
        "alpha": alpha_surface,
        "none": lambda *_: empty_surface(),
    }[options.method]
    return [make(np.asarray(layout, np.float64), options, weights) for layout in layouts]
