"""What a scan is asked for (projection, surfaces), importable without torch: the command line
builds these options for every command that may scan, `render x.scan` included."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from layerscan.core.errors import LayerscanError
from layerscan.core.limits import check_number, check_size

ProjectionMode = Literal["tokens", "fast", "aligned-umap", "independent"]
PROJECTION_MODES: tuple[str, ...] = get_args(ProjectionMode)
PARTICLE_MODES: tuple[str, ...] = ("fast", "aligned-umap", "independent")
"""The modes that lay out particles one by one (`make_projection`); "tokens" lays out the
tokens' hidden states and groups their particles around them (geometry/token_layout.py)."""

DIFF_WINDOW_SIZE = (1600, 720)
"""Default frame of a diff: two panels side by side need a wider frame than one scan's."""

SurfaceMethod = Literal["density", "alpha", "none"]
SURFACE_METHODS: tuple[str, ...] = get_args(SurfaceMethod)


@dataclass
class SurfaceOptions:
    """How layer surfaces are made."""

    method: SurfaceMethod = field(default="density", metadata={"flag": "surface"})
    """density: isosurface of Gaussian-splatted particles (the "fMRI" look); alpha: alpha
    shape of the particles (Delaunay tetrahedra); none: no surfaces."""
    grid: int = 40
    """Voxels along each axis of the density grid."""
    bandwidth: float = 0.04
    """Gaussian width as a fraction of the layout's largest extent."""
    level_quantile: float = field(
        default=0.2, metadata={"flag": "surface-quantile", "metavar": "Q"}
    )
    """The isosurface level is this quantile of the density at the particles, so the surface
    encloses about 1 - level_quantile of them."""
    alpha: float = 0.0
    """Alpha radius as a fraction of the largest extent (0: 4 x mean nearest-neighbour
    distance)."""

    def __post_init__(self):
        if self.method not in SURFACE_METHODS:
            raise LayerscanError(
                f"unknown surface method {self.method!r}: use {', '.join(SURFACE_METHODS)}"
            )
        if self.grid < 4 or not 0 < self.bandwidth < 1 or not 0 <= self.level_quantile < 1:
            raise LayerscanError(
                "surface options need grid >= 4, 0 < bandwidth < 1 and 0 <= level_quantile < 1"
            )
        check_size(self.grid, "surface_grid", "--surface-grid", low=4)
        check_number(self.alpha, "--alpha", 0, 1)


@dataclass
class ScanOptions:
    """How a scan is projected, measured and surfaced."""

    projection: ProjectionMode = "tokens"
    """tokens: every token placed by its hidden state (aligned layout of the token states,
    started from PCA), its particles grouped around that place; fast: the particles laid out
    one by one with the aligned-UMAP objective in torch; aligned-umap: umap-learn's
    AlignedUMAP of the particles (the slow reference); independent: per-layer UMAP of the
    particles rotated onto the previous layer."""
    n_neighbors: int | None = field(default=None, metadata={"flag": "neighbors", "metavar": "K"})
    """Neighbours in UMAP's fuzzy graph; None: 10 for fast (measured: faster and more
    trustworthy than 15), 15 for the umap modes."""
    n_epochs: int | None = field(default=None, metadata={"flag": "epochs"})
    """Optimisation epochs; None: 200 steps for tokens (180 from 48 tokens), 150 for fast,
    200 for the umap modes."""
    group_spread: float = 0.08
    """tokens: mean distance of a token's particles from its place, as a share of the
    layout's radius (small keeps every token a compact, readable group)."""
    alignment: float = 0.03
    """Fast mode: pull of particle i towards particle i in neighbouring layers."""
    k_neighbors: int = field(default=10, metadata={"flag": "line-neighbors", "metavar": "K"})
    """Nearest particles (in the cloud) stored per particle, for drawing lines."""
    faithfulness_k: int = 10
    """Neighbourhood size of trustworthiness and continuity."""
    diagnostics: bool = False
    """Also measure the particle stage: cloud-to-3D trust and continuity (k = faithfulness_k)
    and the Procrustes disparity between layers. Off they are NaN in the scan (unmeasured);
    the frame's figures are the end-to-end token ones either way. `layerscan scan` measures
    them for its table."""
    token_time: bool = False
    """Causal models: one frame per prefix (layer-time x token-time)."""
    token_time_epochs: int = 30
    """Fast mode: epochs refining each prefix after placing it in the full prompt's layout."""
    surface: SurfaceOptions = field(default_factory=SurfaceOptions)
    """Surface method and its parameters."""
    seed: int = field(default=0, metadata={"flag": "projection-seed"})
    """Random state of every stochastic step; same input + seed → byte-identical scan."""
    device: str = field(default="cpu", metadata={"cli": False})
    """Where fast mode optimises ("cpu", "cuda", "cuda:1", ...); `scan_prompt` sets it to the
    model's device."""
    threads: int | None = 1
    """CPU threads for torch while scanning (None: torch's default). One thread is faster
    for these small tensors on a loaded machine, and results do not depend on it."""

    def __post_init__(self):
        if self.projection not in PROJECTION_MODES:
            raise LayerscanError(
                f"unknown projection {self.projection!r}: use {', '.join(PROJECTION_MODES)}"
            )
        if (
            (self.n_neighbors is not None and self.n_neighbors < 2)
            or self.k_neighbors < 1
            or self.faithfulness_k < 1
        ):
            raise LayerscanError("n_neighbors must be >= 2, k_neighbors and faithfulness_k >= 1")
        if self.n_epochs is not None and self.n_epochs < 1:
            raise LayerscanError("n_epochs must be >= 1")
        if not 0 <= self.group_spread <= 1:
            raise LayerscanError(f"group_spread must be in [0, 1], got {self.group_spread}")
        for flag, value, name in (
            ("--neighbors", self.n_neighbors, "neighbors"),
            ("--epochs", self.n_epochs, "epochs"),
            ("--line-neighbors", self.k_neighbors, "k_neighbors"),
            ("--faithfulness-k", self.faithfulness_k, "k_neighbors"),
            ("--threads", self.threads, "threads"),
        ):
            if value is not None:
                check_size(value, name, flag)
        check_size(self.token_time_epochs, "epochs", "--token-time-epochs", low=0)
        check_number(self.alignment, "--alignment", 0, 100)
        check_size(self.seed, "seed", "--projection-seed", low=0)
