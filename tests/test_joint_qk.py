"""`layerscan attention`: the joint query-key view's normalisation, figures and files."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from layerscan.autoencoder.capture.hidden_states import capture
from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from layerscan.geometry.joint_qk import (
    closeness_correlation,
    joint_view,
    normalize_qk,
    softmax_weights,
)
from tests.test_attention_capture import PROMPT, models  # noqa: F401  (the fixture)


@pytest.mark.parametrize("arch", ["qwen2", "gpt2", "gqa_llama"])
def test_normalisation_leaves_every_heads_attention_unchanged(models, arch):  # noqa: F811
    record = capture(models[arch], PROMPT, top_k=0, attention=True).attention
    q = record.queries.astype(np.float64)  # (L, H, T, d)
    k = record.keys.astype(np.float64)
    qn, kn = normalize_qk(q, k)
    scale = record.scaling[:, None, None, None]
    before = softmax_weights(q * scale, k, 1.0, causal=True)
    after = softmax_weights(qn * scale, kn, 1.0, causal=True)
    np.testing.assert_allclose(after, before, atol=1e-9)
    np.testing.assert_allclose(  # queries and keys end with equal mean norms
        np.linalg.norm(qn, axis=-1).mean(-1), np.linalg.norm(kn, axis=-1).mean(-1), rtol=1e-9
    )


def test_closeness_correlation_is_minus_one_when_near_means_attended():
    rng = np.random.default_rng(0)
    k3 = rng.normal(size=(6, 3))
    q3 = np.zeros((6, 3))
    distances = np.linalg.norm(k3, axis=-1)
    weights = np.tril(np.exp(-distances)[None].repeat(6, 0))
    assert closeness_correlation(weights, q3, k3, causal=True) == pytest.approx(-1.0)


def test_joint_view_shapes_and_bad_heads(models):  # noqa: F811
    loaded = models["qwen2"]
    result = capture(loaded, PROMPT, top_k=0, attention=True)
    view = joint_view(result.attention, result.tokens, [1, 2, 3], [1], n_iter=20)
    n = result.n_tokens
    assert view.positions.shape == (3, 1, 2 * n, 3) and np.isfinite(view.positions).all()
    assert view.correlation.shape == view.baseline.shape == (3, 1)
    assert np.all(np.abs(view.correlation) <= 1)
    with pytest.raises(LayerscanError, match="heads 0..3"):
        joint_view(result.attention, result.tokens, [1], [4])
    with pytest.raises(LayerscanError, match="blocks 1..3"):
        joint_view(result.attention, result.tokens, [4], [0])


@pytest.mark.slow
def test_cli_png_small_multiples_and_movie(models, tmp_path, capsys):  # noqa: F811
    folder = models["qwen2"].model.name_or_path
    common = [PROMPT, "--model", folder, "--device", "cpu", "--resolution", "480x320"]
    png = tmp_path / "qk.png"
    assert main(["attention", *common, "--layer", "2", "--head", "1", "-o", str(png)]) == 0
    out = capsys.readouterr().out
    assert "block   2 head  1: joint view" in out and "PCA-3" in out
    assert iio.imread(png).shape[:2] == (320, 480)
    grid = tmp_path / "all.png"
    assert main(["attention", *common, "--layer", "2", "--head", "all", "-o", str(grid)]) == 0
    assert capsys.readouterr().out.count("joint view") == 4
    assert iio.imread(grid).shape[1] == 480
    movie = tmp_path / "qk.mp4"
    assert main(["attention", *common, "--head", "0", "-o", str(movie)]) == 0
    assert "frames" in capsys.readouterr().out and movie.stat().st_size > 0
    assert main(["attention", *common, "--head", "all", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "--head all" in capsys.readouterr().err
