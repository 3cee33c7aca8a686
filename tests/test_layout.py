"""The stages import one way: read every module's imports with `ast` and check the direction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"autoencoder": "layerscan.autoencoder", "geometry": "layerscan.geometry",
            "layerscan": "layerscan", "configs": "layerscan.configs"}
"""Source folder → the package name it installs as (pyproject's package-dir)."""
SHARED_COMMAND_MODULES = ("layerscan.commands.common", "layerscan.commands.options")


def modules() -> dict[str, set[str]]:
    """{module name: every module it imports, at any depth (lazy imports included)}."""
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts)).removesuffix(".__init__")
            imported = set()
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    imported.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    imported.update([node.module]
                                    + [f"{node.module}.{alias.name}" for alias in node.names])
            found[name] = imported
    return found


MODULES = modules()


def offenders(where: str, forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
              ) -> list[str]:
    return sorted(f"{name} imports {target}" for name, targets in MODULES.items()
                  if name.startswith(where) and not name.startswith(allowed)
                  for target in targets
                  if target.startswith(forbidden) and not target.startswith(name))


def test_the_layout_is_read():
    assert {"layerscan.autoencoder.model", "layerscan.autoencoder.capture.loading",
            "layerscan.geometry.pipeline", "layerscan.geometry.scene.scene",
            "layerscan.commands.render"} <= set(MODULES)


def test_autoencoder_imports_nothing_later():
    assert offenders("layerscan.autoencoder", ("layerscan.geometry", "layerscan.commands",
                                               "layerscan.cli")) == []


def test_only_the_scene_imports_pyvista_or_vtk():
    assert offenders("layerscan", ("pyvista", "vtk", "vtkmodules"),
                     allowed=("layerscan.geometry.scene",)) == []


def test_only_training_imports_lightning():
    assert offenders("layerscan", ("pytorch_lightning", "lightning"),
                     allowed=("layerscan.autoencoder.training",)) == []


def test_the_scene_reads_scan_files_only():
    assert offenders("layerscan.geometry.scene", ("layerscan.autoencoder",
                                                  "layerscan.geometry.pipeline",
                                                  "layerscan.commands")) == []


@pytest.mark.parametrize("command", sorted(n for n in MODULES if n.startswith(
    "layerscan.commands.") and n not in SHARED_COMMAND_MODULES))
def test_commands_never_import_each_other(command):
    others = tuple(n for n in MODULES if n.startswith("layerscan.commands.")
                   and n not in SHARED_COMMAND_MODULES and n != command)
    assert sorted(t for t in MODULES[command] if t.startswith(others)) == []
