"""Capture on the tiny-model matrix and the embedded model: shapes, prefixes, generation, files."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch

from layerscan.autoencoder.capture.architectures import lens_head
from layerscan.autoencoder.capture.capture_file import Capture
from layerscan.autoencoder.capture.hidden_states import capture, hidden_states_batch
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from tests.tiny_models import ARCHITECTURES, CAUSAL, CONTEXT

PROMPT = "the quick brown fox jumps over the lazy dog"


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_capture_shapes_on_every_architecture(tiny_models, arch):
    loaded = tiny_models[arch]
    config = loaded.config
    result = capture(loaded, PROMPT, top_k=3)
    n_tokens = len(loaded.tokenizer(PROMPT)["input_ids"])
    assert result.hidden.shape == (config.num_hidden_layers + 1, n_tokens, config.hidden_size)
    assert result.hidden.dtype == np.float32 and np.isfinite(result.hidden).all()
    assert result.tokens and len(result.tokens) == n_tokens
    assert result.is_causal == (arch in CAUSAL)
    assert result.lens_ids.shape == (config.num_hidden_layers + 1, n_tokens, 3)
    assert np.all(np.diff(result.lens_probs, axis=-1) <= 0)  # sorted, most likely first
    assert len(result.lens_tokens[0][0]) == 3


@pytest.mark.parametrize("arch", CAUSAL)
def test_final_norm_last_layer_matches_the_model_and_lens_matches_logits(tiny_models, arch):
    """The last layer under final-norm is what the LM head sees; the lens there is the model."""
    loaded = tiny_models[arch]
    ids = loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = loaded.model(ids, output_hidden_states=True)
    result = capture(loaded, PROMPT, top_k=5)
    probs = torch.softmax(out.logits[0].float(), dim=-1)
    top = probs.topk(5, dim=-1)
    np.testing.assert_allclose(result.lens_probs[-1], top.values.numpy(), atol=1e-5)
    head = lens_head(loaded.model)  # the output embedding, with Gemma 2's logit soft cap
    logits_from_capture = head(torch.from_numpy(result.hidden[-1]))
    np.testing.assert_allclose(
        logits_from_capture.detach().numpy(), out.logits[0].numpy(), atol=1e-4
    )
    raw = capture(loaded, PROMPT, normalization="raw", top_k=0)
    assert not np.allclose(raw.hidden[-1], result.hidden[-1], atol=1e-3)  # raw is un-normed
    np.testing.assert_allclose(raw.hidden[0], out.hidden_states[0][0].numpy(), atol=1e-6)


def test_lens_last_keeps_the_last_tokens_lens_and_marks_the_rest_empty(tiny_models):
    """--lens-last N: the last N positions get the same lens as a full one; earlier positions
    hold no token (id -1, "", probability 0)."""
    loaded = tiny_models["llama"]
    full = capture(loaded, PROMPT, top_k=4, lens_last=0)
    last = capture(loaded, PROMPT, top_k=4, lens_last=3)
    n = len(full.tokens)
    np.testing.assert_array_equal(last.lens_ids[:, n - 3 :], full.lens_ids[:, n - 3 :])
    np.testing.assert_allclose(last.lens_probs[:, n - 3 :], full.lens_probs[:, n - 3 :])
    assert (last.lens_ids[:, : n - 3] == -1).all() and not last.lens_probs[:, : n - 3].any()
    assert all(t == "" for layer in last.lens_tokens for row in layer[: n - 3] for t in row)
    assert (
        capture(loaded, PROMPT, top_k=4, lens_last=100).lens_ids.tolist() == full.lens_ids.tolist()
    )


@pytest.mark.parametrize("arch", CAUSAL)
def test_one_pass_equals_separate_prefix_passes(tiny_models, arch):
    loaded = tiny_models[arch]
    for normalization in ("final-norm", "standardize", "raw"):
        full = capture(loaded, PROMPT, normalization=normalization, top_k=0)
        for length in range(1, full.n_tokens + 1):
            alone = hidden_states_batch(loaded, [full.token_ids[:length]], normalization)[0]
            assert np.abs(alone - full.prefix(length).hidden).max() <= 1e-4


def test_padded_batch_equals_single_sequences(tiny_models):
    loaded = tiny_models["llama"]
    sequences = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    batch = hidden_states_batch(loaded, sequences)
    for ids, states in zip(sequences, batch, strict=True):
        alone = hidden_states_batch(loaded, [ids])[0]
        assert states.shape == alone.shape
        assert np.abs(states - alone).max() <= 1e-4


def test_standardize_gives_zero_mean_unit_variance(tiny_models):
    result = capture(tiny_models["gpt2"], PROMPT, normalization="standardize", top_k=0)
    np.testing.assert_allclose(result.hidden.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(result.hidden.std(-1), 1, atol=1e-3)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_generation_streams_states_with_the_kv_cache(tiny_models, arch):
    loaded = tiny_models[arch]
    prompt_ids = loaded.tokenizer(PROMPT)["input_ids"]
    seen_lengths = []
    embeddings = loaded.model.get_input_embeddings()
    handle = embeddings.register_forward_hook(
        lambda module, inputs, output: seen_lengths.append(inputs[0].shape[-1])
    )
    try:
        result = capture(loaded, PROMPT, generate=4, top_k=2)
    finally:
        handle.remove()
    assert seen_lengths == [len(prompt_ids), 1, 1, 1, 1]  # prompt once, then one token a step
    assert result.n_prompt_tokens == len(prompt_ids) and result.n_tokens == len(prompt_ids) + 4
    with torch.no_grad():
        greedy = loaded.model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=4, do_sample=False, pad_token_id=0
        )
    assert result.token_ids == greedy[0].tolist()
    whole = hidden_states_batch(loaded, [result.token_ids])[0]
    assert np.abs(whole - result.hidden).max() <= 1e-4
    sampled = capture(loaded, PROMPT, generate=4, sample=True, temperature=5.0, seed=3, top_k=0)
    again = capture(loaded, PROMPT, generate=4, sample=True, temperature=5.0, seed=3, top_k=0)
    assert sampled.token_ids == again.token_ids


def test_chat_template_wraps_the_prompt(tiny_models):
    result = capture(tiny_models["llama"], "hello there", chat=True, top_k=0)
    assert result.tokens[0].strip() == "<|user|>" and "<|assistant|>" in result.tokens[-1]
    assert result.prompt == "hello there"


def test_save_load_round_trip(tiny_models, tmp_path):
    result = capture(tiny_models["qwen2"], PROMPT, generate=2, top_k=3)
    path = result.save(tmp_path / "c.safetensors")
    back = Capture.load(path)
    np.testing.assert_array_equal(back.hidden, result.hidden)
    np.testing.assert_array_equal(back.lens_ids, result.lens_ids)
    assert back.tokens == result.tokens and back.lens_tokens == result.lens_tokens
    assert (back.model_id, back.normalization, back.n_prompt_tokens) == (
        result.model_id,
        result.normalization,
        result.n_prompt_tokens,
    )
    assert not list(tmp_path.glob(".*partial*"))


def test_bad_files_get_clear_errors(tiny_models, tmp_path):
    good = capture(tiny_models["gpt2"], PROMPT, top_k=0).save(tmp_path / "good.safetensors")
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:200])
    with pytest.raises(LayerscanError, match="corrupt"):
        Capture.load(corrupt)
    with pytest.raises(LayerscanError, match="no such file"):
        Capture.load(tmp_path / "missing.safetensors")
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(3, np.float32)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(LayerscanError, match="not a layerscan capture"):
        Capture.load(tmp_path / "foreign.safetensors")
    data = good.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + n])
    meta = json.loads(header["__metadata__"]["layerscan"])
    meta["format_version"] = 99
    header["__metadata__"]["layerscan"] = json.dumps(meta)
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    (tmp_path / "future.safetensors").write_bytes(
        struct.pack("<Q", len(blob)) + blob + data[8 + n :]
    )
    with pytest.raises(LayerscanError, match="version 99"):
        Capture.load(tmp_path / "future.safetensors")


def test_bad_prompts_and_options(tiny_models):
    llama, bert = tiny_models["llama"], tiny_models["bert"]
    for prompt in ("", "   \n\t"):
        with pytest.raises(LayerscanError, match="empty"):
            capture(llama, prompt)
    with pytest.raises(LayerscanError, match=rf"exceed the context .*\({CONTEXT} tokens\)"):
        capture(llama, "fox " * (CONTEXT + 5))
    with pytest.raises(LayerscanError, match="to generate"):
        capture(llama, PROMPT, generate=CONTEXT)
    with pytest.raises(LayerscanError, match="not a causal LM"):
        capture(bert, PROMPT, generate=2)
    with pytest.raises(LayerscanError, match="unknown normalization"):
        capture(llama, PROMPT, normalization="zscore")


def test_unknown_architecture_is_named_for_final_norm(tiny_models, monkeypatch):
    loaded = tiny_models["gpt2"]
    monkeypatch.setattr(loaded.model.config, "model_type", "mystery-net")
    with pytest.raises(LayerscanError, match="'mystery-net'"):
        capture(loaded, PROMPT)
    assert capture(loaded, PROMPT, normalization="raw", top_k=0).hidden.shape[0] == 3


def test_encoder_final_norm_is_raw_and_lens_uses_the_mlm_head(tiny_models):
    bert = tiny_models["bert"]
    normed = capture(bert, PROMPT, top_k=2)
    raw = capture(bert, PROMPT, normalization="raw", top_k=0)
    np.testing.assert_array_equal(normed.hidden, raw.hidden)  # post-norm: already normalized
    ids = bert.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = bert.model(ids).logits[0]
    np.testing.assert_array_equal(normed.lens_ids[-1], logits.topk(2).indices.numpy())


def test_remote_code_needs_the_flag(tmp_path, capsys):
    folder = tmp_path / "custom"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "layerscan-custom",
                "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"},
            }
        )
    )
    (folder / "configuration_custom.py").write_text("raise SystemExit('remote code ran')\n")
    assert main(["info", "--model", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "--trust-remote-code" in err and err.count("\n") == 1


def test_cli_capture_writes_a_file_and_errors_are_one_line(tiny_model_dirs, tmp_path, capsys):
    out = tmp_path / "cap.safetensors"
    assert (
        main(
            [
                "capture",
                PROMPT,
                "--model",
                str(tiny_model_dirs["llama"]),
                "--device",
                "cpu",
                "--generate",
                "2",
                "-o",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "3 hidden states x" in printed and "logit lens" in printed
    assert Capture.load(out).n_tokens == Capture.load(out).n_prompt_tokens + 2
    assert main(["capture", "  ", "--model", str(tiny_model_dirs["llama"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerscan: error: the prompt is empty") and err.count("\n") == 1
    assert main(["--debug", "capture", "", "--model", str(tiny_model_dirs["llama"])]) == 2
    assert "Traceback" in capsys.readouterr().err
    assert main(["capture", PROMPT, "--model", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["capture", "--normalization", "bogus"]) == 2  # a usage error returns 2
    assert "invalid choice" in capsys.readouterr().err


def test_info_describes_the_model(tiny_model_dirs, capsys):
    assert main(["info", "--model", str(tiny_model_dirs["gpt_neox"])]) == 0
    out = capsys.readouterr().out
    assert "hidden size     32" in out and "context length  64" in out
    assert "final-norm, standardize, raw" in out


@pytest.mark.slow
def test_embedded_model_end_to_end(embedded_model, tmp_path):
    result = capture(embedded_model, "The capital of France is", generate=3, top_k=5)
    assert result.hidden.shape[0] == 31 and result.d_model == 576
    last_prompt = result.n_prompt_tokens - 1
    assert result.lens_tokens[-1][last_prompt][0] == " Paris"
    assert result.tokens[result.n_prompt_tokens] == " Paris"
    whole = hidden_states_batch(embedded_model, [result.token_ids])[0]
    assert np.abs(whole - result.hidden).max() <= 1e-3
    back = Capture.load(result.save(tmp_path / "e.safetensors"))
    assert back.model_id == "embedded:SmolLM2-135M-Instruct-Q4_1" and back.revision
