"""End-to-end faithfulness of layerscan's picture against the PCA-3 baseline, design by design.

    python scripts/bench_faithfulness.py [--prompts scripts/faithfulness_prompts.txt]
        [--autoencoder DIR] [--designs ranked+fast,grouped+fast,grouped+tokens] [--token-time 2]
        [--no-baselines]

Every figure is measured from the hidden states as captured to the 3D frame: a token's place
is the centroid of its particles; token trust (sklearn trustworthiness, k = token_k), distance
correlation (Spearman, 3D vs hidden pairwise token distances) and token spread are those every
scan stores. Designs, all through the same autoencoder weights, on the same captures:

* ranked+fast: the code before this change (particle r of a token holds its r-th block of
  coordinates, each block in its own subspace) laid out particle by particle (fast mode);
* grouped+fast: the grouped code (every particle at its token's main coordinates plus a
  small share of its own block) laid out particle by particle;
* grouped+tokens: the grouped code, tokens placed by their hidden states, particles grouped
  around them (the default);
* PCA-3: PCA of each layer's token states to 3D, the simplest honest picture.

Then, per band of prompt lengths, the default picture against per-layer UMAP-3 of the token
states (umap-learn), PCA-3 and a random placement, all measured here with sklearn's
trustworthiness (k=5), scipy's Spearman correlation of pairwise distances and scipy's
Procrustes disparity between consecutive layers, independently of layerscan's own figures;
CPU seconds of the token layout and of per-layer UMAP (after its JIT warm-up) beside them.

The prompts were written for this check and are in no training corpus.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from layerscan.autoencoder.artifact import load_autoencoder
from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.autoencoder.capture.loading import load_model
from layerscan.geometry.build import project, scan_capture, torch_threads
from layerscan.geometry.faithfulness import token_figures, token_places
from layerscan.geometry.scan_options import ScanOptions

DEFAULT_PROMPTS = Path(__file__).with_name("faithfulness_prompts.txt")


def read_prompts(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.replace("\\n", "\n") for line in lines if line.strip() and line[0] != "#"]


def ranked_clouds(autoencoder, hidden: np.ndarray) -> np.ndarray:
    """(n_layers+1, N, d_particle) clouds of the previous code: particle (t, r) = block r."""
    model = autoencoder.model
    n_seen, n_tokens = hidden.shape[:2]
    with torch.inference_mode():
        codes = model.token_codes(torch.from_numpy(hidden), torch.arange(n_seen))
        table = model.routings(torch.tensor([n_tokens]))[0]
        token, rank = table.token, table.rank
        return codes[:, token, rank].numpy()  # (n_seen, N, d_particle)


def measure(
    name: str,
    states: np.ndarray,
    positions: np.ndarray,
    owner: np.ndarray,
    clouds: np.ndarray,
    seconds: float,
) -> dict:
    figures = token_figures(states, positions, np.broadcast_to(owner, positions.shape[:2]))
    # layer 0 is left out: repeated tokens have identical embeddings there, so their
    # particles coincide by right
    distinct = min(len(np.unique(c, axis=0)) for c in clouds[1:])
    return {
        "design": name,
        "trust": figures.token_trust,
        "corr": figures.distance_correlation,
        "spread": figures.token_spread,
        "base_trust": figures.baseline_trust,
        "base_corr": figures.baseline_correlation,
        "distinct": distinct,
        "seconds": seconds,
    }


def token_time_move(scan) -> float:
    """Largest move of an earlier token's centroid between consecutive token-time steps, as a
    share of the layout's mean radius."""
    worst = 0.0
    for step in range(1, scan.n_steps):
        n_before = scan.step_lengths[step - 1]
        before = token_places(scan.positions[step - 1], scan.particle_tokens[step - 1], n_before)
        after = token_places(
            scan.positions[step], scan.particle_tokens[step], scan.step_lengths[step]
        )[:, :n_before]
        pos = scan.positions[step]
        radius = np.linalg.norm(pos - pos.mean(1, keepdims=True), axis=-1).mean()
        worst = max(worst, float(np.linalg.norm(after - before, axis=-1).max() / radius))
    return worst


BANDS = ((3, 19), (20, 60), (61, 99), (100, 1024))
"""Prompt lengths (tokens) the band table groups by."""


def baselines(states: np.ndarray) -> dict:
    """Independent figures of the default token layout and of three baselines.

    Args:
        states: (n_layers, n_tokens, d_model) hidden states as captured.
    """
    import umap
    from scipy.spatial import procrustes
    from scipy.spatial.distance import pdist
    from scipy.stats import spearmanr
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness

    from layerscan.geometry.build import used_layout
    from layerscan.geometry.token_layout import TokenLayout

    n_layers, n, _ = states.shape
    start = time.process_time()
    estimator = TokenLayout().fit(states)
    layout_cpu = time.process_time() - start
    pictures = {"layout": estimator.embedding_.astype(np.float64)}
    pictures["PCA-3"] = np.stack([PCA(3).fit_transform(x) for x in states])
    rng = np.random.default_rng(0)
    pictures["random"] = rng.normal(size=(n_layers, n, 3))
    _warm_umap()
    start = time.process_time()
    pictures["UMAP-3"] = np.stack(
        [
            umap.UMAP(
                n_components=3,
                n_neighbors=min(15, n - 1),
                init="spectral" if n > 8 else "random",  # the spectral start needs n > 4
                random_state=0,
            ).fit_transform(x)
            for x in states.astype(np.float32)
        ]
    )
    umap_cpu = time.process_time() - start
    k = min(5, (n - 1) // 2)
    out = {"n_tokens": n, "layout_cpu": layout_cpu, "umap_cpu": umap_cpu}
    out["used"] = used_layout(estimator)
    for name, picture in pictures.items():
        out[f"{name} trust"] = np.array(
            [trustworthiness(x, y, n_neighbors=k) for x, y in zip(states, picture, strict=True)]
        )
        if name in ("layout", "PCA-3"):
            out[f"{name} dcorr"] = np.array(
                [
                    spearmanr(pdist(x), pdist(y)).statistic
                    for x, y in zip(states, picture, strict=True)
                ]
            )
        if name in ("layout", "UMAP-3"):
            out[f"{name} disparity"] = np.array(
                [procrustes(a, b)[2] for a, b in zip(picture[:-1], picture[1:], strict=True)]
            )
    return out


def _warm_umap() -> None:
    """Compile umap-learn's numba code once, so its CPU seconds are those of the work."""
    import umap

    if not getattr(_warm_umap, "done", False):
        umap.UMAP(n_components=3, n_neighbors=5).fit_transform(
            np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
        )
        _warm_umap.done = True


def print_bands(rows: list[dict]) -> None:
    """The band table: trust mean / worst layer (cells over prompts and layers)."""
    print(
        "\nper band, measured here (sklearn trustworthiness k=5, scipy Spearman and Procrustes); "
        "trust mean / worst layer over the band's prompts and layers"
    )
    print(
        f"{'band':>10}{'n':>3}{'layout':>14}{'PCA-3':>14}{'UMAP-3':>14}{'random':>8}"
        f"{'dcorr':>7}{'PCA':>7}{'disp':>8}{'UMAP':>7}{'cpu s/layer':>13}{'UMAP':>7}  pca used"
    )
    for low, high in BANDS:
        band = [r for r in rows if low <= r["n_tokens"] <= high]
        if not band:
            continue

        def cat(key: str, band=band) -> np.ndarray:
            return np.concatenate([r[key] for r in band])

        def pair(key: str) -> str:
            return f"{cat(key).mean():.3f}/{cat(key).min():.3f}"

        per_layer = [(r["layout_cpu"], r["umap_cpu"], len(r["layout trust"])) for r in band]
        print(
            f"{low:>4}-{high:<5}{len(band):>3}{pair('layout trust'):>14}{pair('PCA-3 trust'):>14}"
            f"{pair('UMAP-3 trust'):>14}{cat('random trust').mean():>8.3f}"
            f"{cat('layout dcorr').mean():>7.3f}{cat('PCA-3 dcorr').mean():>7.3f}"
            f"{cat('layout disparity').mean():>8.4f}{cat('UMAP-3 disparity').mean():>7.3f}"
            f"{np.mean([a / n for a, _, n in per_layer]):>13.3f}"
            f"{np.mean([b / n for _, b, n in per_layer]):>7.3f}"
            f"  {sum(r['used'] == 'pca' for r in band)}/{len(band)}"
        )
    print("per prompt (tokens: layout, PCA-3, UMAP-3 trust mean/worst; layout, PCA-3 dcorr):")
    for r in rows:
        cells = [
            f"{r[key].mean():.3f}/{r[key].min():.3f}"
            for key in ("layout trust", "PCA-3 trust", "UMAP-3 trust")
        ]
        print(
            f"  {r['n_tokens']:>4}  {'  '.join(cells)}  "
            f"{r['layout dcorr'].mean():.3f} {r['PCA-3 dcorr'].mean():.3f}"
        )


def token_time_below_pca(scan, states: np.ndarray) -> float:
    """Worst (token trust of a step's frame - that of PCA-3 of its prefix), over steps with
    at least 5 tokens and layers, with sklearn (k = token_k of the prefix)."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import trustworthiness

    from layerscan.geometry.faithfulness import token_k

    worst = np.inf
    for step in range(scan.n_steps):
        n = scan.step_lengths[step]
        if n < 5:
            continue
        places = token_places(scan.positions[step], scan.particle_tokens[step], n)
        for x, y in zip(states[:, :n], places, strict=True):
            k = token_k(n)
            base = trustworthiness(x, PCA(3).fit_transform(x), n_neighbors=k)
            worst = min(worst, trustworthiness(x, y, n_neighbors=k) - base)
    return float(worst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=Path, default=DEFAULT_PROMPTS)
    parser.add_argument("--autoencoder", help="artifact folder (default: the packaged one)")
    parser.add_argument("--designs", default="ranked+fast,grouped+fast,grouped+tokens")
    parser.add_argument(
        "--token-time",
        type=int,
        default=2,
        metavar="N",
        help="also scan the N shortest prompts token by token (0: skip)",
    )
    parser.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the band table against per-layer UMAP-3, PCA-3 and random placement",
    )
    args = parser.parse_args(argv)
    designs = args.designs.split(",")
    loaded = load_model("embedded", device="cpu")
    autoencoder = load_autoencoder(args.autoencoder)
    rows, r2, bands = [], [], []
    prompts = read_prompts(args.prompts)
    for prompt in prompts:
        cap = capture(loaded, prompt, top_k=0)
        if args.baselines:
            bands.append(baselines(cap.hidden))
        states = cap.hidden  # (n_layers+1, n_tokens, d_model)
        encoded = autoencoder.encode(states)
        r2.append((cap.n_tokens, encoded.reconstruction_r2))
        for design in designs:
            start = time.perf_counter()
            if design == "grouped+tokens":
                scan = scan_capture(cap, autoencoder, ScanOptions(surface=_no_surface()))
                positions, clouds = scan.positions[-1], scan.clouds[-1]
            else:
                clouds = (
                    ranked_clouds(autoencoder, states)
                    if design == "ranked+fast"
                    else encoded.clouds
                )
                with torch_threads(1):
                    positions = project(clouds, ScanOptions(projection="fast"))
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "prompt": prompt,
                    "n_tokens": cap.n_tokens,
                    **measure(design, states, positions, encoded.particle_tokens, clouds, seconds),
                }
            )
    print(
        f"{len(prompts)} held-out prompts of {min(r[0] for r in r2)}–{max(r[0] for r in r2)} "
        f"tokens ({args.prompts.name}); {autoencoder.config.n_particles} particles × "
        f"{autoencoder.config.d_particle}; cells over prompts and layers"
    )
    header = (
        f"{'design':<16}{'trust mean':>11}{'worst':>8}{'dcorr':>8}{'spread':>8}"
        f"{'distinct*':>10}{'s/prompt':>10}"
    )
    print(header)
    baseline = [r for r in rows if r["design"] == designs[0]]
    print(
        _line(
            "PCA-3 baseline",
            [
                dict(
                    r,
                    trust=r["base_trust"],
                    corr=r["base_corr"],
                    spread=np.zeros(1),
                    distinct=0,
                    seconds=0.0,
                )
                for r in baseline
            ],
        )
    )
    for design in designs:
        print(_line(design, [r for r in rows if r["design"] == design]))
    print("\nper prompt (tokens: trust mean / worst, dcorr; PCA-3 in brackets):")
    for prompt in prompts:
        cells = [r for r in rows if r["prompt"] == prompt]
        text = "  ".join(
            f"{r['design']}: {r['trust'].mean():.3f}/{r['trust'].min():.3f} {r['corr'].mean():.3f}"
            for r in cells
        )
        print(
            f"  {cells[0]['n_tokens']:>3} tok  [{cells[0]['base_trust'].mean():.3f}/"
            f"{cells[0]['base_trust'].min():.3f} {cells[0]['base_corr'].mean():.3f}]  {text}"
        )
    print(
        "* fewest distinct particles of any layer after the embeddings (repeated tokens share "
        "their embedding)"
    )
    worst_r2 = min(float(v.min()) for _, v in r2)
    print(
        f"\nautoencoder R² on these prompts: worst layer {worst_r2:.4f}, mean "
        f"{np.mean([v.mean() for _, v in r2]):.4f}"
    )
    if bands:
        print_bands(bands)
    if args.token_time:
        for prompt in sorted(prompts, key=len)[: args.token_time]:
            cap = capture(loaded, prompt, top_k=0)
            scan = scan_capture(
                cap, autoencoder, ScanOptions(token_time=True, surface=_no_surface())
            )
            below = token_time_below_pca(scan, cap.hidden)
            print(
                f"token-time, {cap.n_tokens} tokens: largest move of an earlier token's "
                f"centroid between steps = {token_time_move(scan):.2e} of the layout radius; "
                f"worst step trust - PCA-3 of its prefix = {below:+.3f} (sklearn, k=token_k)"
            )
    return 0


def _no_surface():
    from layerscan.geometry.surfaces import SurfaceOptions

    return SurfaceOptions(method="none")


def _line(name: str, rows: list[dict]) -> str:
    trust = np.concatenate([r["trust"] for r in rows])
    corr = np.concatenate([r["corr"] for r in rows])
    spread = np.concatenate([r["spread"] for r in rows])
    distinct = min(r["distinct"] for r in rows)
    seconds = np.mean([r["seconds"] for r in rows])
    return (
        f"{name:<16}{trust.mean():>11.3f}{trust.min():>8.3f}{corr.mean():>8.3f}"
        f"{spread.mean():>8.3f}{distinct:>10}{seconds:>10.2f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
