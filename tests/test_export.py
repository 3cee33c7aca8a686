"""Per-layer VTK/PLY meshes that ParaView reads, and the offline HTML page."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
import pyvista as pv

from layerscan.cli.main import main
from layerscan.core.errors import LayerscanError
from layerscan.geometry.scene import frames as fr
from layerscan.geometry.scene.export import export_html, export_meshes
from tests.synthetic_scan import make_diff, make_scan


@pytest.fixture(scope="module")
def scan():
    return make_scan(n_layers=3, n_particles=200, n_tokens=5)


@pytest.mark.parametrize("fmt", ["vtp", "vtk", "ply"])
def test_meshes_round_trip(scan, tmp_path, fmt):
    folder = export_meshes(scan, tmp_path / "out", fmt)
    for layer in range(4):
        cloud = pv.read(folder / f"cloud_layer{layer:02d}.{fmt}")
        assert np.allclose(cloud.points, scan.positions[0, layer], atol=1e-5)
        surface = pv.read(folder / f"surface_layer{layer:02d}.{fmt}")
        assert surface.n_cells == len(scan.surfaces[0][layer].faces)
        if fmt != "ply":
            assert cloud.point_data["features"].shape == (200, scan.clouds.shape[-1])
            assert set(cloud.point_data) >= {"slot", "density"}


def test_pvd_time_series_opens_in_paraview_reader(scan, tmp_path):
    folder = export_meshes(scan, tmp_path / "out")
    reader = pv.get_reader(str(folder / "clouds.pvd"))
    assert list(reader.time_values) == [0.0, 1.0, 2.0, 3.0]
    reader.set_active_time_value(2.0)
    mesh = reader.read()[0]
    assert np.allclose(mesh.points, scan.positions[0, 2], atol=1e-5)


def test_diff_meshes_and_replacing_a_folder(tmp_path):
    diff = make_diff(n_layers=2, n_particles=100)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stale.txt").write_text("old")
    with pytest.raises(LayerscanError, match="layerscan did not write it"):
        export_meshes(diff, tmp_path / "out")  # a folder layerscan didn't make is never replaced
    assert (tmp_path / "out" / "stale.txt").read_text() == "old"
    export_meshes(diff, tmp_path / "ours")
    with pytest.raises(LayerscanError, match="--overwrite"):
        export_meshes(diff, tmp_path / "ours")
    folder = export_meshes(diff, tmp_path / "ours", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [".layerscan-output.json", "a", "b"]
    cloud = pv.read(folder / "b" / "cloud_layer01.vtp")
    assert np.allclose(cloud.point_data["displacement"], diff.displacement_cloud[1])
    with pytest.raises(LayerscanError):
        export_meshes(diff, tmp_path / "x", "obj")
    assert not (tmp_path / "x").exists()


def test_html_is_self_contained(scan, tmp_path):
    page = export_html(scan, tmp_path / "scan.html").read_text()
    assert not re.search(r"https?://", page), "the page must not reach for the network"
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)
    data = json.loads(page.split("const DATA = ")[1].split(";</script>")[0])
    panel = data["panels"][0]
    assert len(panel["layer_names"]) == 4 and panel["lens"]
    # the inline data is the scan: positions centred and scaled as the scene frames them
    positions = np.frombuffer(base64.b64decode(panel["positions"]), np.float32)
    pos = scan.positions[-1]  # (n_layers+1, n_particles, 3)
    centre, radius = fr.bounds_of(pos)
    np.testing.assert_allclose(positions.reshape(pos.shape), (pos - centre) / radius, atol=1e-6)
    assert panel["metrics"]["token_trust"] == pytest.approx(scan.token_trust[-1].tolist(), abs=1e-4)


@pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node not installed (scripts/test.sh installs nodejs where it can)",
)
def test_html_script_parses(scan, tmp_path):
    page = export_html(scan, tmp_path / "scan.html").read_text()
    script = "\n".join(part.split("</script>")[0] for part in page.split("<script>")[1:])
    (tmp_path / "check.js").write_text(f"new Function({json.dumps(script)});")
    subprocess.run([shutil.which("node"), str(tmp_path / "check.js")], check=True)


HARNESS = r"""
// Runs the exported page's script against a tiny fake DOM and canvas; prints draw counts.
const fs = require("fs");
const html = fs.readFileSync(process.argv[2], "utf8");
const script = html.split("<script>").slice(1).map(p => p.split("</script>")[0]).join("\n");
const calls = {fillRect: 0, fill: 0, stroke: 0};
function ctx() {
  const own = {measureText: s => ({width: 7 * s.length})};
  return new Proxy(own, {get: (t, k) => k in calls ? () => calls[k]++ : (k in t ? t[k] : () => {}),
                        set: (t, k, v) => (t[k] = v, true)});
}
function el(tag) {
  const node = {tag, style: {}, children: [], innerHTML: "", textContent: "", value: "slot",
    checked: true,
    clientWidth: 640, clientHeight: 360, width: 0, height: 0,
    getContext: () => ctx(), appendChild(c) { this.children.push(c); }, querySelectorAll: () => [],
    getBoundingClientRect: () => ({left: 0, top: 0}),
    querySelector(sel) { return this[sel] || (this[sel] = el(sel)); }};
  return node;
}
const ids = {};
global.document = {getElementById: id => ids[id] || (ids[id] = el(id)), createElement: el};
global.window = {devicePixelRatio: 1};
let frames = 0;
global.requestAnimationFrame = f => {
  if (frames++ < 5) setTimeout(() => f(performance.now() + frames * 100), 0);
};
global.atob = s => Buffer.from(s, "base64").toString("binary");
eval(script);
setTimeout(() => console.log(JSON.stringify({frames, ...calls, layer: ids.slider.value})), 200);
"""


def test_html_script_draws_every_particle(tmp_path):
    """Run the page's script in node against a fake DOM and canvas: it animates and draws."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node not installed (scripts/test.sh installs nodejs where it can)")
    diff = make_diff(n_layers=3, n_particles=150)
    export_html(diff, tmp_path / "d.html")
    (tmp_path / "harness.js").write_text(HARNESS)
    result = subprocess.run(
        [node, str(tmp_path / "harness.js"), str(tmp_path / "d.html")],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    counts = json.loads(result.stdout)
    assert counts["frames"] >= 5 and counts["fillRect"] >= 5 * 2 * 150
    assert float(counts["layer"]) > 0  # it played


def test_html_diff_colours_by_token_divergence(tmp_path):
    """The page colours a diff as the MP4 frame does: each token by its hidden-state divergence
    on the frame's colour bar, and it rings the changed tokens in both panels."""
    from layerscan.geometry.scene.diff_view import divergence_scale

    diff = make_diff(n_layers=3, n_particles=120)
    page = export_html(diff, tmp_path / "d.html").read_text()
    data = json.loads(page.split("const DATA = ")[1].split(";</script>")[0])
    top, scale = divergence_scale(diff)
    assert data["colour_bar"]["top"] == pytest.approx(top)
    assert data["colour_bar"]["caption"] == scale.caption
    for panel, values in zip(
        data["panels"], (diff.token_divergence_a, diff.token_divergence_b), strict=True
    ):
        assert "displacement" not in panel  # the slot-by-slot diagnostic is no headline
        shown = np.frombuffer(base64.b64decode(panel["token_divergence"]), np.float32)
        np.testing.assert_allclose(shown.reshape(values.shape), np.clip(values / top, 0, 1))
        assert panel["changed"] == [[2, "changed"]] and panel["colour_key"] == scale.caption
    assert set(data["ring_colors"]) == {"changed", "appears", "vanishes"}
    a, b = data["panels"]
    assert a["token_colors"][3] == b["token_colors"][3]  # an aligned pair: one colour
    assert a["token_colors"][2] != b["token_colors"][2]  # the changed token: its own
    assert b["metrics"]["baseline_trust"] == pytest.approx(diff.joint_trust[1], abs=1e-4)
    assert b["baseline_name"] == "joint PCA-3 of A+B"
    assert data["threshold"] == pytest.approx(diff.threshold) and data["onsets"]  # as the frame
    assert data["onset_key"].startswith("orange: threshold")


def test_html_diff_and_cli(tmp_path, capsys):
    diff = make_diff(n_layers=2, n_particles=100)
    diff.save(tmp_path / "d.scan")
    assert main(["export", "--diff", str(tmp_path / "d.scan"), "-o", str(tmp_path / "d.html")]) == 0
    page = (tmp_path / "d.html").read_text()
    assert '"divergence"' in page and '"differing_tokens":[2]' in page
    make_scan(n_layers=2, n_particles=64).save(tmp_path / "s.scan")
    assert (
        main(
            ["export", str(tmp_path / "s.scan"), "-o", str(tmp_path / "meshes"), "--format", "ply"]
        )
        == 0
    )
    assert (tmp_path / "meshes" / "cloud_layer02.ply").is_file()
    assert (
        main(["export", str(tmp_path / "s.scan"), "-o", str(tmp_path / "x.txt.html"), "--diff"])
        == 2
    )
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(LayerscanError, match="html"):
        export_html(diff, tmp_path / "d.txt")
