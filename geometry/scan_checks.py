"""The one validation of a .scan file at load: every array and header field, before any array
reaches numpy indexing or VTK (a scan is something people send each other)."""

from __future__ import annotations

import os
import warnings

import numpy as np

from layerscan.core.errors import Caution
from layerscan.core.file_checks import FLOATS, INTS, FileCheck
from layerscan.core.limits import LIMITS
from layerscan.geometry.scan_file import DIAGNOSTICS, LAYER_FIGURES, META_FIELDS

SURFACE_ARRAYS = ("surface_vertices", "surface_faces", "surface_counts")


def check_scan(path: str | os.PathLike, arrays: dict, meta: object, prefix: str = "") -> None:
    """Raise a one-line LayerscanError unless `arrays` and `meta` (one scan, arrays named with
    `prefix`) form a consistent scan; warn when its figures hold NaN.

    Shapes against each other, dtypes, index ranges (neighbours, particle tokens, surface
    faces), counts that sum to the array lengths, finite positions, clouds and surfaces,
    and bounded sizes.
    """
    check = FileCheck(path, "scan")
    where = f"scan {prefix.rstrip('/')} header" if prefix else "scan header"
    check.keys(meta, META_FIELDS, ("step_layouts", "attention_kind", "components"), where)
    check.value(meta["prompt"], str, "prompt")
    check.value(meta["model_id"], str, "model_id")
    tokens = check.strings(meta["tokens"], "tokens")
    n_tokens = len(tokens)
    if not 1 <= n_tokens <= LIMITS["n_tokens"]:
        raise check.fail(f"it has {n_tokens} tokens, expected 1 to {LIMITS['n_tokens']}")
    check.integer(meta["n_prompt_tokens"], "n_prompt_tokens", 0, n_tokens)
    check.value(meta["settings"], dict, "settings")
    _check_settings(check, meta["settings"])

    def array(name, dtypes, shape, **kw):
        return check.array(arrays, prefix + name, dtypes, shape, **kw)

    positions = array("positions", (np.float32,), (None, None, None, 3))
    n_steps, n_frames, n_particles = positions.shape[:3]
    if min(n_steps, n_frames, n_particles) < 1:
        raise check.fail(f"its positions are empty ({positions.shape})")
    if n_particles > LIMITS["n_particles"] or n_frames - 1 > LIMITS["n_layers"]:
        raise check.fail(
            f"it declares {n_particles} particles and {n_frames - 1} layers; at most "
            f"{LIMITS['n_particles']} and {LIMITS['n_layers']}"
        )
    check.strings(meta["layer_names"], "layer_names", n_frames)
    steps = check.value(meta["step_lengths"], list, "step_lengths")
    if len(steps) != n_steps:
        raise check.fail(f"step_lengths has {len(steps)} items, expected {n_steps}")
    for i, length in enumerate(steps):
        check.integer(length, f"step_lengths[{i}]", 1, n_tokens)
    layouts = meta.get("step_layouts") or []
    if layouts:
        check.strings(layouts, "step_layouts", n_steps)
    array("clouds", FLOATS, (n_steps, n_frames, n_particles, None))
    array("neighbors", INTS, (n_steps, n_frames, n_particles, None), low=0, high=n_particles)
    array("particle_tokens", INTS, (n_steps, n_frames, n_particles), low=0, high=n_tokens)
    unknown = []
    for name in LAYER_FIGURES:
        figure = array(name, FLOATS, (n_steps, n_frames), finite=False)
        if np.isinf(figure).any():
            raise check.fail(f"array {prefix + name!r} holds infinite values")
        unmeasured = name in DIAGNOSTICS and np.isnan(figure).all()  # not asked for
        if np.isnan(figure).any() and not unmeasured:
            unknown.append(name)
    _check_surfaces(check, arrays, prefix, n_steps * n_frames)
    _check_lens(check, arrays, meta["lens_tokens"], prefix, n_frames, n_tokens)
    _check_attention(check, arrays, meta, prefix, n_frames - 1, n_tokens)
    _check_components(check, arrays, meta.get("components"), prefix, n_frames - 1, n_tokens)
    if unknown:
        warnings.warn(
            f"{path}: this scan's {', '.join(unknown)} hold NaN (not a number) at some "
            f"layers; those figures are unknown there, not measured",
            Caution,
            stacklevel=2,
        )


def _check_settings(check: FileCheck, settings: dict) -> None:
    """The settings the scene reads: projection.surface.{method, level_quantile}."""
    projection = settings.get("projection", {})
    check.value(projection, dict, "settings.projection")
    surface = projection.get("surface", {})
    check.value(surface, dict, "settings.projection.surface")
    quantile = surface.get("level_quantile", 0.2)
    check.value(quantile, (int, float), "settings.projection.surface.level_quantile")
    if not 0 <= quantile <= 1:
        raise check.fail(f"settings.projection.surface.level_quantile is {quantile}, not in [0, 1]")


def _check_surfaces(check: FileCheck, arrays: dict, prefix: str, n_surfaces: int) -> None:
    """Counts (n_surfaces, 2) that sum to the vertex and face arrays; every face's indices
    within its own surface's vertices."""
    counts = check.array(arrays, prefix + "surface_counts", INTS, (n_surfaces, 2), low=0)
    vertices = check.array(arrays, prefix + "surface_vertices", FLOATS, (None, 3))
    faces = check.array(arrays, prefix + "surface_faces", INTS, (None, 3), low=0)
    totals = counts.sum(axis=0, dtype=np.float64)  # float: a hostile count cannot overflow
    if totals[0] != len(vertices) or totals[1] != len(faces):
        raise check.fail(
            f"its surface counts add up to {totals[0]:.0f} vertices and {totals[1]:.0f} faces, "
            f"but it holds {len(vertices)} and {len(faces)}"
        )
    own = np.repeat(counts[:, 0], counts[:, 1])  # (n_faces,) vertices of each face's surface
    if len(faces) and (faces >= own[:, None]).any():
        raise check.fail("a surface face points past its surface's vertices")


def _check_lens(check, arrays, lens_tokens, prefix, n_frames: int, n_tokens: int) -> None:
    """Logit-lens probabilities (n_layers+1, n_tokens, top_k) in [0, 1] and tokens alike."""
    probs = check.array(
        arrays, prefix + "lens_probs", FLOATS, (n_frames, n_tokens, None), required=False
    )
    if lens_tokens is None:
        return
    if probs is None:
        raise check.fail("it has logit-lens tokens but no lens_probs")
    if probs.size and not ((probs >= 0) & (probs <= 1)).all():
        raise check.fail("lens_probs holds values outside [0, 1]")
    check.value(lens_tokens, list, "lens_tokens")
    if len(lens_tokens) != n_frames:
        raise check.fail(f"lens_tokens has {len(lens_tokens)} layers, expected {n_frames}")
    for layer in lens_tokens:
        check.value(layer, list, "lens_tokens[layer]")
        if len(layer) != n_tokens:
            raise check.fail(f"lens_tokens has {len(layer)} positions, expected {n_tokens}")
        for row in layer:
            check.strings(row, "lens_tokens[layer][position]", probs.shape[2])


def check_diff(path: str | os.PathLike, arrays: dict, meta: dict) -> None:
    """A diff file: both scans (checked by `check_scan`, each with its own token count), the
    token alignment (pairs in range, each token at most once, in order) and the divergence
    arrays sized by the scans."""
    check = FileCheck(path, "diff scan")
    check.keys(meta, ("type", "a", "b", "peak_layer"), ("diff_version", "threshold"), "diff header")
    if meta.get("diff_version") != 3:  # DiffScan.load names the fix for older diffs
        return
    check_scan(path, arrays, meta["a"], "a/")
    check_scan(path, arrays, meta["b"], "b/")
    steps_a, n_frames = arrays["a/positions"].shape[:2]
    if arrays["b/positions"].shape[:2] != (steps_a, n_frames) or steps_a != 1:
        raise check.fail("its two scans differ in layers or have several token-time steps")
    n_a, n_b = len(meta["a"]["tokens"]), len(meta["b"]["tokens"])
    pairs = check.array(arrays, "aligned_tokens", INTS, (None, 2), low=0)
    if len(pairs) > min(n_a, n_b) or (len(pairs) and (pairs.max(axis=0) >= (n_a, n_b)).any()):
        raise check.fail(f"aligned_tokens holds pairs outside its {n_a} and {n_b} tokens")
    if len(pairs) > 1 and (np.diff(pairs, axis=0) <= 0).any():
        raise check.fail("aligned_tokens is not strictly increasing in both prompts")
    check.array(arrays, "divergence", FLOATS, (n_frames,))
    check.array(arrays, "token_divergence_a", FLOATS, (n_frames, n_a))
    check.array(arrays, "token_divergence_b", FLOATS, (n_frames, n_b))
    for name, shape in (
        ("joint_trust", (2, n_frames)),
        ("joint_correlation", (2, n_frames)),
        ("cka", (n_frames,)),
        ("displacement_cloud", (n_frames, None)),
    ):
        check.array(arrays, name, FLOATS, shape, required=False)
    check.array(arrays, "fallback_layers", (np.bool_,), (n_frames,), required=False)
    check.integer(meta["peak_layer"], "peak_layer", 0, n_frames - 1)
    threshold = check.value(meta.get("threshold", 0.5), (int, float), "threshold")
    if not (np.isfinite(threshold) and threshold >= 0):
        raise check.fail(f"threshold is {threshold}, expected a finite number of 0 or more")


def _check_attention(check, arrays, meta, prefix, n_layers: int, n_tokens: int) -> None:
    """The optional attention summary: top keys within the tokens (-1 past a row), finite
    weights in [0, 1], entropies and sink shares per layer and head, a known kind."""
    if meta.get("attention_kind", "weights") not in ("weights", "value-weighted"):
        raise check.fail(f"unknown attention kind {meta['attention_kind']!r}")
    names = ("top_keys", "top_weights", "entropy", "sink_share")
    if not any(f"{prefix}attention_{name}" in arrays for name in names):
        return
    keys = check.array(
        arrays,
        f"{prefix}attention_top_keys",
        INTS,
        (n_layers, None, n_tokens, None),
        low=-1,
        high=n_tokens,
    )
    n_heads = keys.shape[1] - 1
    if n_heads < 1:
        raise check.fail("its attention has no heads")
    weights = check.array(arrays, f"{prefix}attention_top_weights", FLOATS, keys.shape)
    if weights.size and not ((weights >= 0) & (weights <= 1 + 1e-3)).all():
        raise check.fail("its attention weights are outside [0, 1]")
    check.array(arrays, f"{prefix}attention_entropy", FLOATS, (n_layers, n_heads))
    check.array(arrays, f"{prefix}attention_sink_share", FLOATS, (n_layers, n_heads + 1))


def _check_components(check, arrays, meta, prefix, n_layers: int, n_tokens: int) -> None:
    """The optional component record (--components): per block and token finite writes and
    shares, the attention split, the KV cache per token (Components.validate checks the rest)."""
    from layerscan.autoencoder.capture.component_record import ARRAYS, SPLIT_PARTS

    names = [f"{prefix}components/{name}" for name in ARRAYS]
    check.value(meta, (dict, type(None)), "components")
    if meta is None or names[0] not in arrays:
        return
    for key in ("parallel", "residual_error", "replay_seconds"):
        if key not in meta:
            raise check.fail(f"its components header lacks {key}")
    check.value(meta["parallel"], bool, "components.parallel")
    for key in ("residual_error", "replay_seconds"):
        check.value(meta[key], (int, float), f"components.{key}")
    for name in names[:5]:
        check.array(arrays, name, FLOATS, (n_layers, n_tokens))
    check.array(arrays, names[5], FLOATS, (n_layers, n_tokens, len(SPLIT_PARTS)))
    for name in names[6:]:
        check.array(arrays, name, INTS, (n_tokens,), low=0)
