"""The component strip beside the cloud: for one token, what each block's attention and MLP wrote
into the residual stream, how its attention split, and the KV cache (scans made with
--components). Every bar is a measured number, its unit stated on the strip."""

from __future__ import annotations

import numpy as np
from vtkmodules.vtkRenderingCore import vtkRenderer

from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene.overlays import ACCENT, CHIP, DIM, INK, Label, Quads, token_label

ATTENTION_COLOR = (0.36, 0.66, 1.0)
MLP_COLOR = (1.0, 0.56, 0.24)
SPLIT_COLORS = ((0.62, 0.64, 0.72), (0.38, 0.86, 0.50), (0.86, 0.46, 0.86))
"""Attention mass on the prompt, on earlier generated tokens, on the token itself."""
BOX = (0.775, 0.11, 0.985, 0.74)
"""(x0, y0, x1, y1) of the strip in the panel, normalized; the cloud keeps left of it."""
SCALE_PERCENTILE = 99.0
"""A full bar is this percentile of every write of the scan (longer ones are clipped, tipped
white), so one outlier token (often the first) does not flatten every other bar."""


def kv_text(positions: int, n_bytes: int) -> str:
    """'KV cache 57 positions · 1.6 MB' (bytes when the cache object was not measurable)."""
    size = ""
    if n_bytes > 0:
        size = f" · {n_bytes / 1e6:.3g} MB" if n_bytes >= 1e6 else f" · {n_bytes / 1e3:.3g} kB"
    return f"KV cache {positions} positions{size}"


class ComponentStrip:
    """One row per block: the attention bar, the MLP bar and the attention split of a token.

    Args:
        renderer: the panel's overlay renderer.
        scan: a scan with `components`.
        size: overlay font size in points.
        viewport_px: the panel's width and height in pixels.
    """

    def __init__(
        self,
        renderer: vtkRenderer,
        scan: Scan,
        size: int,
        viewport_px: tuple[int, int],
        top: float = BOX[3],
    ) -> None:
        parts = scan.components
        self.scan, self.parts = scan, parts
        self.n_layers = parts.n_layers
        writes = np.concatenate([parts.attention_write.ravel(), parts.mlp_write.ravel()])
        self.scale = float(max(np.percentile(writes, SCALE_PERCENTILE), 1e-12))
        x0, y0, x1, y1 = BOX[:3] + (min(BOX[3], top),)  # below the logit lens, if any
        line = 1.35 * size / viewport_px[1]  # one text line, normalized
        self.rows_top = y1 - 2.2 * line
        self.rows_bottom = y0 + 5.3 * line
        self.row_h = (self.rows_top - self.rows_bottom) / self.n_layers
        width = x1 - x0
        label_w = 0.16 * width
        self.columns = {
            "attention": (x0 + label_w, x0 + 0.47 * width),
            "mlp": (x0 + 0.50 * width, x0 + 0.80 * width),
            "split": (x0 + 0.84 * width, x1 - 0.01 * width),
        }
        self.frame = Quads(renderer, CHIP, opacity=0.6)
        self.frame.set_rects([[x0, y0, x1, y1]])
        self.highlight = Quads(renderer, ACCENT, opacity=0.25)
        self.bars = {
            "attention": Quads(renderer, ATTENTION_COLOR),
            "mlp": Quads(renderer, MLP_COLOR),
        }
        self.tips = Quads(renderer, INK)
        self.split = [Quads(renderer, color) for color in SPLIT_COLORS]
        small = max(8, int(size * 0.78))
        self.title = Label(renderer, x0 + 0.01 * width, y1 - 0.3 * line, small, INK)
        self.heads = [
            Label(
                renderer,
                (a + b) / 2,
                self.rows_top + 0.05 * line,
                small,
                color,
                align="center",
                valign="bottom",
            )
            for (a, b), color in zip(
                self.columns.values(), (ATTENTION_COLOR, MLP_COLOR, DIM), strict=True
            )
        ]
        for head, text in zip(self.heads, ("attention", "MLP", "attends"), strict=True):
            head.set(text)
        step = max(1, int(np.ceil(self.n_layers / 10)))
        self.row_labels = []
        for block in range(1, self.n_layers + 1):
            if block % step and block not in (1, self.n_layers):
                continue
            label = Label(
                renderer,
                x0 + label_w - 0.01 * width,
                self._row_y(block) + self.row_h / 2,
                max(7, int(size * 0.65)),
                DIM,
                align="right",
                valign="center",
            )
            label.set(str(block))
            self.row_labels.append(label)
        self.units = Label(renderer, x0 + 0.01 * width, y0 + 4.9 * line, small, DIM)
        self.units.set(
            f"bar = |write|, L2 in the residual stream\nfull bar = {self.scale:.3g} "
            f"(p{SCALE_PERCENTILE:g} of the scan)\nattends: grey prompt, green generated,\n"
            f"pink itself (mean over heads)"
        )
        self.kv = Label(renderer, x0 + 0.01 * width, y0 + 0.9 * line, small, INK)
        self.visible = True
        self._shown: tuple | None = None

    def _row_y(self, block: int) -> float:
        """Bottom of block `block`'s row (block 1 at the bottom, as the stream rises)."""
        return self.rows_bottom + (block - 1) * self.row_h

    def update(self, token: int, layer: float, traced: bool = False) -> None:
        """Show `token`'s writes, marking the block of the nearest layer."""
        near = int(round(layer))
        if (token, near, traced) == self._shown:
            return
        self._shown = (token, near, traced)
        parts, scan = self.parts, self.scan
        token = int(np.clip(token, 0, parts.n_tokens - 1))
        blocks = np.arange(1, self.n_layers + 1)
        bottoms = self._row_y(blocks) + 0.12 * self.row_h
        tops = bottoms + 0.76 * self.row_h
        tips = []
        for name, values in (
            ("attention", parts.attention_write[:, token]),
            ("mlp", parts.mlp_write[:, token]),
        ):
            a, b = self.columns[name]
            frac = np.clip(values / self.scale, 0, 1)
            right = a + (b - a) * frac
            self.bars[name].set_rects(np.stack([np.full_like(right, a), bottoms, right, tops], 1))
            for i in np.flatnonzero(values > self.scale):
                tips.append([b - 0.003, bottoms[i], b, tops[i]])
        self.tips.set_rects(np.asarray(tips).reshape(-1, 4))
        a, b = self.columns["split"]
        split = parts.attention_split[:, token]  # (n_layers, 3)
        edges = a + (b - a) * np.concatenate([np.zeros((self.n_layers, 1)), split.cumsum(1)], 1)
        for part, quads in enumerate(self.split):
            quads.set_rects(np.stack([edges[:, part], bottoms, edges[:, part + 1], tops], 1))
        if 1 <= near <= self.n_layers:
            y = self._row_y(near)
            self.highlight.set_rects([[BOX[0] + 0.002, y, BOX[2] - 0.002, y + self.row_h]])
        else:
            self.highlight.set_rects(np.zeros((0, 4)))
        kind = "generated" if token >= scan.n_prompt_tokens else "prompt"
        what = "traced" if traced else "token"
        self.title.set(f"{what} #{token} {token_label(scan.tokens[token], 14)!r} ({kind})")
        mean = split[:, :2].mean(0)
        self.kv.set(
            f"{kv_text(int(parts.kv_tokens[token]), int(parts.kv_bytes[token]))}\n"
            f"attends prompt {mean[0]:.0%} · generated {mean[1]:.0%}"
        )

    def set_visible(self, visible: bool) -> None:
        self.visible = visible
        items = [self.frame, self.highlight, self.tips, *self.bars.values(), *self.split]
        items += [self.title, *self.heads, *self.row_labels, self.units, self.kv]
        for item in items:
            item.actor.SetVisibility(visible)


def component_strip(
    renderer: vtkRenderer,
    scan: Scan,
    opts,
    size: int,
    viewport_px: tuple[int, int],
    top: float = BOX[3],
) -> ComponentStrip | None:
    """The strip of a scan made with --components (None without them, or with --no-strip),
    its top at most `top` (normalized; the logit-lens panel's bottom)."""
    if scan.components is None or not getattr(opts, "show_components", True):
        return None
    return ComponentStrip(renderer, scan, size, viewport_px, top)
