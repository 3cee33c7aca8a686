"""Captures and an autoencoder in, `Scan` / `DiffScan` records out: encode, lay out, measure,
surface (the pipeline calls these once the model has run)."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import torch

from layerscan import __version__
from layerscan.autoencoder.capture.capture_file import Capture
from layerscan.core.errors import LayerscanError
from layerscan.geometry.alignment import align_tokens, linear_cka, shared_states, token_divergence
from layerscan.geometry.attention_summary import summarize
from layerscan.geometry.diff import (
    cloud_displacement,
    common_layouts,
    shared_positions,
    shared_space,
)
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.faithfulness import Faithfulness, faithfulness, token_figures
from layerscan.geometry.neighbors import nearest_neighbors
from layerscan.geometry.projection import (
    make_projection,
    transform_init,
)
from layerscan.geometry.scan_file import TOKEN_FIGURES, Scan, token_weights
from layerscan.geometry.scan_options import ScanOptions
from layerscan.geometry.surfaces import layer_surfaces
from layerscan.geometry.token_layout import TokenLayout, grouped_positions
from layerscan.geometry.token_time import step_places

_THREADS: contextvars.ContextVar[int | None] = contextvars.ContextVar("threads", default=None)
"""The thread count an enclosing `torch_threads` block set, if any."""


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with `n` torch and BLAS threads (None: leave as is), then restore them.

    Inside a block that already set `n`, nothing is set again.
    """
    from threadpoolctl import threadpool_limits

    if n is None or _THREADS.get() == n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    token = _THREADS.set(n)
    try:
        with threadpool_limits(n):  # numpy's BLAS too
            yield
    finally:
        _THREADS.reset(token)
        torch.set_num_threads(before)


def project(
    clouds: np.ndarray,
    options: ScanOptions,
    init: np.ndarray | None = None,
    n_epochs: int | None = None,
    learning_rate: float = 1.0,
) -> np.ndarray:
    """(n_layers+1, n_points, d) clouds → (n_layers+1, n_points, 3) aligned finite layouts.

    An estimator's ValueError (too few points for UMAP, ...) becomes a one-line LayerscanError.
    """
    params = {} if options.n_neighbors is None else {"n_neighbors": options.n_neighbors}
    epochs = n_epochs or options.n_epochs
    if epochs is not None:
        params["n_epochs"] = epochs
    fit = {}
    if options.projection == "fast":
        params.update(
            alignment_regularisation=options.alignment,
            device=options.device,
            learning_rate=learning_rate,
        )
        fit = {"init": init}
    try:
        estimator = make_projection(options.projection, options.seed, **params)
        return estimator.fit(clouds, **fit).embedding_
    except ValueError as exc:
        raise LayerscanError(f"--projection {options.projection}: {exc}") from exc


def _settings(capture: Capture, autoencoder, options: ScanOptions) -> dict:
    config = autoencoder.config
    return {
        "projection": asdict(options),
        "normalization": capture.normalization,
        "is_causal": capture.is_causal,
        "revision": capture.revision,
        "autoencoder": {
            "model_id": config.model_id,
            "n_particles": config.n_particles,
            "d_particle": config.d_particle,
            "metrics": config.metrics,
        },
        "layerscan_version": __version__,
    }


def warn_unknown_r2(r2: np.ndarray, layer_names: list[str]) -> None:
    """Warn (never draw silently) when the autoencoder's R² is not a number at some layers,
    e.g. states scaled far beyond what its statistics hold (a capture scaled by 1e30).

    Args:
        r2: (n_steps, n_layers+1) reconstruction R².
    """
    unknown = np.flatnonzero(~np.isfinite(r2).all(axis=0))  # layers with a NaN or inf R²
    if unknown.size:
        import warnings

        from layerscan.core.errors import Caution

        names = ", ".join(layer_names[i] for i in unknown[:3]) + (
            " ..." if unknown.size > 3 else ""
        )
        warnings.warn(
            f"the autoencoder's R² is not a number at {unknown.size} layers ({names}): these "
            f"hidden states lie far outside what it was fitted on (e.g. rescaled), so the "
            f"picture there is not faithful",
            Caution,
            stacklevel=3,
        )


def build_scan(
    capture: Capture,
    step_lengths: list[int],
    clouds: np.ndarray,
    positions: np.ndarray,
    reconstruction_r2: np.ndarray,
    prompt_r2: np.ndarray,
    particle_tokens: np.ndarray,
    options: ScanOptions,
    settings: dict,
    timings: dict | None = None,
    step_layouts: list[str] | None = None,
    baseline: np.ndarray | None = None,
) -> Scan:
    """Assemble a Scan from layouts: neighbour graph, faithfulness and surfaces per step.

    Args:
        clouds: (n_steps, n_layers+1, n_particles, d_particle).
        positions: (n_steps, n_layers+1, n_particles, 3) finite.
        reconstruction_r2, prompt_r2: (n_steps, n_layers+1) corpus- and prompt-centred R².
        particle_tokens: (n_steps, n_particles) token of each particle at each step.
        step_layouts: (n_steps,) which layout each step shows (see `Scan.step_layouts`).
        baseline: PCA-3 of the whole prompt's token states where already computed (the
            token layout's `pca_`): the last step's baseline.
    """
    timings = {} if timings is None else timings
    warn_unknown_r2(np.asarray(reconstruction_r2), capture.layer_names)
    start = time.perf_counter()
    k = max(options.k_neighbors, options.faithfulness_k if options.diagnostics else 1)
    knn = np.stack(
        [
            nearest_neighbors(torch.from_numpy(np.ascontiguousarray(c)), k).indices.numpy()
            for c in clouds
        ]
    )  # (n_steps, L+1, N, k)
    unmeasured = np.full(positions.shape[:2], np.nan)  # (n_steps, L+1)
    figures = (
        [
            faithfulness(c, p, options.faithfulness_k, n)
            for c, p, n in zip(clouds, positions, knn, strict=True)
        ]
        if options.diagnostics
        else [Faithfulness(row, row, row) for row in unmeasured]
    )
    neighbors = knn[..., : options.k_neighbors].astype(np.int32)  # (n_steps, L+1, N, k_nn)
    owner = np.broadcast_to(particle_tokens[:, None], positions.shape[:3]).astype(np.int32)
    baselines = [None] * (len(step_lengths) - 1) + [baseline]
    ends = [
        token_figures(capture.hidden[:, :n], p, o, b)
        for n, p, o, b in zip(step_lengths, positions, owner, baselines, strict=True)
    ]
    timings["faithfulness"] = time.perf_counter() - start
    start = time.perf_counter()
    surfaces = [
        layer_surfaces(p, options.surface, token_weights(o))
        for p, o in zip(positions, particle_tokens, strict=True)
    ]  # every token weighs 1 in the density, however many particles it has
    timings["surfaces"] = time.perf_counter() - start
    scan = Scan(
        prompt=capture.prompt,
        model_id=capture.model_id,
        tokens=list(capture.tokens),
        n_prompt_tokens=capture.n_prompt_tokens,
        layer_names=capture.layer_names,
        step_lengths=[int(n) for n in step_lengths],
        clouds=clouds.astype(np.float32),
        positions=positions.astype(np.float32),
        neighbors=neighbors,
        reconstruction_r2=np.asarray(reconstruction_r2, np.float32),
        prompt_r2=np.asarray(prompt_r2, np.float32),
        trustworthiness=np.stack([f.trustworthiness for f in figures]).astype(np.float32),
        continuity=np.stack([f.continuity for f in figures]).astype(np.float32),
        disparity=np.stack([f.disparity for f in figures]).astype(np.float32),
        particle_tokens=np.ascontiguousarray(owner),
        **{
            name: np.stack([getattr(e, name) for e in ends]).astype(np.float32)
            for name in TOKEN_FIGURES
        },
        surfaces=surfaces,
        lens_tokens=capture.lens_tokens,
        lens_probs=None
        if capture.lens_probs is None
        else np.asarray(capture.lens_probs, np.float32),
        settings=settings,
        step_layouts=list(step_layouts or []),
        attention=None if capture.attention is None else summarize(capture.attention),
        components=capture.components,
    )
    scan.validate()
    return scan


def scan_capture(
    capture: Capture, autoencoder, options: ScanOptions | None = None, timings: dict | None = None
) -> Scan:
    """Encode, project, measure and surface every layer of one captured prompt.

    Args:
        capture: hidden states of the prompt (any length >= 1).
        autoencoder: a TrainedAutoencoder for the capture's model.
        options: projection and surface settings; defaults to ScanOptions().
        timings: if given, filled with seconds per stage (encode, project, ...).

    Returns:
        A validated Scan; with `options.token_time` on a causal capture, one step per prefix.
    """
    options = options or ScanOptions()
    timings = {} if timings is None else timings
    autoencoder.check_compatible(capture)
    with torch_threads(options.threads):
        start = time.perf_counter()
        if options.token_time:
            if not capture.is_causal:
                raise LayerscanError(
                    "--token-time needs a causal model (its prefixes are exact); scan without it"
                )
            lengths = list(range(1, capture.n_tokens + 1))
            encoded = autoencoder.encode_prefixes(capture.hidden, lengths)
        else:
            lengths = [capture.n_tokens]
            encoded = [autoencoder.encode(capture.hidden)]
        clouds = np.stack([e.clouds for e in encoded])  # (n_steps, L+1, N, d_particle)
        r2 = np.stack([e.reconstruction_r2 for e in encoded])  # (n_steps, L+1)
        own_r2 = np.stack([e.prompt_r2 for e in encoded])  # (n_steps, L+1)
        owner = np.stack([e.particle_tokens for e in encoded])  # (n_steps, N)
        timings["encode"] = time.perf_counter() - start
        start = time.perf_counter()
        baseline = None  # PCA-3 of the token states, where the layout computed it
        if options.projection == "tokens":
            estimator = token_layout(options)
            full = estimator.fit(capture.hidden).embedding_.astype(np.float64)
            baseline = estimator.pca_
            if len(lengths) > 1:  # token-time: each prefix at least as faithful as its PCA-3
                places, layouts = step_places(capture.hidden, full, lengths)
            else:
                places, layouts = [full], [used_layout(estimator)]
            positions = np.stack(
                [
                    grouped_positions(p, c, o, options.group_spread)
                    for p, c, o in zip(places, clouds, owner, strict=True)
                ]
            )  # (n_steps, L+1, N, 3)
        else:
            positions = _particle_positions(clouds, options)
            layouts = [options.projection] * len(lengths)
        timings["project"] = time.perf_counter() - start
        return build_scan(
            capture,
            lengths,
            clouds,
            positions,
            r2,
            own_r2,
            owner,
            options,
            _settings(capture, autoencoder, options),
            timings,
            layouts,
            baseline,
        )


def token_layout(options: ScanOptions) -> TokenLayout:
    """The token layout estimator that `options` describe."""
    return TokenLayout(**({} if options.n_epochs is None else {"n_iter": options.n_epochs}))


def used_layout(estimator: TokenLayout) -> str:
    """ "tokens" when a fitted token layout beat its aligned PCA-3 start, else "pca"."""
    return "tokens" if estimator.improved_ else "pca"


def _particle_positions(clouds: np.ndarray, options: ScanOptions) -> np.ndarray:
    """(n_steps, L+1, N, d) → (n_steps, L+1, N, 3): the particle-by-particle modes."""
    positions = np.zeros((*clouds.shape[:3], 3), np.float32)
    positions[-1] = project(clouds[-1], options)
    # the autoencoder re-routes particles as tokens arrive, so particle i of a prefix is not
    # particle i of the full prompt: each prefix particle starts among its nearest
    # full-prompt particles (same layer), then a short gentle refinement
    for step in range(len(clouds) - 1):
        if options.projection == "fast":
            init = transform_init(clouds[step], clouds[-1], positions[-1])
            positions[step] = project(
                clouds[step],
                options,
                init=init,
                n_epochs=options.token_time_epochs,
                learning_rate=0.25,
            )
        else:
            positions[step] = project(clouds[step], options)
    return positions


def diff_captures(
    capture_a: Capture,
    capture_b: Capture,
    autoencoder,
    options: ScanOptions | None = None,
    timings: dict | None = None,
    other_model: bool = False,
) -> DiffScan:
    """Two prompts (or two models) through one autoencoder, in ONE common 3D space per layer.

    The tokens are aligned by their ids; the divergence is measured on the hidden states of
    the aligned pairs; with the token layout, the two prompts' distinct token states are laid
    out together (a shared prefix gets one place) and no layer is less faithful, on either
    side, than a joint PCA-3 of both prompts' token states.

    Args:
        capture_a, capture_b: captures of the two prompts from the same model.
        autoencoder: a TrainedAutoencoder for A's model.
        options: as for scan_capture (token_time is ignored: a diff has one step).
        timings: if given, filled with seconds per stage.
        other_model: B may come from another model of A's shapes (a fine-tune, or A with an
            adapter): A is checked against the autoencoder in full, B by shapes only.

    Returns:
        A validated DiffScan; a prompt diffed with itself has exactly zero divergence.
    """
    options = options or ScanOptions()
    timings = {} if timings is None else timings
    autoencoder.check_compatible(capture_a)
    autoencoder.check_compatible(capture_b, shapes_only=other_model)
    compared = "models" if capture_a.model_id != capture_b.model_id else "prompts"
    with torch_threads(options.threads):
        start = time.perf_counter()
        alignment = align_tokens(capture_a.token_ids, capture_b.token_ids)
        measured = token_divergence(capture_a.hidden, capture_b.hidden, alignment.aligned)
        pairs = alignment.aligned
        cka = linear_cka(capture_a.hidden[:, pairs[:, 0]], capture_b.hidden[:, pairs[:, 1]])
        timings["divergence"] = time.perf_counter() - start
        start = time.perf_counter()
        enc_a, enc_b = autoencoder.encode(capture_a.hidden), autoencoder.encode(capture_b.hidden)
        timings["encode"] = time.perf_counter() - start
        start = time.perf_counter()
        used = options.projection
        shared = shared_states(
            capture_a.hidden, capture_b.hidden, capture_a.token_ids, capture_b.token_ids, pairs
        )
        # particle modes: the joint PCA-3 alone, for its baseline figures
        layout = token_layout(options) if options.projection == "tokens" else TokenLayout(n_iter=0)
        space = shared_space(layout, capture_a.hidden, capture_b.hidden, shared)
        if options.projection == "tokens":
            positions_a, positions_b = shared_positions(
                space,
                enc_a.clouds,
                enc_b.clouds,
                enc_a.particle_tokens,
                enc_b.particle_tokens,
                options.group_spread,
            )
            used = "pca" if space.fallback.all() else "tokens"
        else:
            positions_a, positions_b = common_layouts(
                enc_a.clouds, enc_b.clouds, lambda c: project(c, options)
            )
        timings["project"] = time.perf_counter() - start
        scans = [
            build_scan(
                c,
                [c.n_tokens],
                e.clouds[None],
                p[None],
                e.reconstruction_r2[None],
                e.prompt_r2[None],
                e.particle_tokens[None],
                options,
                {**_settings(c, autoencoder, options), "common_space": True, "compared": compared},
                timings,
                [used],
            )
            for c, e, p in ((capture_a, enc_a, positions_a), (capture_b, enc_b, positions_b))
        ]
    diff = DiffScan(
        a=scans[0],
        b=scans[1],
        aligned_tokens=pairs.astype(np.int32),
        divergence=measured.divergence,
        token_divergence_a=measured.token_a,
        token_divergence_b=measured.token_b,
        peak_layer=int(np.argmax(measured.divergence)),
        joint_trust=space.joint_trust,
        joint_correlation=space.joint_correlation,
        fallback_layers=space.fallback
        if options.projection == "tokens"
        else np.zeros(len(space.fallback), bool),
        cka=cka,
        displacement_cloud=cloud_displacement(enc_a.clouds, enc_b.clouds),
    )
    diff.validate()
    return diff
