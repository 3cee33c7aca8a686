"""Print the scene's fixed token palette: 24 colours chosen greedily far apart in CIEDE2000.

Candidates are an sRGB grid kept to lightness and chroma that read on the dark background;
each new colour is the candidate farthest (in CIEDE2000) from all chosen so far, starting from
a few hand-picked ones. The result is pasted into geometry/scene/style.py (TOKEN_PALETTE).
Usage: .venv/bin/python scripts/make_palette.py
"""

from __future__ import annotations

import itertools

from coloraide import Color

SIZE = 24
SEEDS = ("#4e9bff", "#ff7f2a", "#3ddc84", "#ff4d6d", "#c77dff", "#ffd23f")
LIGHTNESS = (55.0, 90.0)
MIN_CHROMA = 30.0


def main() -> None:
    grid = [i / 11 for i in range(12)]
    candidates = []
    for r, g, b in itertools.product(grid, grid, grid):
        c = Color("srgb", [r, g, b])
        lightness, chroma, _ = c.convert("lch-d65").coords()
        if LIGHTNESS[0] <= lightness <= LIGHTNESS[1] and chroma >= MIN_CHROMA:
            candidates.append(c)
    chosen = [Color(s) for s in SEEDS]
    nearest = [min(c.delta_e(s, method="2000") for s in chosen) for c in candidates]
    while len(chosen) < SIZE:
        best = max(range(len(candidates)), key=nearest.__getitem__)
        new = candidates[best]
        chosen.append(new)
        nearest = [
            min(d, c.delta_e(new, method="2000")) for c, d in zip(candidates, nearest, strict=True)
        ]
    worst = min(a.delta_e(b, method="2000") for a, b in itertools.combinations(chosen, 2))
    print(", ".join(f'"{c.to_string(hex=True)}"' for c in chosen))
    print(f"smallest CIEDE2000 distance between two colours: {worst:.1f}")


if __name__ == "__main__":
    main()
