"""Model-vs-model diffs and heatmaps: a tiny llama against a copy with one block perturbed."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import transformers

from layerscan.autoencoder.artifact import export_autoencoder
from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.autoencoder.capture.loading import load_model
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from layerscan.geometry.build import diff_captures
from layerscan.geometry.diff_scan import DiffScan
from layerscan.geometry.heatmap import HeatmapOptions, heatmap_captures
from tests.test_pipeline import FAST, PROMPT, autoencoder_for
from tests.tiny_models import CONTEXT, VOCAB, make_tokenizer

N_LAYERS = 4
PERTURBED = 1
"""0-based block whose MLP B changes: hidden states 0..PERTURBED (embeddings and the blocks
before it) are identical in A and B, states PERTURBED+1.. differ."""


def tiny_llama() -> transformers.LlamaForCausalLM:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=N_LAYERS,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=VOCAB,
            max_position_embeddings=CONTEXT,
        )
    )


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"base": A, "tuned": A with block PERTURBED's MLP perturbed} saved with tokenizers."""
    root = tmp_path_factory.mktemp("model-pair")
    model, tokenizer = tiny_llama(), make_tokenizer()
    model.save_pretrained(root / "base", safe_serialization=True)
    tokenizer.save_pretrained(root / "base")
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        weight = model.model.layers[PERTURBED].mlp.down_proj.weight
        weight.add_(0.5 * torch.randn(weight.shape, generator=generator))
    model.save_pretrained(root / "tuned", safe_serialization=True)
    tokenizer.save_pretrained(root / "tuned")
    return {"base": root / "base", "tuned": root / "tuned", "root": root}


@pytest.fixture(scope="module")
def models(folders):
    return {name: load_model(str(folders[name]), device="cpu") for name in ("base", "tuned")}


@pytest.fixture(scope="module")
def autoencoder(models):
    return autoencoder_for(models["base"], [PROMPT, "one two three four five six seven eight"])


@pytest.fixture(scope="module")
def autoencoder_folder(autoencoder, tmp_path_factory):
    return export_autoencoder(
        autoencoder.model, autoencoder.config, tmp_path_factory.mktemp("ae") / "ae"
    )


def assert_diverges_from_the_perturbed_block(diff: DiffScan) -> None:
    before, after = slice(0, PERTURBED + 1), slice(PERTURBED + 1, None)
    assert diff.token_divergence_b.shape == (N_LAYERS + 1, len(diff.a.tokens))
    assert not diff.token_divergence_b[before].any()  # exactly 0, every token
    assert not diff.divergence[before].any() and not diff.displacement_cloud[before].any()
    assert diff.token_divergence_b[after].min() > 0  # every token, every later layer
    assert diff.divergence[after].min() > 0
    # the same tokens on both sides: every token aligned, and linear CKA of the two models'
    # token states exactly 1 until the perturbed block, below 1 after it
    assert diff.aligned_tokens.tolist() == [[i, i] for i in range(len(diff.a.tokens))]
    assert np.allclose(diff.cka[before], 1.0) and (diff.cka[after] < 1.0).all()


def test_a_perturbed_block_diverges_exactly_from_that_layer_on(models, autoencoder):
    a, b = capture(models["base"], PROMPT), capture(models["tuned"], PROMPT)
    with pytest.raises(LayerscanError, match="trained on"):  # the id check stays for everyone
        diff_captures(a, b, autoencoder, FAST)
    diff = diff_captures(a, b, autoencoder, FAST, other_model=True)
    assert_diverges_from_the_perturbed_block(diff)
    assert diff.a.model_id == str(models["base"].model_id) != diff.b.model_id
    assert diff.b.settings["compared"] == "models" and diff.differing_tokens == []
    assert np.isfinite(diff.a.positions).all() and np.isfinite(diff.b.positions).all()
    same = diff_captures(a, capture(models["base"], PROMPT), autoencoder, FAST, other_model=True)
    assert not same.token_divergence_b.any() and not (same.a.positions - same.b.positions).any()


def test_diff_command_compares_two_models_one_or_two_prompts(
    folders, autoencoder_folder, tmp_path, capsys
):
    common = [
        "--model",
        str(folders["base"]),
        "--model-b",
        str(folders["tuned"]),
        "--autoencoder",
        str(autoencoder_folder),
        "--epochs",
        "20",
    ]
    out = tmp_path / "models.scan"
    assert main(["diff", PROMPT, "-o", str(out), *common]) == 0
    assert "models" in capsys.readouterr().err
    diff = DiffScan.load(out)
    assert_diverges_from_the_perturbed_block(diff)
    assert diff.a.model_id == str(folders["base"]) and diff.b.model_id == str(folders["tuned"])
    two = tmp_path / "two.scan"
    other = PROMPT.replace("lazy", "happy")
    assert main(["diff", PROMPT, other, "-o", str(two), *common]) == 0
    diff = DiffScan.load(two)
    assert diff.b.prompt == other and diff.differing_tokens
    assert not diff.token_divergence_b[0, : diff.differing_tokens[0]].any()


def test_a_lora_adapter_is_model_b(folders, models, autoencoder_folder, tmp_path):
    peft = pytest.importorskip("peft", reason="peft not installed (pip install layerscan[peft])")
    model = load_model(str(folders["base"]), device="cpu").model
    config = peft.LoraConfig(
        r=4, target_modules=["down_proj"], layers_to_transform=[PERTURBED], init_lora_weights=False
    )  # random B: the adapter changes the block
    adapter = tmp_path / "adapter"
    peft.get_peft_model(model, config).save_pretrained(adapter)
    assert json.loads((adapter / "adapter_config.json").read_text())[
        "base_model_name_or_path"
    ] == str(folders["base"])
    out = tmp_path / "lora.scan"
    assert (
        main(
            [
                "diff",
                PROMPT,
                "-o",
                str(out),
                "--model",
                str(folders["base"]),
                "--model-b",
                str(adapter),
                "--autoencoder",
                str(autoencoder_folder),
                "--epochs",
                "20",
            ]
        )
        == 0
    )
    diff = DiffScan.load(out)
    assert_diverges_from_the_perturbed_block(diff)
    assert diff.b.model_id.endswith(str(adapter))
    assert (
        main(
            [
                "diff",
                PROMPT,
                "-o",
                str(tmp_path / "a.scan"),
                "--model",
                str(folders["base"]),
                "--adapter",
                str(adapter),
                "--autoencoder",
                str(autoencoder_folder),
                "--epochs",
                "20",
            ]
        )
        == 0
    )
    assert np.array_equal(
        DiffScan.load(tmp_path / "a.scan").token_divergence_b, diff.token_divergence_b
    )


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bad_model_pairs_fail_in_one_line_before_loading_weights(
    folders, tiny_model_dirs, autoencoder_folder, tmp_path, capsys, monkeypatch
):
    import layerscan.autoencoder.capture.loading as loading
    import layerscan.autoencoder.capture.model_pair as model_pair

    never = lambda *a, **k: pytest.fail("weights loaded")  # noqa: E731
    monkeypatch.setattr(loading, "load_model", never)
    monkeypatch.setattr(model_pair, "load_model", never)
    base = ["--model", str(folders["base"]), "--autoencoder", str(autoencoder_folder)]
    out = ["-o", str(tmp_path / "x.scan")]
    # two layers, not four
    assert main(["diff", PROMPT, *out, *base, "--model-b", str(tiny_model_dirs["llama"])]) == 2
    assert "differ in shape" in one_line_error(capsys)
    # an adapter trained on another base model
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": "someone/another-model"})
    )
    assert main(["diff", PROMPT, *out, *base, "--model-b", str(adapter)]) == 2
    assert "trained on someone/another-model" in one_line_error(capsys)
    assert main(["diff", PROMPT, *out, *base, "--adapter", str(tmp_path)]) == 2
    assert "adapter_config.json" in one_line_error(capsys)
    # without peft installed, the error says how to install it
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(folders["base"])})
    )
    monkeypatch.setitem(sys.modules, "peft", None)
    assert main(["diff", PROMPT, *out, *base, "--model-b", str(adapter)]) == 2
    assert "pip install 'layerscan[peft]'" in one_line_error(capsys)
    assert (
        main(
            [
                "heatmap",
                PROMPT,
                "-o",
                str(tmp_path / "h.png"),
                "--model",
                str(folders["base"]),
                "--model-b",
                str(adapter),
            ]
        )
        == 2
    )
    assert "pip install" in one_line_error(capsys)


def test_the_autoencoder_shape_is_checked_against_model_b(
    folders, tiny_model_dirs, models, tmp_path, capsys
):
    small = autoencoder_for(load_model(str(tiny_model_dirs["llama"]), device="cpu"), [PROMPT])
    folder = export_autoencoder(small.model, small.config, tmp_path / "small-ae")
    assert (
        main(
            [
                "diff",
                PROMPT,
                "-o",
                str(tmp_path / "x.scan"),
                "--model",
                str(folders["base"]),
                "--model-b",
                str(folders["tuned"]),
                "--autoencoder",
                str(folder),
            ]
        )
        == 2
    )
    assert "the autoencoder encodes hidden size 32 with 2 layers" in one_line_error(capsys)


def test_heatmap_png_and_a_self_difference_of_zero(folders, models, tmp_path, capsys):
    import imageio.v3 as iio

    out = tmp_path / "heat.png"
    assert (
        main(
            [
                "heatmap",
                PROMPT,
                "-o",
                str(out),
                "--model",
                str(folders["base"]),
                "--resolution",
                "640x360",
                "--token",
                "mean",
            ]
        )
        == 0
    )
    assert iio.imread(out).shape[:2] == (360, 640)
    assert "mean over tokens" in capsys.readouterr().out
    a = capture(models["base"], PROMPT)
    same = heatmap_captures(a, capture(models["base"], PROMPT), HeatmapOptions())
    assert same.values.shape == (N_LAYERS + 1, 32) and not same.values.any()
    assert same.difference and same.limit > 0
    diff = heatmap_captures(a, capture(models["tuned"], PROMPT), HeatmapOptions())
    assert not diff.values[: PERTURBED + 1].any() and np.abs(diff.values[-1]).max() > 0
    last = heatmap_captures(a, None, HeatmapOptions(token="last"))
    assert np.array_equal(last.values, a.hidden[:, -1])
    out_b = tmp_path / "diff.png"
    assert (
        main(
            [
                "heatmap",
                PROMPT,
                "-o",
                str(out_b),
                "--model",
                str(folders["base"]),
                "--model-b",
                str(folders["tuned"]),
                "--resolution",
                "640x360",
            ]
        )
        == 0
    )
    assert "B - A" in capsys.readouterr().out and iio.imread(out_b).shape[:2] == (360, 640)


def test_heatmap_bad_input(folders, tmp_path, capsys):
    out = ["-o", str(tmp_path / "h.png"), "--model", str(folders["base"])]
    assert main(["heatmap", PROMPT, *out, "--token", "first"]) == 2
    assert "invalid choice" in one_line_error(capsys)
    with pytest.raises(LayerscanError, match="unknown --token"):
        HeatmapOptions(token="first")
    assert main(["heatmap", PROMPT, "-o", str(tmp_path / "h.jpg")]) == 2
    assert ".png" in one_line_error(capsys)
    assert main(["heatmap", PROMPT, *out, "--clip-percentile", "0"]) == 2
    assert "clip-percentile" in one_line_error(capsys)


def test_heatmap_rows_run_from_the_embeddings_down_on_a_symmetric_scale():
    from layerscan.geometry.heatmap import Heatmap
    from layerscan.geometry.scene.heatmap import heatmap_image

    values = -np.ones((5, 8), np.float32)
    values[0] = 1.0  # the embeddings row positive (red), every block negative (blue)
    image = heatmap_image(
        Heatmap(
            values=values,
            layer_names=["embeddings"] + [f"block {i}" for i in range(1, 5)],
            title="t",
            prompt="p",
            limit=1.0,
            clip_percentile=100.0,
        ),
        (640, 360),
    )
    assert image.shape == (360, 640, 3)
    top, bottom = image[70, 317].astype(int), image[293, 317].astype(int)
    assert top[0] > top[2] + 60 and bottom[2] > bottom[0] + 60


@pytest.mark.slow
def test_embedded_heatmap_has_a_row_per_layer_and_a_column_per_dimension(embedded_model):
    from layerscan.geometry.pipeline import Pipeline

    prompt = "The quick brown fox jumps over the lazy dog"
    pipeline = Pipeline(embedded_model)
    last = pipeline.heatmap(prompt)
    mean = pipeline.heatmap(prompt, HeatmapOptions(token="mean"))
    assert last.values.shape == mean.values.shape == (31, 576)
    assert last.layer_names[0] == "embeddings" and not np.array_equal(last.values, mean.values)
    # the colour limit clips the few massive dimensions: most cells are inside ±limit
    assert 0 < last.limit < np.abs(last.values).max()
    assert (np.abs(last.values) <= last.limit).mean() == pytest.approx(0.99, abs=0.005)
