"""--components: attention and MLP writes add up to the residual stream, on every decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerscan.autoencoder.capture.architectures import (
    RESIDUAL_WRITES,
    residual_write_modules,
)
from layerscan.autoencoder.capture.capture_file import Capture
from layerscan.autoencoder.capture.components import ComponentRecorder
from layerscan.autoencoder.capture.hidden_states import _forward_states, capture
from layerscan.core.errors import LayerscanError
from tests.tiny_models import CAUSAL, ENCODERS

PARALLEL = {"gptj", "falcon", "gpt_neox", "phi"}
"""The tiny models whose blocks run attention and the MLP side by side (see their configs)."""
PROMPT = "the quick brown fox"


@pytest.mark.parametrize("arch", CAUSAL)
def test_writes_add_up_to_the_raw_stream(tiny_models, arch):
    loaded = tiny_models[arch]
    ids = torch.tensor([loaded.tokenizer(PROMPT)["input_ids"]])
    with ComponentRecorder(loaded) as recorder:
        hidden, _, _ = _forward_states(loaded, ids)  # (n_layers+1, 1, T, d_model)
    attention, mlp = recorder.stacked()  # (n_layers, T, d_model)
    update = (hidden[1:, 0] - hidden[:-1, 0]).float()
    scale = update.abs().max()
    assert arch in RESIDUAL_WRITES
    assert (update - attention - mlp).abs().max() / scale < 1e-5
    assert attention.norm(dim=-1).min() > 0 and mlp.norm(dim=-1).min() > 0


@pytest.mark.parametrize("arch", CAUSAL)
def test_parallel_blocks_feed_the_mlp_the_block_input(tiny_models, arch):
    """Push block 1's attention write; its MLP write moves in a sequential block only."""
    loaded = tiny_models[arch]
    attention, mlp, parallel = residual_write_modules(loaded.model)
    assert parallel == (arch in PARALLEL)
    ids = torch.tensor([loaded.tokenizer(PROMPT)["input_ids"]])
    writes = []

    def keep(module, args, kwargs, output):
        out = output[0] if isinstance(output, tuple) else output
        residual = args[1] if len(args) > 1 else kwargs.get("residual")
        writes.append((out - residual) if mlp[0][1] else out.clone())

    # not a constant: a LayerNorm would take it out again
    nudge = 3.0 * torch.randn(
        loaded.model.config.hidden_size, generator=torch.Generator().manual_seed(0)
    )

    def push(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + nudge, *output[1:])
        return output + nudge

    keeper = mlp[0][0].register_forward_hook(keep, with_kwargs=True)
    try:
        with torch.inference_mode():
            loaded.model(input_ids=ids, use_cache=False)
            pusher = attention[0][0].register_forward_hook(push)
            try:
                loaded.model(input_ids=ids, use_cache=False)
            finally:
                pusher.remove()
    finally:
        keeper.remove()
    moved = (writes[1] - writes[0]).abs().max().item()
    if parallel:
        assert moved < 1e-6
    else:
        assert moved > 1e-3


def test_capture_records_kv_cache_split_and_shares(tiny_models, tmp_path):
    loaded = tiny_models["llama"]
    captured = capture(loaded, PROMPT, generate=5, components=True, normalization="raw")
    parts = captured.components
    n_prompt, n_tokens = captured.n_prompt_tokens, captured.n_tokens
    assert parts.attention_write.shape == (captured.n_layers, n_tokens)
    assert parts.residual_error < 1e-5
    np.testing.assert_allclose(parts.attention_share + parts.mlp_share, 1.0, atol=1e-5)
    # the update is a + m: its norm is at most |a| + |m|
    assert (parts.update <= parts.attention_write + parts.mlp_write + 1e-5).all()
    # KV cache: every position of every layer, keys and values, float32
    config = loaded.config
    per_position = 2 * config.num_hidden_layers * config.num_key_value_heads * 16 * 4
    np.testing.assert_array_equal(parts.kv_tokens, np.arange(1, n_tokens + 1))
    np.testing.assert_array_equal(parts.kv_bytes, per_position * parts.kv_tokens)
    # split: sums to 1; prompt tokens see no generated ones; the first sees only itself
    np.testing.assert_allclose(parts.attention_split.sum(-1), 1.0, atol=1e-5)
    assert (parts.attention_split[:, :n_prompt, 1] == 0).all()
    np.testing.assert_allclose(parts.attention_split[:, 0, 2], 1.0, atol=1e-6)
    assert (parts.attention_split[:, n_prompt + 1 :, 1] > 0).all()
    # the same split from the model's own eager attention weights
    with torch.inference_mode():
        loaded.model.set_attn_implementation("eager")
        try:
            out = loaded.model(input_ids=torch.tensor([captured.token_ids]), output_attentions=True)
        finally:
            loaded.model.set_attn_implementation("sdpa")
    for layer, weights in enumerate(out.attentions):
        mean = weights[0].mean(0).numpy()  # (T, T)
        last = n_tokens - 1
        np.testing.assert_allclose(
            parts.attention_split[layer, last],
            [mean[last, :n_prompt].sum(), mean[last, n_prompt:last].sum(), mean[last, last]],
            atol=1e-5,
        )
    # file round trip and prefixes
    path = captured.save(tmp_path / "c.capture")
    again = Capture.load(path).components
    np.testing.assert_array_equal(again.mlp_write, parts.mlp_write)
    np.testing.assert_array_equal(again.kv_bytes, parts.kv_bytes)
    assert again.parallel is False and again.residual_error == parts.residual_error
    cut = captured.prefix(n_prompt + 2).components
    assert cut.attention_split.shape[1] == n_prompt + 2
    np.testing.assert_array_equal(cut.kv_tokens, parts.kv_tokens[: n_prompt + 2])


def test_components_are_the_same_for_any_normalization(tiny_models):
    loaded = tiny_models["gpt2"]
    raw = capture(loaded, PROMPT, generate=2, components=True, normalization="raw")
    normed = capture(loaded, PROMPT, generate=2, components=True)
    np.testing.assert_allclose(
        raw.components.attention_write, normed.components.attention_write, rtol=1e-5
    )


@pytest.mark.parametrize("arch", ENCODERS[:1])
def test_encoders_get_one_line(tiny_models, arch):
    with pytest.raises(LayerscanError, match="drop --components"):
        capture(tiny_models[arch], PROMPT, components=True)


def test_corrupt_component_arrays_are_refused(tiny_models, tmp_path):
    captured = capture(tiny_models["llama"], PROMPT, generate=1, components=True)
    captured.components.mlp_write = captured.components.mlp_write[:, :-1]
    with pytest.raises(LayerscanError, match="mlp_write"):
        captured.save(tmp_path / "bad.capture")


def test_scan_carries_the_components_through_its_file(tiny_models, tmp_path):
    from layerscan.geometry.build import scan_capture
    from layerscan.geometry.scan_file import Scan
    from tests.test_pipeline import FAST, autoencoder_for

    loaded = tiny_models["llama"]
    captured = capture(loaded, PROMPT, generate=3, components=True)
    scan = scan_capture(captured, autoencoder_for(loaded, [PROMPT]), FAST)
    again = Scan.load(scan.save(tmp_path / "c.scan")).components
    np.testing.assert_array_equal(again.attention_write, captured.components.attention_write)
    np.testing.assert_array_equal(again.attention_split, captured.components.attention_split)
    assert again.residual_error == captured.components.residual_error
