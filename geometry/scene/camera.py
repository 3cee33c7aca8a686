"""A camera that frames the layer on show, smoothed through layer-time (no plotter here).

The cloud of one layer can be much smaller than the union of every layer seen from every
orbit angle, so framing that union leaves most of a frame empty. Here each layer gets its own
centre and camera distance; both are smoothed along the layers (exponential smoothing run
forwards and backwards, so the camera neither lags nor jumps) and interpolated between layers
with the same easing as the particles.
"""

from __future__ import annotations

import numpy as np

from layerscan.geometry.scene import frames as fr

SMOOTHING = 0.6
"""Weight of the new layer in the exponential smoothing of centre and log-distance (1: none)."""
REACH = 0
"""Layers on either side whose framing a layer's distance also covers before smoothing, so a
layer that grows is never cut off while the camera catches up."""
ORBIT_SPAN = (0.0, 30.0)
"""Degrees from the start view that each layer is framed for (a movie orbits 30 by default);
the window keeps whatever zoom the user sets on top."""
STRAYS = 0.5
"""Percent of a layer's particles, the farthest from its centre, that framing ignores (a few
strays would otherwise shrink the whole picture)."""
MAX_POINTS = 4000
"""Points per layer used for framing (a long prompt's cloud is subsampled evenly)."""


def smooth(values: np.ndarray, alpha: float = SMOOTHING) -> np.ndarray:
    """Zero-lag exponential smoothing along axis 0: the mean of a forward and a backward pass.

    Args:
        values: (n, ...) values in order.
        alpha: weight of each new value, in (0, 1].

    Returns:
        (n, ...) smoothed values; equal to `values` when they are constant.
    """
    v = np.asarray(values, np.float64)
    fwd, bwd = v.copy(), v.copy()
    for i in range(1, len(v)):
        fwd[i] = alpha * v[i] + (1 - alpha) * fwd[i - 1]
        j = len(v) - 1 - i
        bwd[j] = alpha * v[j] + (1 - alpha) * bwd[j + 1]
    return (fwd + bwd) / 2


def reach_max(values: np.ndarray, reach: int = REACH) -> np.ndarray:
    """(n,) the largest value within `reach` places of each place."""
    v = np.asarray(values, np.float64)
    out = v.copy()
    for k in range(1, reach + 1):
        out[k:] = np.maximum(out[k:], v[:-k])
        out[:-k] = np.maximum(out[:-k], v[k:])
    return out


class LayerCamera:
    """Focal point and camera distance per token step and layer.

    Args:
        layouts: per panel, (n_steps, n_layers+1, n_particles, 3) positions; a diff's two
            panels share one camera, so each layer is framed for both.
        elevation: camera elevation in radians.
        tan_half: tangents of the half view angles across and up the free area.
        start_azimuth: the start view's azimuth in degrees.
    """

    def __init__(
        self,
        layouts: list[np.ndarray],
        elevation: float,
        tan_half: tuple[float, float],
        start_azimuth: float = 0.0,
    ) -> None:
        self.layouts = layouts
        self.azimuths = np.radians(start_azimuth + np.linspace(*ORBIT_SPAN, 4))
        self.elevation, self.tan_half = elevation, tan_half
        self.n_layers = layouts[0].shape[1] - 1
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def per_layer(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Smoothed (n_layers+1, 3) centres and (n_layers+1,) distances of token step `step`."""
        if step not in self._cache:
            centres, distances, framed = [], [], []
            for layer in range(self.n_layers + 1):
                pts = np.concatenate([lay[step, layer] for lay in self.layouts])  # (n, 3)
                pts = pts[:: len(pts) // MAX_POINTS + 1]
                spread = np.linalg.norm(pts - np.median(pts, 0), axis=1)  # (n,)
                pts = pts[spread <= np.percentile(spread, 100 - STRAYS)]
                centre, distance = self.frame_points(pts)
                centres.append(centre)
                distances.append(distance)
                framed.append(pts)
            centres = smooth(np.asarray(centres))  # (n_layers+1, 3)
            smoothed = np.exp(smooth(np.log(reach_max(np.asarray(distances)))))  # (n_layers+1,)
            # smoothing must never cut a layer off: where the picture changes shape at once
            # (the last layer, which the final norm reshapes), the smoothed centre and
            # distance of its neighbours would leave part of it outside the free area
            needed = [
                fr.framing_distance(pts, centre, self.elevation, self.tan_half, self.azimuths)
                for pts, centre in zip(framed, centres, strict=True)
            ]
            self._cache[step] = centres, np.maximum(smoothed, needed)
        return self._cache[step]

    def frame_points(self, pts: np.ndarray) -> tuple[np.ndarray, float]:
        """The focal point (of three candidates) needing the least distance, and that distance.

        A few outliers pull the bounding box's middle, so the mean and the median compete.
        """
        fits = [
            (fr.framing_distance(pts, c, self.elevation, self.tan_half, self.azimuths), c)
            for c in ((pts.min(0) + pts.max(0)) / 2, pts.mean(0), np.median(pts, 0))
        ]
        distance, centre = min(fits, key=lambda fit: fit[0])
        return np.asarray(centre, np.float64), max(float(distance), 1e-6)

    def at(self, step: int, layer: float) -> tuple[np.ndarray, float]:
        """Focal point (3,) and distance at fractional `layer`, eased like the particles."""
        centres, distances = self.per_layer(step)
        lo, hi, t = fr.layer_pair(layer, self.n_layers)
        centre = (1 - t) * centres[lo] + t * centres[hi]
        distance = float(np.exp((1 - t) * np.log(distances[lo]) + t * np.log(distances[hi])))
        return centre, distance
