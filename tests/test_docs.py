"""The docs hold: links resolve, the README stays a front door, its Python example runs."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from layerscan.cli.main import COMMAND_MODULES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 250
SETUP_COMMANDS = ("bash scripts/quickstart.sh", "bash scripts/test.sh")
RESERVED_DOCS = (
    "reliability.md",
    "diff.md",
    "attention.md",
    "components.md",
    "faithfulness.md",
    "scene-reading.md",
)
"""Pages other work is writing; once one exists, the README's documentation list must link it."""

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = CODE_SPAN.sub(lambda m: m.group(0)[1:-1], heading).strip().lower()
    kept = "".join(
        c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN" and c.isalnum()
    )
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a markdown file, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in FENCE.sub("", path.read_text()).splitlines():
        if match := re.match(r"#{1,6}\s+(.*)", line):
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text()))


def test_slug_matches_githubs_anchors():
    assert slug("Why 1024 × 32, and how close to the linear ceiling") == (
        "why-1024--32-and-how-close-to-the-linear-ceiling"
    )
    assert slug("Geometry: `layerscan scan`") == "geometry-layerscan-scan"
    assert slug("Start-up") == "start-up"


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (page.parent / file).resolve() if file else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.name}: {broken}"


def test_the_readme_is_a_front_door():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    for command in SETUP_COMMANDS:
        assert command in text, command
        assert (ROOT / command.split()[1]).exists()
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()  # CI runs the README's command


def test_every_command_has_a_row_in_the_readme():
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `layerscan ")]
    named = {row.split()[2].strip("`") for row in rows}
    assert set(COMMAND_MODULES) <= named, set(COMMAND_MODULES) - named


def test_every_doc_page_is_linked_from_the_readme():
    linked = {Path(target.partition("#")[0]).name for target in links(README)}
    missing = [page.name for page in DOCS if page.name not in linked]
    reserved = [name for name in missing if name in RESERVED_DOCS]
    assert not missing, f"add to the README's documentation list: {missing} (reserved: {reserved})"


def readme_example() -> str:
    """The fenced Python block of the README's "Python" section."""
    section = README.read_text().split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def check_example_ran(namespace: dict, folder: Path) -> None:
    import layerscan

    scan, again = namespace["scan"], namespace["again"]
    assert isinstance(scan, layerscan.Scan) and isinstance(namespace["d"], layerscan.DiffScan)
    np.testing.assert_array_equal(again.positions, scan.positions)
    assert namespace["frame"].image.ndim == 3 and namespace["frame"]._repr_png_()
    for name in ("france.gif", "france-germany.png", "france.scan"):
        assert (folder / name).stat().st_size > 0, name


def test_the_readme_example_names_the_public_api():
    import layerscan

    used = set(re.findall(r"layerscan\.(\w+)", readme_example()))
    assert used <= set(layerscan.__all__), used - set(layerscan.__all__)


def test_the_readme_python_example_runs_on_a_tiny_model(
    tiny_model_dirs, tmp_path, monkeypatch, capsys
):
    """The README's block as written, with `model="embedded"` swapped for a tiny llama."""
    import layerscan.api
    from layerscan.autoencoder.artifact import export_autoencoder
    from tests.test_pipeline import autoencoder_for

    model = str(tiny_model_dirs["llama"])
    loaded = layerscan.api._loaded(model, "cpu", "auto", False)
    prompts = re.findall(r'"(The capital[^"]*)"', readme_example())
    trained = autoencoder_for(loaded, prompts)
    tiny_autoencoder = str(export_autoencoder(trained.model, trained.config, tmp_path / "ae"))
    real = layerscan.api.pipeline

    def tiny(_model="embedded", *, autoencoder=None, **options):
        return real(model, device="cpu", autoencoder=tiny_autoencoder, epochs=20, **options)

    monkeypatch.setattr(layerscan.api, "pipeline", tiny)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    check_example_ran(namespace, tmp_path)


@pytest.mark.slow
def test_the_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    """The embedded model, the packaged autoencoder, exactly the README's lines."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    check_example_ran(namespace, tmp_path)
