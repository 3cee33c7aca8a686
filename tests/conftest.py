"""Shared fixtures: tiny random models (no downloads) and the embedded model, loaded once."""

from __future__ import annotations

import os

import pytest

from tests.tiny_models import ARCHITECTURES, save_tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for a hub


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """{architecture: folder} of tiny random models saved with their tokenizers."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: save_tiny_model(arch, root / arch) for arch in ARCHITECTURES}


@pytest.fixture(scope="session")
def tiny_models(tiny_model_dirs) -> dict:
    """{architecture: LoadedModel} for the tiny random models, on the CPU."""
    from layerscan.autoencoder.capture.loading import load_model

    return {arch: load_model(str(folder), device="cpu") for arch, folder in tiny_model_dirs.items()}


@pytest.fixture(scope="session")
def embedded_model():
    """The real embedded SmolLM2-135M-Instruct (converted once, then loads in ~1 s)."""
    from layerscan.autoencoder.capture.loading import load_model

    return load_model("embedded", device="cpu")


@pytest.fixture(scope="module")
def llama(tiny_models):
    """The tiny random Llama."""
    return tiny_models["llama"]


@pytest.fixture(scope="module")
def autoencoder(llama):
    """A tiny autoencoder fitted to the tiny Llama on two prompts (tests/test_pipeline.py)."""
    from tests.test_pipeline import PROMPT, autoencoder_for

    return autoencoder_for(llama, [PROMPT, "one two three four five six seven eight nine"])


@pytest.fixture(scope="module")
def scanned(llama, autoencoder):
    """The pipeline test prompt scanned with the tiny Llama and its autoencoder."""
    from layerscan.autoencoder.capture.hidden_states import capture
    from layerscan.geometry.build import scan_capture
    from tests.test_pipeline import FAST, PROMPT

    return scan_capture(capture(llama, PROMPT), autoencoder, FAST)
