"""The HTML page's attention arcs and component strip: the page's own selection equals the MP4's
(run in node against a fake DOM), and a headless Chromium draws them (slow)."""

from __future__ import annotations

import base64
import dataclasses
import json
import shutil
import subprocess

import numpy as np
import pytest

from layerscan.core.errors import LayerscanError
from layerscan.geometry.attention_summary import select_arcs
from layerscan.geometry.scene.export import export_html
from layerscan.geometry.scene.scene import SceneOptions
from tests.synthetic_scan import make_activity_scan
from tests.test_export import HARNESS

N_LAYERS, N_TOKENS, N_HEADS = 3, 7, 2
CASES = [
    (block, head, token)
    for block in range(N_LAYERS)
    for head in (None, 0, 1)
    for token in (None, 4)
]


@pytest.fixture(scope="module")
def scan():
    return make_activity_scan(
        n_layers=N_LAYERS, n_tokens=N_TOKENS, n_heads=N_HEADS, n_particles=140
    )


def page_data(path) -> dict:
    page = path.read_text()
    return json.loads(page.split("const DATA = ")[1].split(";</script>")[0])


def test_page_carries_the_scans_top_keys_writes_and_pruning(scan, tmp_path):
    options = SceneOptions(arc_top_k=2, arc_mass=0.6, trace=3)
    panel = page_data(export_html(scan, tmp_path / "a.html", options=options))["panels"][0]
    att, comp = panel["attention"], panel["components"]
    keys = np.frombuffer(base64.b64decode(att["keys"]), np.int32).reshape(att["shape"])
    np.testing.assert_array_equal(keys, scan.attention.top_keys)
    assert (att["top"], att["mass"], att["sink"], att["n_heads"]) == (2, 0.6, False, N_HEADS)
    mlp = np.frombuffer(base64.b64decode(comp["mlp"]), np.float32)
    np.testing.assert_array_equal(mlp.reshape(N_LAYERS, N_TOKENS), scan.components.mlp_write)
    assert comp["kv"][2] == "KV cache 3 positions · 92.2 kB" and panel["trace"] == 3
    bare = page_data(
        export_html(
            scan,
            tmp_path / "b.html",
            options=SceneOptions(show_attention=False, show_components=False),
        )
    )["panels"][0]
    assert bare["attention"] is None and bare["components"] is None
    with pytest.raises(LayerscanError, match="--arc-head 7"):
        export_html(scan, tmp_path / "c.html", options=SceneOptions(arc_head=7))
    with pytest.raises(LayerscanError, match="--trace 9"):
        export_html(scan, tmp_path / "c.html", options=SceneOptions(trace=9))


@pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node not installed (scripts/test.sh installs nodejs where it can)",
)
@pytest.mark.parametrize("options", [SceneOptions(), SceneOptions(arc_top_k=1, arc_sink=True)])
def test_page_selects_exactly_the_arcs_the_movie_draws(scan, tmp_path, options):
    """The page's selection (viewer.js) against select_arcs, for every block, head and pick."""
    export_html(scan, tmp_path / "a.html", options=options)
    harness = HARNESS.rsplit("setTimeout(", 1)[0] + (  # print the page's selections instead
        f"console.log(JSON.stringify({json.dumps(CASES)}.map(([b, h, t]) => "
        "window.layerscan.arcs(0, b, h, t))));"
    )
    assert "window.layerscan.arcs(0" in harness
    (tmp_path / "harness.js").write_text(harness)
    result = subprocess.run(
        [shutil.which("node"), str(tmp_path / "harness.js"), str(tmp_path / "a.html")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    pages = json.loads(result.stdout.splitlines()[0])
    for (block, head, token), page in zip(CASES, pages, strict=True):
        arcs = select_arcs(
            scan.attention,
            block,
            head,
            N_TOKENS,
            options.arc_top_k,
            options.arc_mass,
            options.arc_sink,
            token,
        )
        expected = list(zip(arcs.queries.tolist(), arcs.keys.tolist(), strict=True))
        assert [(q, k) for q, k, _ in page["arcs"]] == expected, (block, head, token)
        np.testing.assert_allclose([w for *_, w in page["arcs"]], arcs.weights, atol=1e-6)
        assert page["coverage"] == pytest.approx(arcs.coverage, abs=1e-6)
        assert page["sinkShare"] == pytest.approx(arcs.sink_share, abs=1e-6)


def test_a_diff_page_has_no_arcs_or_strip(tmp_path):
    from tests.synthetic_scan import make_diff

    diff = make_diff(n_layers=2, n_particles=64)
    a = make_activity_scan(n_layers=2, n_tokens=6, n_prompt=6, n_particles=64)
    diff = dataclasses.replace(diff, a=a)
    panels = page_data(export_html(diff, tmp_path / "d.html"))["panels"]
    assert all("attention" not in p and "components" not in p for p in panels)


def test_export_command_takes_the_pages_flags(scan, tmp_path, capsys):
    from layerscan.cli.main import main

    scan.save(tmp_path / "a.scan")
    out = tmp_path / "a.html"
    flags = ["--arc-top-k", "1", "--arc-head", "1", "--trace", "2", "--no-strip"]
    assert main(["export", str(tmp_path / "a.scan"), "-o", str(out), *flags]) == 0
    panel = page_data(out)["panels"][0]
    assert (panel["attention"]["top"], panel["attention"]["head"], panel["trace"]) == (1, 1, 2)
    assert panel["components"] is None
    bad = ["export", str(tmp_path / "a.scan"), "-o", str(tmp_path / "b.html"), "--trace", "99"]
    assert main(bad) == 2
    assert "--trace 99" in capsys.readouterr().err and not (tmp_path / "b.html").exists()
