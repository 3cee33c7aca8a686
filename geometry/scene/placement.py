"""Label placement in screen space: greedy, by importance, never overlapping (pure numpy).

Each label tries spots around its group, nearest first: just above or below the group (no
leader line), then beside it, then rings further out joined to the group by a leader line.
The first spot inside the bounds that overlaps no label placed before it wins. Labels are
placed in order of importance, so when the screen is full the least important ones are left
out (and stay pickable), never labels chosen by chance.
"""

from __future__ import annotations

import unicodedata
from typing import NamedTuple

import numpy as np

GAP = 3.0
"""Pixels between a label and its group (or another label)."""
RINGS = 4
"""Rings of spots tried around a group beyond the attached ones."""
LEADER_MIN = 6.0
"""A label further than this (pixels) from its group's edge gets a leader line."""


class Placement(NamedTuple):
    """Where the labels went."""

    centres: np.ndarray
    """(n, 2) label centres in pixels; NaN where a label was left out."""
    leader: np.ndarray
    """(n,) bool: the label sits away from its group and needs a leader line."""
    shown: list[int]
    """Indices of the placed labels, in placing order."""


def importance(tokens: list[str], current: int | None) -> list[int]:
    """Token indices, most important first: the current token, the last, then words before
    punctuation and whitespace, longer words before shorter, later before earlier.

    Args:
        tokens: the prompt's token texts.
        current: the highlighted token, if any.
    """

    def weight(i: int) -> tuple:
        text = tokens[i].strip()
        letters = sum(ch.isalnum() for ch in text)
        kind = unicodedata.category(text[0])[0] if text else "Z"
        word = letters > 0 and kind in "LN"
        return (not word, -min(letters, 8), -i)

    n = len(tokens)
    first = [i for i in (current, n - 1) if i is not None and 0 <= i < n]
    rest = sorted(range(n), key=weight)
    return list(dict.fromkeys(first + rest))


def spots(half: np.ndarray, top: float, bottom: float) -> np.ndarray:
    """(k, 2) offsets of a label's centre from its group's centre, nearest first.

    Args:
        half: (2,) half width and height of the label.
        top: how far the group reaches above its centre (>= 0).
        bottom: how far it reaches below (<= 0).
    """
    w, h = half
    above = top + GAP + h
    below = bottom - GAP - h
    out = [(0.0, above), (0.0, below)]
    side = max(top, -bottom, h)
    for ring in range(RINGS):
        dx = w + GAP + side * 0.6 + ring * (2 * h + GAP)
        dy = ring * (2 * h + GAP)
        out += [
            (0.0, above + dy + (2 * h + GAP) * (ring > 0)),
            (0.0, below - dy - (2 * h + GAP) * (ring > 0)),
            (dx, 0.0),
            (-dx, 0.0),
            (dx, above + dy),
            (-dx, above + dy),
            (dx, below - dy),
            (-dx, below - dy),
        ]
    return np.asarray(out, np.float64)


def place(
    anchors: np.ndarray,
    extents: np.ndarray,
    tops: np.ndarray,
    bottoms: np.ndarray,
    order: list[int],
    bounds: tuple[float, float, float, float],
    max_labels: int,
    blocked: np.ndarray | None = None,
) -> Placement:
    """Greedy placement of labels around their groups.

    Args:
        anchors: (n, 2) each group's centre on screen (pixels).
        extents: (n, 2) each label's width and height (pixels).
        tops: (n,) how far each group reaches above its centre (>= 0).
        bottoms: (n,) how far it reaches below (<= 0).
        order: indices to place, most important first.
        bounds: x0, y0, x1, y1 the labels must stay inside.
        max_labels: most labels placed.
        blocked: (m, 4) boxes no label may cover (other overlays).

    Returns:
        a Placement.
    """
    n = len(anchors)
    centres = np.full((n, 2), np.nan)
    leader = np.zeros(n, bool)
    taken = np.zeros((0, 4)) if blocked is None else np.asarray(blocked, np.float64).reshape(-1, 4)
    shown: list[int] = []
    x0, y0, x1, y1 = bounds
    for i in order:
        if len(shown) >= max_labels:
            break
        if not np.all(np.isfinite(anchors[i])):
            continue
        half = extents[i] / 2
        cand = anchors[i] + spots(half, tops[i], bottoms[i])  # (k, 2)
        boxes = np.concatenate([cand - half, cand + half], 1)  # (k, 4)
        inside = (
            (boxes[:, 0] >= x0) & (boxes[:, 2] <= x1) & (boxes[:, 1] >= y0) & (boxes[:, 3] <= y1)
        )
        free = ~np.any(
            (boxes[:, None, 0] < taken[None, :, 2] + GAP)
            & (taken[None, :, 0] < boxes[:, None, 2] + GAP)
            & (boxes[:, None, 1] < taken[None, :, 3] + GAP)
            & (taken[None, :, 1] < boxes[:, None, 3] + GAP),
            axis=1,
        )
        ok = np.flatnonzero(inside & free)
        if len(ok) == 0:
            continue
        k = ok[0]
        centres[i] = cand[k]
        leader[i] = k >= 2
        taken = np.vstack([taken, boxes[k]])
        shown.append(i)
    return Placement(centres, leader, shown)


def leader_segments(
    anchors: np.ndarray, centres: np.ndarray, extents: np.ndarray, which: np.ndarray
) -> np.ndarray:
    """(m, 2, 2) lines from each group's centre to the nearest point of its label's box.

    Args:
        anchors: (n, 2) group centres.
        centres: (n, 2) label centres.
        extents: (n, 2) label sizes.
        which: indices of the labels that get a leader.
    """
    which = np.asarray(which, np.int64)
    a, c, half = anchors[which], centres[which], extents[which] / 2
    near = np.clip(a, c - half, c + half)  # (m, 2) closest point of the box
    return np.stack([a, near], 1)
