"""The Python API is the command line's path: same pipeline, same arrays, same checks."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

import layerscan
from layerscan.autoencoder.artifact import export_autoencoder
from layerscan.autoencoder.capture import hidden_states
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from layerscan.geometry.scan_file import ARRAY_FIELDS
from tests.test_pipeline import PROMPT, SMALL, autoencoder_for


@pytest.fixture(scope="module")
def autoencoder_dir(tiny_models, tmp_path_factory):
    trained = autoencoder_for(tiny_models["llama"], [PROMPT, "a cat sat on the mat"])
    return str(export_autoencoder(trained.model, trained.config, tmp_path_factory.mktemp("ae")))


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCAN_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_import_layerscan_loads_no_torch_and_names_the_api():
    code = (
        "import sys, layerscan\n"
        "print(sorted(m for m in ('torch', 'transformers', 'pyvista') if m in sys.modules),\n"
        "      sorted(layerscan.__all__))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, names = out.stdout.strip().split("] ", 1)
    assert heavy == "["
    for name in ("scan", "diff", "render", "still", "Scan", "DiffScan", "Pipeline", "load"):
        assert repr(name) in names


def test_the_api_gives_exactly_the_commands_arrays(tiny_model_dirs, autoencoder_dir, tmp_path):
    model = str(tiny_model_dirs["llama"])
    flags = ["--epochs", "30", "--projection-seed", "3", "--surface", "none", "--top-k", "3"]
    out = tmp_path / "cli.scan"
    assert main(["scan", PROMPT, "-o", str(out), "--model", model, "--autoencoder",
                 autoencoder_dir, *flags]) == 0  # fmt: skip
    from_cli = layerscan.Scan.load(out)
    assert np.isfinite(from_cli.trustworthiness).all()  # `scan` measures the diagnostics
    from_api = layerscan.scan(PROMPT, model=model, autoencoder=autoencoder_dir, epochs=30,
                              projection_seed=3, surface="none", top_k=3,
                              diagnostics=True)  # fmt: skip
    for name in ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(from_api, name), getattr(from_cli, name), name)
    assert from_api.tokens == from_cli.tokens and from_api.lens_tokens == from_cli.lens_tokens
    assert from_api.settings["projection"] == from_cli.settings["projection"]


def test_a_model_without_an_autoencoder_is_fitted_on_first_use_from_python_too(
    tiny_model_dirs, cache
):
    """The library path used to load the packaged SmolLM2 autoencoder and fail its check."""
    model = str(tiny_model_dirs["gpt2"])
    scan = layerscan.scan(PROMPT, model=model, epochs=20, normalization="standardize")
    assert scan.settings["autoencoder"]["model_id"] == model
    assert any((cache / "autoencoders").iterdir())  # kept for the next run


def test_a_prompt_too_long_fails_before_the_forward_pass(tiny_models, autoencoder_dir, monkeypatch):
    few = replace(SMALL, n_particles=24, max_len=24)  # fewer particles than the context of 64
    trained = autoencoder_for(tiny_models["llama"], [PROMPT], few)
    pipeline = layerscan.Pipeline(tiny_models["llama"], autoencoder=trained)
    limit = trained.config.max_tokens
    passes = []
    real = hidden_states._forward_states
    monkeypatch.setattr(
        hidden_states, "_forward_states", lambda *a, **k: passes.append(1) or real(*a, **k)
    )
    words = ["word"]
    while len(tiny_models["llama"].tokenizer(" ".join(words))["input_ids"]) <= limit:
        words.append("word")
    with pytest.raises(LayerscanError, match="what the autoencoder holds"):
        pipeline.scan(" ".join(words))
    assert passes == []
    pipeline.scan("a short prompt")  # the same pipeline still works, and runs the model once
    assert passes == [1]


def test_unknown_keywords_name_the_closest_flag():
    with pytest.raises(TypeError, match="projection_seed"):
        layerscan.scan(PROMPT, projection_sed=1)
    with pytest.raises(TypeError, match="resolution"):
        layerscan.render("x.scan", "x.png", resolutoin=(10, 10))


def test_diff_render_and_still_from_python(tiny_model_dirs, autoencoder_dir, tmp_path):
    model = str(tiny_model_dirs["llama"])
    d = layerscan.diff(PROMPT, PROMPT.replace("fox", "cat"), model=model,
                       autoencoder=autoencoder_dir, epochs=20)  # fmt: skip
    assert isinstance(d, layerscan.DiffScan)
    d.save(tmp_path / "d.scan")
    stats = layerscan.render(tmp_path / "d.scan", tmp_path / "d.png", resolution=(320, 180))
    assert (stats.width, stats.height) == (320, 180)
    picture = layerscan.still(d.a, layer=1, resolution=(160, 120))
    assert picture.image.shape == (120, 160, 3) and picture._repr_png_()[:4] == b"\x89PNG"
    assert picture.image.std() > 1  # something is drawn


def test_a_still_given_a_path_for_its_layer_says_so_in_one_line(tmp_path):
    """`still(scan, "out.png")` (the layer is its second argument) used to raise a TypeError."""
    with pytest.raises(
        LayerscanError, match="--layer must be a layer number from 0 up, got 'x.png'"
    ):
        layerscan.still(tmp_path / "missing.scan", "x.png")
