"""Attention arcs: the scan's summary, the arcs selected, the frame drawing exactly those."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from layerscan.autoencoder.capture.attention_record import AttentionRecord
from layerscan.core.errors import LayerscanError
from layerscan.geometry.attention_summary import SINK, select_arcs, summarize
from layerscan.geometry.scan_file import Scan
from tests.synthetic_scan import make_scan

N_LAYERS, N_HEADS, N_TOKENS = 3, 2, 7


def causal_record(seed: int = 0) -> AttentionRecord:
    """Random causal attention (rows sum to 1) with a strong first-token sink."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(N_LAYERS, N_HEADS, N_TOKENS, N_TOKENS))
    logits[..., SINK] += 1.5
    logits[..., np.triu_indices(N_TOKENS, 1)[0], np.triu_indices(N_TOKENS, 1)[1]] = -np.inf
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)  # (L, H, T, T)
    empty = np.zeros((N_LAYERS, N_HEADS, N_TOKENS, 4), np.float16)
    return AttentionRecord(
        queries=empty,
        keys=empty,
        scaling=np.full(N_LAYERS, 0.5, np.float32),
        weights=weights.astype(np.float16),
    )


def scan_with_attention() -> Scan:
    scan = make_scan(n_layers=N_LAYERS, n_particles=96, n_tokens=N_TOKENS)
    return dataclasses.replace(scan, attention=summarize(causal_record()))


def brute_force_arcs(weights: np.ndarray, top: int, mass: float, sink: bool, token=None):
    """Per query, walk its keys by weight and keep what the rule says: the reference."""
    arcs = []
    for q, row in enumerate(weights):
        kept, drawn = 0, 0.0
        for k in np.argsort(-row, kind="stable")[:8]:
            if row[k] <= 0 or k == q or (k == SINK and not sink):
                continue
            if token is not None and token not in (q, k):
                continue
            if kept < top and drawn < mass:
                arcs.append((q, int(k), float(row[k])))
                kept, drawn = kept + 1, drawn + row[k]
    return arcs


@pytest.mark.parametrize("head", [None, 0, 1])
@pytest.mark.parametrize(
    ("top", "mass", "sink", "token"),
    [(3, 0.8, False, None), (2, 0.5, True, None), (3, 0.9, False, 4)],
)
def test_arcs_are_the_top_keys_after_pruning_and_coverage_is_their_mass(
    head, top, mass, sink, token
):
    record = causal_record()
    summary = summarize(record)
    weights = record.weights.astype(np.float32)
    for block in range(N_LAYERS):
        row = weights[block].mean(0) if head is None else weights[block, head]
        arcs = select_arcs(summary, block, head, N_TOKENS, top, mass, sink, token)
        expected = brute_force_arcs(row, top, mass, sink, token)
        got = sorted(
            zip(arcs.queries.tolist(), arcs.keys.tolist(), arcs.weights.tolist(), strict=True)
        )
        assert [(q, k) for q, k, _ in got] == sorted((q, k) for q, k, _ in expected)
        np.testing.assert_allclose(
            [w for *_, w in got], [w for *_, w in sorted(expected)], atol=1e-6
        )
        assert arcs.coverage == pytest.approx(arcs.weights.sum() / N_TOKENS, rel=1e-6)
        assert arcs.sink_share == pytest.approx(row[1:, SINK].mean(), abs=1e-3)


def test_summary_entropy_sink_and_file_round_trip(tmp_path):
    record = causal_record()
    summary = summarize(record)
    w = record.weights.astype(np.float32)
    assert summary.top_keys.shape == (N_LAYERS, N_HEADS + 1, N_TOKENS, N_TOKENS)
    assert summary.sink_share.shape == (N_LAYERS, N_HEADS + 1)
    safe = np.where(w > 0, w, 1)
    np.testing.assert_allclose(summary.entropy, -(w * np.log2(safe)).sum(-1).mean(-1), rtol=1e-5)
    assert summary.entropy[:, 0].min() >= 0
    scan = scan_with_attention()
    back = Scan.load(scan.save(tmp_path / "a.scan"))
    for name, array in scan.attention.arrays("").items():
        np.testing.assert_array_equal(back.attention.arrays("")[name], array)
    bad = dataclasses.replace(
        scan, attention=dataclasses.replace(scan.attention, top_keys=scan.attention.top_keys + 99)
    )
    with pytest.raises(LayerscanError, match="past the tokens"):
        bad.validate()


def test_frame_draws_exactly_the_selected_arcs_and_states_their_mass():
    from layerscan.geometry.scene.attention_arcs import ARC_SEGMENTS
    from layerscan.geometry.scene.scene import Scene, SceneOptions

    scan = scan_with_attention()
    scene = Scene(scan, SceneOptions(window_size=(480, 320)))
    try:
        for layer, head in ((2, None), (3, 1)):
            scene.arcs.head = head
            scene.update(0, float(layer))
            arcs = select_arcs(scan.attention, layer - 1, head, N_TOKENS, 3, 0.8)
            drawn = sum(m.n_lines for m in scene.arcs.meshes)
            assert drawn == len(arcs.queries) > 0
            assert sum(m.n_points for m in scene.arcs.meshes if m.n_lines) == drawn * (
                ARC_SEGMENTS + 1
            )
            caption = scene.arcs.caption.actor.GetInput()
            assert f"arcs show {100 * arcs.coverage:.0f}% of attention" in caption
            assert f"” {100 * arcs.sink_share:.0f}%" in caption  # narrow frame: no "holds"
        scene.update(0, 0.0)  # the embeddings: no attention yet
        assert not scene.arcs.actors[0].GetVisibility()
        pid = int(np.flatnonzero(scan.particle_tokens[0, 2] == 3)[0])
        scene.update(0, 2.0)
        scene.describe_particle(0, pid)  # a picked token: only its arcs
        assert scene.arcs.token == 3
        assert all(
            3 in (q, k) for q, k in zip(scene.arcs.arcs.queries, scene.arcs.arcs.keys, strict=True)
        )
        image = scene.image()
        assert image.shape == (320, 480, 3)
    finally:
        scene.close()
    with pytest.raises(LayerscanError, match="--arc-head 5"):
        Scene(scan, SceneOptions(window_size=(480, 320), arc_head=5))


def test_window_keys_toggle_arcs_and_cycle_heads(tmp_path):
    from layerscan.geometry.scene.window import Viewer

    viewer = Viewer(scan_with_attention(), off_screen=True, screenshot_dir=tmp_path)
    try:
        viewer.show(layer=2.0)
        arcs = viewer.scene.arcs
        assert "a arcs" in viewer.hint.GetInput()
        viewer.press("h")
        assert arcs.head == 0 and "head 0" in arcs.caption.actor.GetInput()
        viewer.press("h")
        viewer.press("h")
        assert arcs.head is None  # past the last head: the mean
        viewer.press("h")
        viewer.press("H")
        assert arcs.head is None and "mean of 2 heads" in arcs.caption.actor.GetInput()
        viewer.press("a")
        assert not arcs.actors[0].GetVisibility() and not arcs.halo.GetVisibility()
    finally:
        viewer.close()


def test_head_table_lists_every_block_and_head():
    from layerscan.geometry.attention_summary import head_table

    summary = summarize(causal_record())
    text = head_table(summary)
    lines = text.splitlines()
    assert lines[0].startswith("attention per head (weights)")
    assert len(lines) >= 2 + N_LAYERS
    first = lines[2].split("|")
    assert first[0].split()[0] == "1" and len(first[0].split()) == 1 + N_HEADS
    assert f"{100 * summary.sink_share[0, N_HEADS]:3.0f}%" in lines[2]


def test_a_scan_of_a_capture_with_attention_carries_its_summary(tmp_path):
    from layerscan.autoencoder.capture.hidden_states import capture
    from layerscan.autoencoder.capture.loading import load_model
    from layerscan.geometry.build import scan_capture
    from tests.test_pipeline import FAST, PROMPT, autoencoder_for
    from tests.tiny_models import save_tiny_model

    llama = load_model(str(save_tiny_model("llama", tmp_path / "llama")), device="cpu")
    captured = capture(llama, PROMPT, attention=True)
    scan = scan_capture(captured, autoencoder_for(llama, [PROMPT]), FAST)
    n = captured.n_tokens
    assert scan.attention.top_keys.shape == (2, 3, n, min(8, n))
    expected = summarize(captured.attention)
    np.testing.assert_array_equal(scan.attention.top_keys, expected.top_keys)
    assert Scan.load(scan.save(tmp_path / "a.scan")).attention is not None


def test_the_sink_halo_is_sized_by_the_shown_tokens():
    """A token-time scan whose early steps spread far: the halo follows the frame's tokens."""
    from layerscan.geometry.scene.scene import Scene, SceneOptions

    scan = scan_with_attention()
    positions = scan.positions.copy()
    positions[:, 0] *= 50.0  # the embeddings spread 50 times wider than any later layer
    scan = dataclasses.replace(scan, positions=positions)
    scene = Scene(scan, SceneOptions(window_size=(480, 320)))
    try:
        scene.update(0, 2.0)
        places = scene.panels[0].places[:N_TOKENS]  # (n_tokens, 3)
        share = scene.arcs.arcs.sink_share
        radius = np.ptp(scene.arcs.halo_mesh.points, axis=0).max() / 2
        spread = np.ptp(places, axis=0).max() / 2
        assert radius == pytest.approx(spread * (0.03 + 0.12 * np.sqrt(share)), rel=1e-3)
        assert np.allclose(scene.arcs.halo_mesh.center, places[SINK], atol=1e-3 * spread)
    finally:
        scene.close()
