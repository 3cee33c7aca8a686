"""The figures line of a frame: how far to trust this layer's picture, in words and numbers.

Pure text from a scan record (no VTK), so the frame, the window and tests share it.
"""

from __future__ import annotations

R2_WARNING = 0.5
"""Below this prompt-centred R² at any layer, the frame and the command warn."""


def figures_text(scan, step: int, layer: int, short: bool = False) -> str:
    """The figures of `layer` at token-time `step` (what they mean, the PCA-3 note and the
    low-R² warning are the frame's caption and warning lines: scene/caption.py).

    Args:
        scan: a `Scan` record.
        step: token-time step (< scan.n_steps).
        layer: layer index (< scan.n_layers + 1).
        short: the same figures in fewer words, for narrow frames.

    Returns:
        One line.
    """
    r2, trust, base_trust, chance, corr, base_corr = (
        float(getattr(scan, name)[step, layer])
        for name in (
            "prompt_r2",
            "token_trust",
            "baseline_trust",
            "chance_trust",
            "distance_correlation",
            "baseline_correlation",
        )
    )
    if short:
        return (
            f"R² {r2:.2f} · trust {trust:.2f} (PCA-3 {base_trust:.2f}, chance {chance:.2f}) · "
            f"corr. {corr:.2f} (PCA-3 {base_corr:.2f})"
        )
    return (
        f"autoencoder R² {r2:.2f}   token trust {trust:.2f} (PCA-3 {base_trust:.2f}, "
        f"chance {chance:.2f})   distance corr. {corr:.2f} (PCA-3 {base_corr:.2f})"
    )


def r2_warning(prompt_r2) -> str:
    """A warning when the autoencoder keeps less than R2_WARNING of any layer, else "".

    Args:
        prompt_r2: (n_layers+1,) prompt-centred R² of one step.
    """
    values = [float(v) for v in prompt_r2]
    worst = min(range(len(values)), key=values.__getitem__)
    if values[worst] >= R2_WARNING:
        return ""
    low = sum(v < R2_WARNING for v in values)
    return (
        f"warning: autoencoder R² < {R2_WARNING} at {low} of {len(values)} layers (worst "
        f"{values[worst]:.2f}, layer {worst}): the particles miss much of the states; train "
        f"on a larger corpus"
    )


def step_layout(scan, step: int) -> str:
    """Which layout `step` shows ("tokens", "pca", a projection name), "" if not recorded."""
    layouts = getattr(scan, "step_layouts", None) or []
    return layouts[step] if step < len(layouts) else ""
