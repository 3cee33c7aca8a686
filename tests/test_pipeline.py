"""Scans and diffs end to end: tiny random models + small autoencoders, then the real model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.spatial import procrustes

from layerscan.autoencoder.artifact import ArtifactConfig, TrainedAutoencoder, export_autoencoder
from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.autoencoder.capture.loading import ModelOptions
from layerscan.autoencoder.config import ModelConfig
from layerscan.autoencoder.model import ParticleAutoencoder
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from layerscan.core.tensor_file import write_tensor_file
from layerscan.geometry.build import diff_captures, scan_capture
from layerscan.geometry.diff_scan import DiffScan, load_any
from layerscan.geometry.faithfulness import token_k, token_places, trustworthiness
from layerscan.geometry.pipeline import diff_prompts, scan_prompt
from layerscan.geometry.scan_file import SCAN_KIND, Scan
from layerscan.geometry.scan_options import ScanOptions

SMALL = ModelConfig(n_particles=96, d_particle=4, max_len=48, d_pos=8, n_anchors=2, d_hidden=16)
FAST = ScanOptions(n_epochs=40, token_time_epochs=10)
PROMPT = "the quick brown fox jumps over the lazy dog"


def autoencoder_for(loaded, prompts: list[str], config: ModelConfig = SMALL) -> TrainedAutoencoder:
    """A small autoencoder whose statistics come from the model's states on `prompts`."""
    states = torch.from_numpy(np.concatenate([capture(loaded, p).hidden for p in prompts], 1))
    n_layers, d_model = states.shape[0] - 1, states.shape[2]
    torch.manual_seed(0)
    model = ParticleAutoencoder(config, d_model, n_layers)
    mean = states.mean(1)  # (n_layers+1, d_model)
    scale = (states - mean[:, None]).pow(2).mean((1, 2)).sqrt()
    normed = (states - mean[:, None]) / scale[:, None, None]
    model.set_statistics(
        mean, scale, torch.einsum("ltd,lte->lde", normed, normed) / normed.shape[1]
    )
    return TrainedAutoencoder(
        model.eval(),
        ArtifactConfig(
            model_id=loaded.model_id,
            d_model=d_model,
            n_layers=n_layers,
            normalization="final-norm",
            model=config,
        ),
    )


def test_unmeasured_diagnostics_load_without_a_warning_and_partly_unknown_ones_warn(
    scanned, tmp_path
):
    import warnings

    from layerscan.core.errors import Caution

    path = scanned.save(tmp_path / "s.scan")
    with warnings.catch_warnings():
        warnings.simplefilter("error", Caution)
        Scan.load(path)  # the particle stage, not asked for: no warning
    measured = replace(scanned, disparity=np.zeros_like(scanned.disparity))
    measured.disparity[0, 2] = np.nan
    with pytest.warns(Caution, match="disparity hold NaN"):
        Scan.load(measured.save(tmp_path / "m.scan"))


def test_the_particle_diagnostics_are_measured_when_asked(llama, autoencoder):
    s = scan_capture(capture(llama, PROMPT), autoencoder, replace(FAST, diagnostics=True))
    n_frames = llama.model.config.num_hidden_layers + 1
    for figure in (s.trustworthiness, s.continuity):
        assert figure.shape == (1, n_frames) and ((0 < figure) & (figure <= 1)).all()
    for layer in range(1, n_frames):  # the stored figure is the layout's own disparity
        expected = procrustes(s.positions[0, layer - 1], s.positions[0, layer])[2]
        assert s.disparity[0, layer] == pytest.approx(expected, rel=1e-3, abs=1e-5)


def test_scan_holds_every_figure_with_the_right_shapes(scanned, llama):
    s = scanned
    n_frames = llama.model.config.num_hidden_layers + 1
    assert s.positions.shape == (1, n_frames, 96, 3) and np.isfinite(s.positions).all()
    assert s.clouds.shape == (1, n_frames, 96, 4)
    assert s.neighbors.shape == (1, n_frames, 96, 10) and s.neighbors.dtype == np.int32
    assert (s.neighbors != np.arange(96)[:, None]).all()  # never a particle itself
    for figure in (s.trustworthiness, s.continuity, s.disparity):  # asked for only
        assert figure.shape == (1, n_frames) and np.isnan(figure).all()
    assert np.isfinite(s.reconstruction_r2).all()
    assert len(s.surfaces[0]) == n_frames and any(len(x.faces) for x in s.surfaces[0])
    assert s.lens_tokens is not None and s.lens_probs.shape[:2] == (n_frames, len(s.tokens))
    assert s.settings["projection"]["projection"] == "tokens"
    # every particle belongs to a token, and every token has particles
    assert s.particle_tokens.shape == (1, n_frames, 96)
    assert set(np.unique(s.particle_tokens)) == set(range(len(s.tokens)))
    for name in ("token_trust", "distance_correlation", "baseline_trust", "baseline_correlation"):
        figure = getattr(s, name)
        assert figure.shape == (1, n_frames) and ((-1 <= figure) & (figure <= 1)).all()
    assert (s.token_spread < 0.15).all()  # each token a compact group


def test_tokens_are_placed_by_their_hidden_states(scanned, llama):
    """End to end: the token places are at least as faithful as PCA-3 of the token states."""
    states = capture(llama, PROMPT).hidden
    places = token_places(scanned.positions[0], scanned.particle_tokens[0], states.shape[1])
    k = token_k(states.shape[1])
    np.testing.assert_allclose(
        scanned.token_trust[0], trustworthiness(states, places, k), atol=1e-5
    )
    assert (
        scanned.token_trust.mean() + scanned.distance_correlation.mean()
        >= scanned.baseline_trust.mean() + scanned.baseline_correlation.mean() - 0.05
    )


def test_same_seed_gives_a_byte_identical_file(llama, autoencoder, scanned, tmp_path):
    again = scan_capture(capture(llama, PROMPT), autoencoder, FAST)
    scanned.save(tmp_path / "a.scan")
    again.save(tmp_path / "b.scan")
    assert (tmp_path / "a.scan").read_bytes() == (tmp_path / "b.scan").read_bytes()
    particles = ScanOptions(projection="fast", n_epochs=40)
    one = scan_capture(capture(llama, PROMPT), autoencoder, particles)
    other = scan_capture(capture(llama, PROMPT), autoencoder, replace(particles, seed=1))
    assert not np.array_equal(other.positions, one.positions)  # the seed drives sampling
    loaded = Scan.load(tmp_path / "a.scan")
    assert np.array_equal(loaded.positions, scanned.positions)
    assert loaded.tokens == scanned.tokens and loaded.settings == scanned.settings


def test_scan_prompt_captures_and_scans(llama, autoencoder, scanned):
    scan = scan_prompt(PROMPT, FAST, model=llama, autoencoder=autoencoder)
    assert np.array_equal(scan.positions, scanned.positions)
    assert FAST.device == "cpu" and scan.settings["projection"]["device"] == str(llama.device)


def test_diff_with_token_time_fails_before_any_model_work(tmp_path):
    missing = ModelOptions(model=str(tmp_path / "no-such-model"))
    with pytest.raises(LayerscanError, match="token-time"):
        diff_prompts("a", "b", ScanOptions(token_time=True), model=missing)


def test_token_time_has_a_frame_per_prefix(llama, autoencoder):
    cap = capture(llama, "one two three four")
    scan = scan_capture(
        cap, autoencoder, ScanOptions(n_epochs=30, token_time=True, token_time_epochs=10)
    )
    assert scan.n_steps == cap.n_tokens and scan.step_lengths == list(range(1, cap.n_tokens + 1))
    assert np.isfinite(scan.positions).all()
    # one space for every prefix: a particle whose cloud vector is the same as in the full
    # prompt stays near where the full prompt has it
    same = (scan.clouds[:-1] == scan.clouds[-1:]).all(-1)  # (n_steps-1, L+1, N)
    assert same.sum() > 0
    moved = np.linalg.norm(scan.positions[:-1] - scan.positions[-1:], axis=-1)[same]
    spread = np.linalg.norm(
        scan.positions[-1] - scan.positions[-1].mean(1, keepdims=True), axis=-1
    ).mean()
    assert moved.mean() < 0.5 * spread


def test_one_token_prompt_works(llama, autoencoder):
    cap = capture(llama, "the").prefix(1)
    scan = scan_capture(cap, autoencoder, ScanOptions(n_epochs=20, token_time=True))
    assert scan.n_steps == 1 and np.isfinite(scan.positions).all()


def test_self_diff_is_exactly_zero_and_a_changed_word_is_not(llama, autoencoder, tmp_path):
    a = capture(llama, PROMPT)
    same = diff_captures(a, capture(llama, PROMPT), autoencoder, FAST)
    assert not same.displacement_cloud.any()
    assert not (same.a.positions - same.b.positions).any()
    assert not same.divergence.any() and same.differing_tokens == []
    assert not same.token_divergence_a.any() and not same.token_divergence_b.any()
    b = capture(llama, PROMPT.replace("lazy", "happy"))
    diff = diff_captures(a, b, autoencoder, FAST)
    assert diff.divergence.shape == (a.n_layers + 1,) and diff.divergence.max() > 0
    assert diff.peak_layer == int(np.argmax(diff.divergence))
    first = diff.differing_tokens[0]
    assert np.abs(diff.token_divergence_b[:, :first]).max() < 1e-4
    assert diff.token_divergence_b[1:, first].min() > 1e-3
    # one common space: a and b were laid out together, so both are finite and comparable
    assert np.isfinite(diff.a.positions).all() and np.isfinite(diff.b.positions).all()
    diff.save(tmp_path / "d.scan")
    back = load_any(tmp_path / "d.scan")
    assert isinstance(back, DiffScan) and back.differing_tokens == diff.differing_tokens
    assert np.array_equal(back.aligned_tokens, diff.aligned_tokens)
    assert np.array_equal(back.token_divergence_b, diff.token_divergence_b)


def test_bad_input_gets_one_line_errors(llama, autoencoder, tiny_models, scanned, tmp_path):
    other = capture(tiny_models["qwen2"], PROMPT)
    with pytest.raises(LayerscanError, match="trained on"):
        scan_capture(other, autoencoder, FAST)
    with pytest.raises(LayerscanError, match="causal"):
        bert = capture(tiny_models["bert"], PROMPT)
        scan_capture(
            bert, autoencoder_for(tiny_models["bert"], [PROMPT]), ScanOptions(token_time=True)
        )
    with pytest.raises(LayerscanError, match="unknown projection"):
        ScanOptions(projection="pca")
    corrupt = tmp_path / "corrupt.scan"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(LayerscanError, match="corrupt"):
        Scan.load(corrupt)
    old = tmp_path / "old.scan"
    write_tensor_file(old, SCAN_KIND, 99, {"x": np.zeros(1)}, {"type": "scan"})
    with pytest.raises(LayerscanError, match="version 99"):
        load_any(old)


def test_scan_command_writes_the_file_and_prints_the_table(
    tiny_model_dirs, llama, autoencoder, tmp_path, capsys
):
    folder = export_autoencoder(autoencoder.model, autoencoder.config, tmp_path / "ae")
    out = tmp_path / "cli.scan"
    code = main(
        [
            "scan",
            PROMPT,
            "-o",
            str(out),
            "--model",
            str(tiny_model_dirs["llama"]),
            "--autoencoder",
            str(folder),
            "--epochs",
            "20",
            "--surface",
            "alpha",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "trust" in printed and "embeddings" in printed and "mean" in printed
    assert Scan.load(out).settings["projection"]["surface"]["method"] == "alpha"
    assert main(["scan", PROMPT, "-o", str(tmp_path / "x.mp4")]) == 2
    assert "scan files end in .scan" in capsys.readouterr().err


@pytest.mark.slow
def test_embedded_model_scan_and_one_word_diff(embedded_model):
    from layerscan.autoencoder.artifact import load_autoencoder

    autoencoder = load_autoencoder()
    prompt_a = "The cat sat on the mat because it was warm and the sun was shining on it"
    prompt_b = "The dog sat on the mat because it was warm and the sun was shining on it"
    a, b = capture(embedded_model, prompt_a), capture(embedded_model, prompt_b)
    scan = scan_capture(a, autoencoder)
    assert scan.positions.shape == (1, 31, 1024, 3) and np.isfinite(scan.positions).all()
    assert scan.token_trust.mean() > 0.85 and (scan.token_spread < 0.15).all()
    # never below the baseline: the layout falls back to the aligned PCA when it cannot beat
    # it, whose figures are the baseline's up to float rounding
    assert (
        scan.token_trust.mean() + scan.distance_correlation.mean()
        >= scan.baseline_trust.mean() + scan.baseline_correlation.mean() - 1e-6
    )
    same = diff_captures(a, capture(embedded_model, prompt_a), autoencoder)
    assert not same.displacement_cloud.any() and not same.divergence.any()
    diff = diff_captures(a, b, autoencoder)
    first = diff.differing_tokens[0]
    assert diff.differing_tokens == [first] and a.tokens[first].strip() == "cat"
    before = np.abs(diff.token_divergence_b[:, :first]).max()
    at = diff.token_divergence_b[1:, first].min()
    assert before < 1e-3 < at
    assert diff.divergence.max() > 0 and 0 <= diff.peak_layer <= 30


def test_eval_checks_the_model_before_loading_it(
    tiny_model_dirs, autoencoder, tmp_path, capsys, monkeypatch
):
    import layerscan.autoencoder.capture.loading as loading

    folder = export_autoencoder(autoencoder.model, autoencoder.config, tmp_path / "ae")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert (
        main(["eval", "--autoencoder", str(folder), "--model", str(tiny_model_dirs["gpt2"])]) == 2
    )
    err = capsys.readouterr().err
    assert "pass the matching --model" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_picture_does_not_depend_on_the_thread_count(embedded_model):
    """Other thread counts change the hidden states by ~1e-5: positions stay within 1e-3 of
    the layout's radius (same thread count: identical bytes, tested above)."""
    from layerscan.autoencoder.artifact import load_autoencoder

    autoencoder = load_autoencoder()
    prompt = "Thread counts must not change the picture of this sentence at all"
    before = torch.get_num_threads()
    scans = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            scans.append(scan_capture(capture(embedded_model, prompt), autoencoder))
        finally:
            torch.set_num_threads(before)
    a, b = scans[0].positions, scans[1].positions
    radius = np.linalg.norm(a - a.mean(2, keepdims=True), axis=-1).mean()
    assert np.abs(a - b).max() < 1e-3 * radius
