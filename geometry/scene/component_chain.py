"""The "lightning chain" still: tokens x blocks heat strips of what attention and the MLP wrote
into the residual stream over a generation, the generated tokens marked, with colour bars."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from layerscan.core.errors import LayerscanError
from layerscan.core.outputs import atomic_path
from layerscan.geometry.scene.overlays import token_label

BACKGROUND = "#0e1117"
INK, DIM, ACCENT = "#eef0f4", "#8c94a3", "#ffc740"
COLORMAP = "inferno"
CLIP_PERCENTILE = 99.0
"""Colours saturate at this percentile of the writes (said under the colour bars)."""
MAX_TOKEN_TICKS = 48


def chain_image(
    components,
    tokens: list[str],
    n_prompt: int,
    title: str,
    window_size: tuple[int, int] = (1600, 900),
) -> np.ndarray:
    """The chain as (height, width, 3) uint8, top row first.

    Args:
        components: a `Components` record (n_layers, n_tokens) of the tokens.
        tokens: (n_tokens,) token strings.
        n_prompt: how many of them are the prompt.
        title: the first line (model, prompt).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = window_size
    if w < 400 or h < 300:
        raise LayerscanError(f"a chain needs at least 400x300 pixels, got {w}x{h}")
    n_layers, n_tokens = components.attention_write.shape
    writes = {"attention": components.attention_write, "MLP": components.mlp_write}
    limit = float(np.percentile(np.concatenate([v.ravel() for v in writes.values()]), 99.0))
    limit = max(limit, 1e-12)
    fig = Figure(figsize=(w / 100, h / 100), dpi=100, facecolor=BACKGROUND)
    canvas = FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, 2, height_ratios=[4, 4, 1.3], width_ratios=[40, 1], hspace=0.35)
    fig.subplots_adjust(left=0.07, right=0.93, top=0.86, bottom=0.13, wspace=0.03)
    fig.text(0.07, 0.965, title, color=INK, fontsize=13, weight="bold", va="top")
    fig.text(
        0.07,
        0.925,
        f"{n_prompt} prompt tokens, {n_tokens - n_prompt} generated (right of the dashed "
        f"line, tick labels in yellow); colour = |write|, L2 norm in the raw residual stream, "
        f"saturating at {limit:.3g} (p{CLIP_PERCENTILE:g})",
        color=DIM,
        fontsize=9.5,
        va="top",
    )
    step = max(1, int(np.ceil(n_tokens / MAX_TOKEN_TICKS)))
    ticks = list(range(0, n_tokens, step))
    for row, (name, values) in enumerate(writes.items()):
        ax = fig.add_subplot(grid[row, 0])
        image = ax.imshow(
            values,
            origin="lower",
            aspect="auto",
            cmap=COLORMAP,
            vmin=0.0,
            vmax=limit,
            interpolation="nearest",
            extent=(-0.5, n_tokens - 0.5, 0.5, n_layers + 0.5),
        )
        _style(ax, f"{name} writes", "block")
        ax.set_xticks(ticks, [""] * len(ticks))
        ax.axvline(n_prompt - 0.5, color=ACCENT, lw=1.2, ls="--")
        bar = fig.colorbar(image, cax=fig.add_subplot(grid[row, 1]))
        bar.set_label(f"|{name} write|", color=DIM, fontsize=9)
        bar.ax.tick_params(colors=DIM, labelsize=8)
        bar.outline.set_edgecolor(DIM)
    ax = fig.add_subplot(grid[2, 0])
    split = components.attention_split.mean(0)  # (n_tokens, 3), mean over blocks
    x = np.arange(n_tokens)
    ax.bar(x, split[:, 0], color="#9ea3b8", width=0.9, label="on the prompt")
    ax.bar(x, split[:, 1], bottom=split[:, 0], color="#61db80", width=0.9, label="on generated")
    ax.bar(x, split[:, 2], bottom=split[:, :2].sum(1), color="#db75db", width=0.9, label="self")
    ax.set_xlim(-0.5, n_tokens - 0.5)
    ax.set_ylim(0, 1)
    ax.axvline(n_prompt - 0.5, color=ACCENT, lw=1.2, ls="--")
    _style(ax, "attention mass (mean over blocks and heads)", "share")
    labels = [token_label(tokens[i], 10) for i in ticks]
    ax.set_xticks(ticks, labels, rotation=70, fontsize=8)
    for tick, i in zip(ax.get_xticklabels(), ticks, strict=True):
        tick.set_color(ACCENT if i >= n_prompt else DIM)
    ax.legend(
        loc="upper left", bbox_to_anchor=(1.0, 1.05), fontsize=8, frameon=False, labelcolor=DIM
    )
    kv = components.kv_bytes[-1]
    fig.text(
        0.07,
        0.012,
        f"KV cache after the last token: {int(components.kv_tokens[-1])} positions"
        + (f", {kv / 1e6:.3g} MB" if kv else "")
        + (
            "; parallel blocks: attention and MLP read the same input"
            if components.parallel
            else ""
        )
        + f"; writes add up to the stream to {components.residual_error:.1e} (relative)",
        color=DIM,
        fontsize=9,
        va="bottom",
    )
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _style(ax, title: str, ylabel: str) -> None:
    ax.set_facecolor(BACKGROUND)
    ax.set_title(title, color=INK, fontsize=11, loc="left")
    ax.set_ylabel(ylabel, color=DIM, fontsize=9)
    if ylabel == "block":
        from matplotlib.ticker import MaxNLocator

        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(colors=DIM, labelsize=8)
    for spine in ax.spines.values():
        spine.set_edgecolor("#2a3140")


def render_chain(
    components,
    tokens: list[str],
    n_prompt: int,
    title: str,
    path: str | os.PathLike,
    window_size: tuple[int, int] = (1600, 900),
) -> Path:
    """Draw the chain to a PNG at `path`; the file appears only once complete."""
    import imageio.v3 as iio

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise LayerscanError(f"{path}: the component chain is written as .png")
    image = chain_image(components, tokens, n_prompt, title, window_size)
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, image, extension=".png")
    return path
