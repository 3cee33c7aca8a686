"""End-to-end faithfulness of layerscan's picture against the PCA-3 baseline, design by design.

    python scripts/bench_faithfulness.py [--prompts scripts/faithfulness_prompts.txt]
        [--autoencoder DIR] [--designs ranked+fast,grouped+fast,grouped+tokens] [--token-time 2]

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
    args = parser.parse_args(argv)
    designs = args.designs.split(",")
    loaded = load_model("embedded", device="cpu")
    autoencoder = load_autoencoder(args.autoencoder)
    rows, r2 = [], []
    prompts = read_prompts(args.prompts)
    for prompt in prompts:
        cap = capture(loaded, prompt, top_k=0)
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
    if args.token_time:
        for prompt in sorted(prompts, key=len)[: args.token_time]:
            cap = capture(loaded, prompt, top_k=0)
            scan = scan_capture(
                cap, autoencoder, ScanOptions(token_time=True, surface=_no_surface())
            )
            print(
                f"token-time, {cap.n_tokens} tokens: largest move of an earlier token's "
                f"centroid between steps = {token_time_move(scan):.2e} of the layout radius"
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
