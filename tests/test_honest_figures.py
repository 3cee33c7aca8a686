"""What a frame says about its own faithfulness: which layout it shows, chance, honest R²."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from layerscan.autoencoder.artifact import prompt_r2
from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.cli.commands.scan import layout_line
from layerscan.geometry.faithfulness import chance_trust, token_k, token_places
from layerscan.geometry.scan_file import Scan
from layerscan.geometry.scene.caption import FALLBACK_NOTE, caption_for, warning_for
from layerscan.geometry.scene.figures_text import figures_text, r2_warning
from layerscan.geometry.token_layout import aligned_pca
from tests.synthetic_scan import make_scan
from tests.test_pipeline import PROMPT


def test_a_scan_records_the_layout_it_shows(scanned, llama, tmp_path):
    assert scanned.step_layouts in (["tokens"], ["pca"])
    states = capture(llama, PROMPT).hidden
    places = token_places(scanned.positions[0], scanned.particle_tokens[0], states.shape[1])
    is_pca = np.allclose(places, aligned_pca(states), atol=1e-3)
    assert is_pca == (scanned.step_layouts == ["pca"])  # the record says what is drawn
    scanned.save(tmp_path / "a.scan")
    assert Scan.load(tmp_path / "a.scan").step_layouts == scanned.step_layouts


def test_the_frame_and_the_command_say_when_the_picture_is_pca():
    scan = make_scan(n_layers=2, n_particles=64, n_tokens=5)
    everything = lambda text: True  # noqa: E731
    assert caption_for(scan, everything) != FALLBACK_NOTE  # not recorded, figures differ
    scan.step_layouts = ["pca"]
    assert caption_for(scan, everything) == FALLBACK_NOTE
    assert layout_line(scan) == "layout = PCA-3: nothing beat it (aligned PCA of the token states)"
    scan.step_layouts = ["tokens"]
    assert caption_for(scan, everything) != FALLBACK_NOTE
    assert layout_line(scan).startswith("layout = token layout")


def test_narrow_frames_get_the_same_figures_in_fewer_words():
    scan = make_scan(n_layers=2, n_particles=64, n_tokens=5)
    long, short = figures_text(scan, 0, 1), figures_text(scan, 0, 1, short=True)
    assert len(short) < len(long)
    numbers = lambda text: re.findall(r"\d+\.\d+", text)  # noqa: E731
    assert numbers(short) == numbers(long)  # every figure, in the same order


def test_chance_is_the_mean_trust_of_random_placements():
    from sklearn.manifold import trustworthiness as sk_trust

    rng = np.random.default_rng(0)
    for n, k in ((12, 5), (40, 5)):
        states = rng.normal(size=(n, 16))
        draws = [sk_trust(states, rng.normal(size=(n, 3)), n_neighbors=k) for _ in range(400)]
        assert chance_trust(n, k) == pytest.approx(np.mean(draws), abs=0.01)
    assert chance_trust(1024, 5) == pytest.approx(0.5, abs=0.002)
    assert chance_trust(2, 1) == 1.0  # trust is 1 by definition there


def test_a_scan_stores_continuity_and_chance(scanned, llama):
    from sklearn.manifold import trustworthiness as sk_trust

    states = capture(llama, PROMPT).hidden
    n = states.shape[1]
    places = token_places(scanned.positions[0], scanned.particle_tokens[0], n)
    k = token_k(n)
    # continuity: trustworthiness with the roles swapped (sklearn ranks exact ties, such as
    # the two "the" of the embeddings layer, in another order: later layers only)
    for layer in range(1, len(states)):
        expected = sk_trust(places[layer], states[layer], n_neighbors=k)
        assert scanned.token_continuity[0, layer] == pytest.approx(expected, abs=1e-5)
    np.testing.assert_allclose(scanned.chance_trust, chance_trust(n, k), rtol=1e-6)
    assert (scanned.chance_trust < scanned.baseline_trust + 0.2).all()
    assert f"chance {chance_trust(n, k):.2f})" in figures_text(scanned, 0, 1)


def test_r2_around_the_prompt_mean_is_the_honest_one(scanned):
    assert (scanned.prompt_r2 <= scanned.reconstruction_r2 + 1e-6).all()
    rng = np.random.default_rng(1)
    hidden = torch.from_numpy(rng.normal(size=(2, 5, 8)) + 3.0)  # (rows, tokens, d_model)
    recon = hidden + 0.3 * torch.from_numpy(rng.normal(size=(2, 5, 8)))
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    got = prompt_r2(hidden, recon, mask)
    for row, n in enumerate((5, 3)):
        h, r = hidden[row, :n].numpy(), recon[row, :n].numpy()
        expected = 1 - ((r - h) ** 2).sum() / ((h - h.mean(0)) ** 2).sum()
        assert float(got[row]) == pytest.approx(expected, rel=1e-9)


def test_the_frame_and_the_command_warn_when_r2_is_low(tmp_path, capsys):
    scan = make_scan(n_layers=3, n_particles=64, n_tokens=5)
    assert warning_for(scan) is None
    scan.prompt_r2[0, 2] = 0.13
    assert warning_for(scan) == (
        "warning: autoencoder R² < 0.5 at 1 of 4 layers (worst 0.13, layer 2): "
        "the particles miss much of the states; train on a larger corpus"
    )
    assert r2_warning(scan.prompt_r2[0]) == warning_for(scan)


def _ring_of_identical_tokens(n_tokens: int = 24):
    """Tokens all alike (evenly spaced on a ring, every one like every other), routed 2, 1,
    2, 1, ... particles as long prompts are: (positions (1, n, 3), particle_tokens (1, n))."""
    angle = 2 * np.pi * np.arange(n_tokens) / n_tokens
    places = np.stack([np.cos(angle), np.sin(angle), np.zeros(n_tokens)], 1) * 5.0
    owner = np.concatenate([[t] * (2 if t % 2 == 0 else 1) for t in range(n_tokens)])
    pairs = np.flatnonzero(np.r_[False, owner[1:] == owner[:-1]])  # second particle of a pair
    offsets = np.zeros((len(owner), 3))
    offsets[pairs, 2], offsets[pairs - 1, 2] = 0.02, -0.02  # each pair around its place
    return (places[owner] + offsets)[None], owner[None]


def test_identical_tokens_give_a_uniform_density_however_they_are_routed():
    from layerscan.geometry.scene import frames as fr

    positions, owner = _ring_of_identical_tokens()
    for k in (3, 10):  # a narrow and the default kernel
        density = fr.local_density(positions, owner, k=k)[0]
        assert density.min() > 0.99  # uniform: every token alike, whatever its particle count
    plain = fr.local_density(positions, k=3)[0]  # each particle weighing 1: the routing's
    assert plain[owner[0] % 2 == 1].max() < plain[owner[0] % 2 == 0].min()  # its pattern


def test_the_density_surface_weighs_every_token_once():
    from layerscan.geometry.scan_file import token_weights
    from layerscan.geometry.surfaces import splat_density

    positions, owner = _ring_of_identical_tokens()
    points, weights = positions[0], token_weights(owner[0])
    np.testing.assert_allclose(np.bincount(owner[0], weights), 1.0)
    weighted, origin, spacing = splat_density(points, 40, 0.04, weights)
    plain, _, _ = splat_density(points, 40, 0.04)
    from scipy.ndimage import map_coordinates

    def at_places(density):
        return map_coordinates(density, ((points - origin) / spacing).T, order=1)

    assert np.ptp(at_places(weighted)) < 0.06 * at_places(weighted).max()  # the grid's own
    assert np.ptp(at_places(plain)) > 0.3 * at_places(plain).max()
