"""--attention: weights, queries and keys recorded faithfully on tiny random models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from layerscan.autoencoder.capture.attention_record import top_k
from layerscan.autoencoder.capture.capture_file import Capture, CaptureOptions
from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.autoencoder.capture.loading import load_model
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from tests.tiny_models import ARCHITECTURES, VOCAB, make_tokenizer

PROMPT = "the quick brown fox jumps over the lazy dog"
ARCHS = ("llama", "gpt2", "gpt_neox", "qwen2", "gqa_llama", "bert")

ARCHITECTURES_HERE = {
    **ARCHITECTURES,
    "gqa_llama": lambda: transformers.LlamaForCausalLM(  # 4 query heads share 1 KV head
        transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            vocab_size=VOCAB,
            max_position_embeddings=64,
        )
    ),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """{name: LoadedModel} of the tiny models these tests use (bloom: one without the interface)."""
    root = tmp_path_factory.mktemp("attention-models")
    loaded = {}
    for arch in (*ARCHS, "bloom"):
        torch.manual_seed(0)
        folder = root / arch
        ARCHITECTURES_HERE[arch]().save_pretrained(folder)
        make_tokenizer(encoder=arch == "bert").save_pretrained(folder)
        loaded[arch] = load_model(str(folder), device="cpu")
    return loaded


def _reproduced(record) -> np.ndarray:
    """softmax(scaling · Q Kᵀ) under the causal mask, from the stored float16 Q and K."""
    q = torch.from_numpy(record.queries.astype(np.float32))  # (L, H, T, d)
    k = torch.from_numpy(record.keys.astype(np.float32))
    logits = q @ k.transpose(-1, -2) * torch.from_numpy(record.scaling)[:, None, None, None]
    n = q.shape[2]
    mask = torch.triu(torch.ones(n, n, dtype=torch.bool), 1)
    return torch.softmax(logits.masked_fill(mask, float("-inf")), dim=-1).numpy()


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_rows_sum_to_one_and_hidden_states_do_not_change(models, arch):
    loaded = models[arch]
    plain = capture(loaded, PROMPT, top_k=0)
    with_attention = capture(loaded, PROMPT, top_k=0, attention=True)
    np.testing.assert_allclose(with_attention.hidden, plain.hidden, atol=1e-4)
    assert plain.attention is None
    record = with_attention.attention
    config = loaded.config
    n_heads = config.num_attention_heads
    n = plain.n_tokens
    assert record.weights.shape == (config.num_hidden_layers, n_heads, n, n)
    assert record.weights.dtype == np.float16 and record.queries.dtype == np.float16
    assert (
        record.queries.shape
        == record.keys.shape
        == (config.num_hidden_layers, n_heads, n, 32 // n_heads)
    )
    np.testing.assert_allclose(record.weights.astype(np.float32).sum(-1), 1.0, atol=5e-3)
    # the model's own sdpa is back after the capture
    assert loaded.model.config._attn_implementation != "layerscan_capture"


@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "bert"])
def test_stored_queries_and_keys_reproduce_the_weights(models, arch):
    record = capture(models[arch], PROMPT, top_k=0, attention=True).attention
    weights = record.weights.astype(np.float32)
    assert np.all(np.triu(weights, 1) == 0)  # causal: no weight on later keys
    np.testing.assert_allclose(_reproduced(record), weights, atol=4e-3)


def test_generated_tokens_get_their_rows_through_the_cache(models):
    loaded = models["qwen2"]
    generated = capture(loaded, PROMPT, top_k=0, attention=True, generate=3).attention
    whole = capture(loaded, PROMPT, top_k=0, attention=True)  # the prompt alone
    n = whole.attention.n_tokens
    np.testing.assert_allclose(
        generated.weights[:, :, :n, :n].astype(np.float32),
        whole.attention.weights.astype(np.float32),
        atol=2e-3,
    )
    np.testing.assert_allclose(
        _reproduced(generated), generated.weights.astype(np.float32), atol=4e-3
    )


def test_value_weighted_rows_sum_to_one_and_differ(models):
    loaded = models["llama"]
    raw = capture(loaded, PROMPT, top_k=0, attention=True).attention
    weighted = capture(loaded, PROMPT, top_k=0, attention=True, value_weighted=True).attention
    assert weighted.kind == "value-weighted"
    np.testing.assert_allclose(weighted.weights.astype(np.float32).sum(-1), 1.0, atol=5e-3)
    assert np.abs(weighted.weights.astype(np.float32) - raw.weights.astype(np.float32)).max() > 1e-3


def test_long_prompts_keep_top_keys_and_files_round_trip(models, tmp_path, monkeypatch):
    import layerscan.autoencoder.capture.attention as attention

    monkeypatch.setattr(attention, "FULL_ATTENTION_TOKENS", 4)
    monkeypatch.setattr(attention, "TOP_KEYS", 3)
    loaded = models["gpt2"]
    full = capture(loaded, PROMPT, top_k=0, attention=True, attention_all=True)
    short = capture(loaded, PROMPT, top_k=0, attention=True)
    assert short.attention.weights is None and short.attention.top_keys.shape[-1] == 3
    dense = full.attention.weights.astype(np.float32)
    _, values = top_k(dense, 3)  # the kept weights are the largest (ties may pick either key)
    np.testing.assert_allclose(short.attention.top_weights.astype(np.float32), values, atol=1e-3)
    at_keys = np.take_along_axis(dense, np.maximum(short.attention.top_keys, 0), axis=-1)
    np.testing.assert_allclose(at_keys * (short.attention.top_keys >= 0), values, atol=1e-3)
    for result in (full, short):
        back = Capture.load(result.save(tmp_path / "c.capture"))
        for name, array in result.attention.arrays().items():
            np.testing.assert_array_equal(back.attention.arrays()[name], array)
    assert full.prefix(3).attention.weights.shape[-2:] == (3, 3)


def test_flags_and_unsupported_models(models):
    with pytest.raises(LayerscanError, match="need --attention"):
        CaptureOptions(value_weighted=True)
    with pytest.raises(LayerscanError, match="AttentionInterface"):
        capture(models["bloom"], PROMPT, attention=True)


def test_cli_capture_prints_the_size(models, tmp_path, capsys):
    folder = models["llama"].model.name_or_path
    out = tmp_path / "a.capture"
    assert (
        main(
            ["capture", PROMPT, "--model", folder, "--device", "cpu", "--attention", "-o", str(out)]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "attention (weights): 2 layers x 2 heads" in text and "MiB" in text
    assert Capture.load(out).attention is not None
