"""The particle autoencoder: routing, shapes, exactness, config, artifact files, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from layerscan.autoencoder.artifact import (
    ArtifactConfig,
    TrainedAutoencoder,
    export_autoencoder,
    load_autoencoder,
)
from layerscan.autoencoder.capture.capture_file import Capture
from layerscan.autoencoder.config import ModelConfig, RunConfig, load_config
from layerscan.autoencoder.model import ParticleAutoencoder, routing
from layerscan.core.errors import LayerscanError

D_MODEL, N_LAYERS = 24, 3
SMALL = ModelConfig(n_particles=96, d_particle=4, max_len=32, d_pos=8, n_anchors=2, d_hidden=16)


def _states(n_tokens: int, seed: int = 0) -> np.ndarray:
    """(n_layers+1, n_tokens, d_model) correlated random states with per-layer scales."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n_tokens, D_MODEL))
    layers = [
        base @ rng.normal(size=(D_MODEL, D_MODEL)) * (1 + layer) + layer
        for layer in range(N_LAYERS + 1)
    ]
    return np.stack(layers).astype(np.float32)


def _fitted(config: ModelConfig = SMALL, seed: int = 0) -> ParticleAutoencoder:
    """A model whose statistics and PCA codes come from random states."""
    torch.manual_seed(seed)
    model = ParticleAutoencoder(config, D_MODEL, N_LAYERS)
    states = torch.from_numpy(np.concatenate([_states(32, s) for s in range(8)], 1))
    mean = states.mean(1)  # (n_layers+1, d_model)
    scale = (states - mean[:, None]).pow(2).mean((1, 2)).sqrt()
    normed = (states - mean[:, None]) / scale[:, None, None]
    model.set_statistics(mean, scale, torch.einsum("ltd,lte->lde", normed, normed) / 256)
    return model.eval()


def _trained(config: ModelConfig = SMALL) -> TrainedAutoencoder:
    return TrainedAutoencoder(
        _fitted(config),
        ArtifactConfig(
            model_id="tiny/test",
            d_model=D_MODEL,
            n_layers=N_LAYERS,
            normalization="final-norm",
            model=config,
        ),
    )


def test_routing_gives_every_token_particles_and_every_particle_a_token():
    for n in range(1, 51):  # up to one particle a token
        token, rank, _, held = routing(n_particles=50, n=n, n_ranks=6)
        assert token.min() == 0 and token.max() == n - 1
        assert (token[1:] >= token[:-1]).all()  # blocks are contiguous
        counts = torch.bincount(token, minlength=n)
        assert counts.min() >= 50 // n and counts.max() <= -(-50 // n)
        valid = held < 50
        # the particle holding (token, rank) is assigned to that token with that rank
        tokens = torch.arange(n)[:, None].expand(n, 6)
        assert (token[held[valid]] == tokens[valid]).all()
        assert (rank[held[valid]] == torch.arange(6).expand(n, 6)[valid]).all()
        assert valid[:, 0].all()  # every token has at least its first-rank particle
    with pytest.raises(ValueError, match="does not fit"):
        routing(n_particles=50, n=51, n_ranks=6)


def test_shapes_and_padding_independence():
    model = _fitted()
    states = torch.from_numpy(_states(20))  # (n_layers+1, 20, d_model)
    lengths = torch.tensor([20, 7, 1, 13])
    layer = torch.tensor([0, 1, 2, 3])
    batch = torch.zeros(4, 20, D_MODEL)
    for row, (n, lay) in enumerate(zip(lengths, layer, strict=True)):
        batch[row, :n] = states[lay, :n]
    with torch.no_grad():
        out = model(batch, layer, lengths)
        assert out.clouds.shape == (4, SMALL.n_particles, SMALL.d_particle)
        assert out.reconstruction.shape == (4, 20, D_MODEL)
        assert (out.reconstruction[1, 7:] == 0).all()
        for row in range(4):  # a row alone gives the same cloud as inside a mixed batch
            n = int(lengths[row])
            alone = model(batch[row : row + 1, :n], layer[row : row + 1], lengths[row : row + 1])
            torch.testing.assert_close(alone.clouds[0], out.clouds[row], atol=1e-5, rtol=1e-5)


def test_short_prompts_are_exact_whatever_the_decoder_learned():
    # 96 particles, 6 ranks x 4 features = 24 = d_model: prompts of <= 16 tokens are exact
    config = ModelConfig(
        n_particles=96, d_particle=4, max_len=32, d_pos=8, n_anchors=2, d_hidden=16
    )
    trained = _trained(config)
    with torch.no_grad():  # as if trained: the predictor of missing coordinates is not zero
        for param in trained.model.decode_mlp.parameters():
            param.normal_(std=0.5)
    for n in (1, 5, 16):
        assert trained.encode(_states(n, seed=9)).reconstruction_r2.min() > 0.9999
    # longer prompts get fewer particles per token, so they are lossy, and the decoder's
    # prediction of what their particles cannot hold changes the reconstruction
    lossy = trained.encode(_states(32, seed=9)).reconstruction_r2
    assert lossy.min() < 0.99
    with torch.no_grad():
        trained.model.decode_mlp[-1].weight.zero_()
        trained.model.decode_mlp[-1].bias.zero_()
    assert not np.allclose(trained.encode(_states(32, seed=9)).reconstruction_r2, lossy)


@pytest.mark.parametrize("n_tokens", [1, 3, 10, 16, 30])
def test_a_tokens_particles_are_a_compact_group_in_one_space_and_all_distinct(n_tokens):
    model = _fitted()
    states = torch.from_numpy(_states(n_tokens, seed=4))
    layers = torch.arange(N_LAYERS + 1)
    lengths = torch.full((N_LAYERS + 1,), n_tokens)
    with torch.no_grad():
        codes = model.token_codes(states, layers)  # (n_layers+1, n_tokens, n_ranks, k)
        clouds = model.encode(states, layers, lengths)  # (n_layers+1, N, k)
    table = model.routings(torch.tensor([n_tokens]))[0]
    owner = table.token
    for layer in range(N_LAYERS + 1):
        cloud = clouds[layer]
        assert len(torch.unique(cloud, dim=0)) == model.config.n_particles  # none stacked
        # every particle sits near its token's main coordinates (block 0) ...
        centre = codes[layer, owner, 0]
        reach = (cloud - centre).norm(dim=-1)
        detail = codes[layer, :, 1:].norm(dim=-1).max()
        assert reach.max() <= model.config.detail_scale * detail + 1e-5
        # ... and the rank-0 particle of every token is exactly that centre
        first = table.particle[:, 0]
        torch.testing.assert_close(cloud[first], codes[layer, :, 0])
    if n_tokens <= 16:  # 96 particles / 6 blocks: short prompts stay exact through the grouping
        out = model(states, layers, lengths)
        torch.testing.assert_close(out.reconstruction, states, atol=1e-3, rtol=1e-4)


def test_layer_bases_are_orthonormal_and_turn_smoothly():
    model = _fitted(ModelConfig(n_particles=96, d_particle=4, max_len=32, d_pos=8, n_anchors=2))
    basis = model.basis.double()  # (n_layers+1, n_code, d_model)
    eye = torch.eye(D_MODEL, dtype=torch.float64).expand_as(basis)
    torch.testing.assert_close(basis @ basis.transpose(1, 2), eye, atol=1e-5, rtol=0)
    # the first layer is anchor 0's PCA; the last spans anchor 1's PCA block by block ...
    torch.testing.assert_close(model.basis[0].abs(), model.anchors[0].abs(), atol=1e-4, rtol=0)
    k = model.d_particle
    for start in range(0, D_MODEL, k):
        last, anchor = model.basis[-1, start : start + k], model.anchors[1, start : start + k]
        torch.testing.assert_close(last.T @ last, anchor.T @ anchor, atol=1e-4, rtol=0)
    # ... and each particle's block is turned as close to the previous layer's as it can be:
    # after the best rotation, before @ here.T is symmetric positive semi-definite, so its
    # trace is its nuclear norm
    for layer in range(1, model.basis.shape[0]):
        for start in range(0, D_MODEL, k):
            overlap = basis[layer - 1, start : start + k] @ basis[layer, start : start + k].T
            assert torch.trace(overlap) == pytest.approx(
                torch.linalg.svdvals(overlap).sum().item(), abs=1e-4
            )
            torch.testing.assert_close(overlap, overlap.T, atol=1e-4, rtol=0)


def test_token_codes_are_causal_so_prefixes_share_them():
    trained = _trained()
    states = _states(20)
    full = trained.encode_prefixes(states, [20])[0]
    changed = states.copy()
    changed[:, 15:] += 5.0
    prefixes = trained.encode_prefixes(changed, [10, 15, 20])
    # later tokens do not change earlier codes (up to float rounding of batched matmuls)
    np.testing.assert_allclose(prefixes[0].clouds, trained.encode(states[:, :10]).clouds, atol=1e-5)
    np.testing.assert_allclose(prefixes[1].clouds, trained.encode(states[:, :15]).clouds, atol=1e-5)
    assert not np.array_equal(prefixes[2].clouds, full.clouds)


def test_encode_is_deterministic_and_matches_prefix_batching():
    trained = _trained()
    states = _states(25)
    a, b = trained.encode(states), trained.encode(states)
    np.testing.assert_array_equal(a.clouds, b.clouds)
    np.testing.assert_array_equal(a.reconstruction_r2, b.reconstruction_r2)
    assert a.clouds.dtype == np.float32 and a.clouds.shape == (N_LAYERS + 1, 96, 4)
    assert a.reconstruction_r2.shape == (N_LAYERS + 1,)
    last = trained.encode_prefixes(states, list(range(1, 26)))[-1]
    np.testing.assert_allclose(last.clouds, a.clouds, atol=1e-5)
    np.testing.assert_allclose(last.reconstruction_r2, a.reconstruction_r2, atol=1e-5)


def test_artifact_round_trip_is_bit_identical(tmp_path):
    trained = _trained()
    folder = export_autoencoder(trained.model, trained.config, tmp_path / "ae")
    assert sorted(p.name for p in folder.iterdir()) == [
        ".layerscan-output.json",
        "config.json",
        "weights.safetensors",
    ]
    loaded = load_autoencoder(folder)
    assert loaded.config.n_particles == 96 and loaded.config.max_len == 32
    states = _states(17)
    np.testing.assert_array_equal(loaded.encode(states).clouds, trained.encode(states).clouds)
    half = load_autoencoder(
        export_autoencoder(trained.model, trained.config, tmp_path / "half", half=True)
    )
    assert (
        half.encode(states).reconstruction_r2.min()
        > trained.encode(states).reconstruction_r2.min() - 0.01
    )


def test_bad_artifacts_are_one_line_errors(tmp_path):
    trained = _trained()
    folder = export_autoencoder(trained.model, trained.config, tmp_path / "ae")
    with pytest.raises(LayerscanError, match="not an autoencoder folder"):
        load_autoencoder(tmp_path / "missing")
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(LayerscanError, match="corrupt"):
        load_autoencoder(folder)
    folder = export_autoencoder(trained.model, trained.config, tmp_path / "ae2")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(LayerscanError, match="corrupt autoencoder config"):
        load_autoencoder(folder)
    (folder / "config.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(LayerscanError, match="not a layerscan autoencoder"):
        load_autoencoder(folder)
    # weights of the first design (learned projections) name the problem and the fix
    from safetensors.torch import load_file, save_file

    folder = export_autoencoder(trained.model, trained.config, tmp_path / "ae3")
    weights = folder / "weights.safetensors"
    old = load_file(str(weights))
    old["encode_weight"] = torch.zeros(2, 24, 24)
    save_file(old, str(weights))
    with pytest.raises(LayerscanError, match="first design.*retrain"):
        load_autoencoder(folder)


def test_mismatches_name_both_sides():
    trained = _trained()
    capture = Capture(
        hidden=_states(5),
        token_ids=list(range(5)),
        tokens=list("abcde"),
        n_prompt_tokens=5,
        model_id="tiny/test",
        revision=None,
        architecture="llama",
        normalization="final-norm",
        is_causal=True,
    )
    trained.check_compatible(capture)
    other = Capture(
        **{
            **capture.__dict__,
            "model_id": "other/model",
            "hidden": np.zeros((N_LAYERS + 1, 5, 32), np.float32),
        }
    )
    with pytest.raises(LayerscanError, match="tiny/test.*other/model"):
        trained.check_compatible(other)
    raw = Capture(**{**capture.__dict__, "normalization": "raw"})
    with pytest.raises(LayerscanError, match="final-norm.*raw"):
        trained.check_compatible(raw)
    trained.encode(_states(40))  # past max_len (32): the network's last trained position
    with pytest.raises(LayerscanError, match="97 tokens.*at most 96 .one particle a token"):
        trained.encode(_states(97))
    with pytest.raises(LayerscanError, match="d_model=24"):
        trained.encode(np.zeros((N_LAYERS + 1, 5, 32), np.float32))
    with pytest.raises(LayerscanError, match="prefix length 9"):
        trained.encode_prefixes(_states(5), [9])


def test_config_yaml_rejects_unknown_keys_and_bad_values(tmp_path):
    assert isinstance(load_config(), RunConfig)
    tiny = load_config("tiny", ["train.lr=0.5", "model.n_particles=32"])
    assert tiny.train.lr == 0.5 and tiny.model.n_particles == 32 and tiny.model.max_len == 32
    shipped = load_config("default")
    assert shipped.model.n_particles == 1024 and shipped.model.d_particle == 32
    assert shipped.model.max_len >= 128
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  n_particle: 3\n")
    with pytest.raises(LayerscanError, match="unknown key.*n_particle"):
        load_config(path)
    path.write_text("trian:\n  lr: 1\n")
    with pytest.raises(LayerscanError, match="unknown key.*trian"):
        load_config(path)
    with pytest.raises(LayerscanError, match="expected an integer"):
        load_config(None, ["model.n_particles=many"])
    with pytest.raises(LayerscanError, match="must be >= 1"):
        load_config(None, ["model.d_particle=0"])
    with pytest.raises(LayerscanError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    path.write_text("model: [unclosed\n")
    with pytest.raises(LayerscanError, match="cannot read YAML"):
        load_config(path)
    with pytest.raises(LayerscanError, match="section.key=value"):
        load_config(None, ["no-equals-sign"])


@pytest.mark.slow
def test_packaged_default_encodes_a_real_capture(embedded_model):
    from layerscan.autoencoder.capture.hidden_states import capture

    trained = load_autoencoder()
    assert trained.config.n_particles == 1024 and trained.config.d_particle == 32
    cap = capture(embedded_model, "The river rose all night, and by morning the bridge")
    trained.check_compatible(cap)
    encoded = trained.encode(cap.hidden)
    assert encoded.clouds.shape == (31, 1024, 32)
    assert np.isfinite(encoded.clouds).all()
    assert encoded.reconstruction_r2.min() > 0.9999  # 11 tokens: exact
    prefixes = trained.encode_prefixes(cap.hidden, [1, cap.n_tokens // 2, cap.n_tokens])
    np.testing.assert_allclose(prefixes[-1].clouds, encoded.clouds, atol=1e-5)


def test_the_dataclass_defaults_are_the_packaged_configs():
    """One default per option: the dataclasses hold the packaged shape and corpus settings, so
    `load_config()` and `load_config("default")` build the same autoencoder from the same text."""
    plain, packaged = load_config(), load_config("default")
    assert plain.model == packaged.model
    for name in ("corpus", "language_model", "normalization", "continuation_tokens",
                 "continuations_per_seed"):  # fmt: skip
        assert getattr(plain.data, name) == getattr(packaged.data, name), name
