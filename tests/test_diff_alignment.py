"""A diff aligns the two prompts' tokens, measures their divergence on the hidden states, and
lays both out in one space where a shared prefix has one place and no side is less faithful
than a joint PCA-3 of both prompts' token states."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.core.errors import LayerscanError
from layerscan.core.tensor_file import FORMAT_KEY, write_tensor_file
from layerscan.geometry.alignment import align_tokens, linear_cka, shared_states, token_divergence
from layerscan.geometry.build import diff_captures
from layerscan.geometry.diff import side_figures
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.diff_summary import summary
from layerscan.geometry.diff_tokens import (
    ALIGNED,
    ONLY_HERE,
    SUBSTITUTED,
    first_change,
    first_over,
    status_of,
)
from layerscan.geometry.faithfulness import token_places
from tests.test_pipeline import FAST, PROMPT


@pytest.mark.parametrize(
    ("a", "b", "pairs", "status_a", "status_b"),
    [
        ([1, 2, 3, 4], [1, 2, 9, 3, 4], [(0, 0), (1, 1), (2, 3), (3, 4)], [0] * 4, [0, 0, 2, 0, 0]),
        ([1, 2, 9, 3, 4], [1, 2, 3, 4], [(0, 0), (1, 1), (3, 2), (4, 3)], [0, 0, 2, 0, 0], [0] * 4),
        ([1, 2, 3, 4], [1, 7, 3, 4], [(0, 0), (2, 2), (3, 3)], [0, 1, 0, 0], [0, 1, 0, 0]),
        ([5, 6], [5, 6], [(0, 0), (1, 1)], [0, 0], [0, 0]),
        ([1, 2], [3, 4, 5], [], [1, 1], [1, 1, 1]),
    ],
)
def test_tokens_align_by_their_ids(a, b, pairs, status_a, status_b):
    got = align_tokens(a, b)
    assert got.aligned.dtype == np.int32 and got.aligned.tolist() == [list(p) for p in pairs]
    assert got.status_a.tolist() == status_a and got.status_b.tolist() == status_b
    # the statuses a diff file rebuilds from its pairs alone are the same
    again = status_of(got.aligned, len(a), len(b))
    assert again[0].tolist() == status_a and again[1].tolist() == status_b
    assert {ALIGNED, SUBSTITUTED, ONLY_HERE} == {0, 1, 2}


def test_divergence_is_measured_on_aligned_pairs_whatever_the_lengths():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4, 8)).astype(np.float32)  # (n_layers+1, n_tokens, d_model)
    b = np.concatenate([a[:, :2], rng.normal(size=(3, 1, 8)), a[:, 2:]], 1)  # one inserted
    b[2, 3] *= 1.5  # the token after the insertion moves at layer 2
    pairs = align_tokens([1, 2, 3, 4], [1, 2, 9, 3, 4]).aligned
    got = token_divergence(a, b, pairs)
    assert got.token_a.shape == (3, 4) and got.token_b.shape == (3, 5)
    assert got.token_b[2, 3] == pytest.approx(0.5 / 1.25)  # |0.5 h| / mean(|h|, 1.5 |h|)
    assert not got.token_b[:, [0, 1, 4]].any() and not got.token_b[:2, 3].any()
    assert got.divergence.tolist() == pytest.approx([0, 0, 0.4 / 4])
    assert (got.token_b[:, 2] > 0).all()  # the inserted token: to its nearest A token
    assert first_over(got.token_b, 0.1).tolist() == [-1, -1, 0, 2, -1]
    assert first_change(pairs, 4, 5) == (2, 2)
    assert linear_cka(a, a) == pytest.approx(np.ones(3))


def test_self_diff_is_exactly_zero(llama, autoencoder):
    same = diff_captures(capture(llama, PROMPT), capture(llama, PROMPT), autoencoder, FAST)
    assert len(same.aligned_tokens) == len(same.a.tokens) and same.changed == ([], [])
    assert not same.divergence.any() and not same.token_divergence_b.any()
    assert not (same.a.positions - same.b.positions).any()
    assert summary(same) == [
        "the prompts do not diverge (every aligned token's states are the same)"
    ]


@pytest.mark.parametrize(
    "other",
    [
        PROMPT.replace("lazy", "very lazy"),  # insertion: different lengths
        PROMPT.replace("quick ", ""),  # deletion
        PROMPT.replace("fox", "cat"),  # substitution
        PROMPT + " and runs away",  # A is a prefix of B
    ],
)
def test_shared_prefix_has_one_place_and_the_space_beats_joint_pca(
    llama, autoencoder, tmp_path, other
):
    a, b = capture(llama, PROMPT), capture(llama, other)
    diff = diff_captures(a, b, autoencoder, FAST)
    n_a, n_b = len(a.tokens), len(b.tokens)
    start_a, start_b = first_change(diff.aligned_tokens, n_a, n_b)
    assert start_a == start_b >= 1
    places_a = token_places(diff.a.positions[0], diff.a.particle_tokens[0], n_a)
    places_b = token_places(diff.b.positions[0], diff.b.particle_tokens[0], n_b)
    radius = np.linalg.norm(places_a - places_a.mean(1, keepdims=True), axis=-1).mean()
    moved = np.abs(places_a[:, :start_a] - places_b[:, :start_b]).max()
    assert moved <= 1e-4 * radius
    assert diff.token_divergence_b[:, :start_b].max() <= 1e-5  # float noise at most
    # each side in the shared space: at least the joint PCA-3 at every layer (fallback), up
    # to float32: repeated characters share a state at layer 0, and their exactly tied
    # distances in the float64 layout become near-ties in the stored positions (4e-5 seen)
    for scan, trust, corr in zip(
        (diff.a, diff.b), diff.joint_trust, diff.joint_correlation, strict=True
    ):
        assert (scan.token_trust[0] >= trust - 1e-4).all()
        assert (scan.distance_correlation[0] >= corr - 1e-4).all()
    # the figures stored are those of the token places
    ((own_trust, own_corr),) = side_figures(b.hidden, [places_b])
    assert np.allclose(own_trust, diff.b.token_trust[0], atol=1e-5)
    lines = summary(diff)
    assert " aligned tokens of " in lines[0] and any("joint PCA-3" in x for x in lines)
    diff.save(tmp_path / "d.scan")
    back = DiffScan.load(tmp_path / "d.scan")
    assert np.array_equal(back.aligned_tokens, diff.aligned_tokens)
    assert np.array_equal(back.joint_trust, diff.joint_trust) and back.changed == diff.changed


def test_an_old_diff_file_says_to_recreate_it(llama, autoencoder, tmp_path):
    diff = diff_captures(capture(llama, PROMPT), capture(llama, "the cat"), autoencoder, FAST)
    diff.save(tmp_path / "new.scan")
    with safe_open(str(tmp_path / "new.scan"), framework="numpy") as handle:
        header = json.loads(handle.metadata()[FORMAT_KEY])
    meta = header["meta"]
    del meta["diff_version"]
    write_tensor_file(
        tmp_path / "old.scan",
        "scan",
        header["format_version"],
        load_file(str(tmp_path / "new.scan")),
        meta,
    )
    with pytest.raises(LayerscanError, match="older layerscan.*recreate it"):
        DiffScan.load(tmp_path / "old.scan")


@pytest.mark.slow
def test_a_real_insertion_follows_the_model(embedded_model):
    from scipy.stats import spearmanr

    from layerscan.geometry.pipeline import Pipeline

    prompt_a = "She did believe the story he told us about the war."
    prompt_b = "She did not believe the story he told us about the war."
    pipeline = Pipeline(embedded_model)
    diff = pipeline.diff(prompt_a, prompt_b)
    a, b = pipeline.capture_prompt(prompt_a), pipeline.capture_prompt(prompt_b)
    pairs = diff.aligned_tokens
    assert [b.tokens[j].strip() for j in diff.changed[1]] == ["not"]
    ha, hb = a.hidden[:, pairs[:, 0]].astype(np.float64), b.hidden[:, pairs[:, 1]]
    scale = (np.linalg.norm(ha, axis=-1) + np.linalg.norm(hb, axis=-1)) / 2
    curve = (np.linalg.norm(ha - hb, axis=-1) / scale).mean(-1)  # (n_layers+1,)
    assert spearmanr(diff.divergence, curve)[0] >= 0.9
    n_a, n_b = len(diff.a.tokens), len(diff.b.tokens)
    places_a = token_places(diff.a.positions[0], diff.a.particle_tokens[0], n_a)
    places_b = token_places(diff.b.positions[0], diff.b.particle_tokens[0], n_b)
    radius = np.linalg.norm(places_a - places_a.mean(1, keepdims=True), axis=-1).mean(-1)
    moved = np.linalg.norm(places_a[:, :2] - places_b[:, :2], axis=-1).max(-1)
    assert (moved <= 1e-4 * radius).all()  # "She did": one place, every layer
    for scan, trust, corr in zip(
        (diff.a, diff.b), diff.joint_trust, diff.joint_correlation, strict=True
    ):
        assert scan.token_trust[0].mean() >= trust.mean() - 1e-5
        assert scan.distance_correlation[0].mean() >= corr.mean() - 1e-5


def test_a_prefix_token_aligned_elsewhere_still_shares_its_state():
    """The alignment may pair prefix token 2 (a space) with B's later copy: at its own
    position it holds the same state in both prompts, so it is one point (one place)."""
    rng = np.random.default_rng(0)
    hidden_a = rng.normal(size=(3, 4, 8))
    hidden_b = np.concatenate([hidden_a[:, :3], rng.normal(size=(3, 3, 8))], 1)
    ids_a, ids_b = np.array([5, 6, 7, 8]), np.array([5, 6, 7, 9, 7, 8])
    aligned = np.array([[0, 0], [1, 1], [2, 4], [3, 5]])
    shared = shared_states(hidden_a, hidden_b, ids_a, ids_b, aligned)
    np.testing.assert_array_equal(shared, [[0, 0], [1, 1], [2, 2]])
