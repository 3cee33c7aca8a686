"""The stages import one way: read every module's imports with `ast` and check the direction."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {
    "autoencoder": "layerscan.autoencoder",
    "geometry": "layerscan.geometry",
    "layerscan": "layerscan",
    "configs": "layerscan.configs",
}
"""Source folder → the package name it installs as (pyproject's package-dir)."""


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
                    imported.update(
                        [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
                    )
            found[name] = imported
    return found


MODULES = modules()


def within(name: str, packages: tuple[str, ...]) -> bool:
    """Whether module `name` is one of `packages` or inside one (by dotted parts: a module
    `geometry.diff` does not hold `geometry.diff_tokens`)."""
    return any(name == p or name.startswith(p + ".") for p in packages)


def offenders(
    where: str | tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()
) -> list[str]:
    where = (where,) if isinstance(where, str) else where
    return sorted(
        f"{name} imports {target}"
        for name, targets in MODULES.items()
        if within(name, where) and not within(name, allowed)
        for target in targets
        if within(target, forbidden) and not within(target, (name,))
    )


def test_the_layout_is_read():
    assert {
        "layerscan.autoencoder.model",
        "layerscan.autoencoder.capture.loading",
        "layerscan.geometry.pipeline",
        "layerscan.geometry.scene.scene",
        "layerscan.cli.commands.render",
    } <= set(MODULES)


STAGES = ("layerscan.autoencoder", "layerscan.geometry", "layerscan.configs")


def test_autoencoder_imports_nothing_later():
    assert offenders("layerscan.autoencoder", ("layerscan.geometry", "layerscan.cli")) == []


def test_no_stage_imports_the_command_line():
    assert offenders(STAGES, ("layerscan.cli",)) == []


def test_core_imports_no_stage_and_no_command_line():
    assert offenders("layerscan.core", (*STAGES, "layerscan.cli")) == []


def test_only_the_scene_imports_pyvista_or_vtk():
    assert (
        offenders(
            "layerscan", ("pyvista", "vtk", "vtkmodules"), allowed=("layerscan.geometry.scene",)
        )
        == []
    )


def test_only_training_and_its_data_import_lightning():
    assert (
        offenders(
            "layerscan",
            ("pytorch_lightning", "lightning"),
            allowed=(
                "layerscan.autoencoder.training",
                "layerscan.autoencoder.datamodule",
                "layerscan.autoencoder.extraction",
                "layerscan.autoencoder.quiet_lightning",
            ),
        )
        == []
    )


SCAN_RECORDS = (
    "layerscan.geometry.scan_file",
    "layerscan.geometry.diff_scan",
    "layerscan.geometry.diff_tokens",
    "layerscan.geometry.attention_summary",
    "layerscan.geometry.joint_qk",
    "layerscan.geometry.scan_options",
    "layerscan.geometry.heatmap",
)
"""What the scene may read of the geometry stage: its output records (scans, heatmaps) and
their options."""


def test_the_scene_reads_scan_files_only():
    earlier = tuple(
        n
        for n in MODULES
        if n.startswith(("layerscan.geometry.", "layerscan.autoencoder"))
        and not n.startswith(("layerscan.geometry.scene", *SCAN_RECORDS))
    )
    assert offenders("layerscan.geometry.scene", (*earlier, "layerscan.cli")) == []


def test_no_module_imports_a_private_name_of_another():
    private = sorted(
        f"{name} imports {target}"
        for name, targets in MODULES.items()
        for target in targets
        if target.rsplit(".", 1)[-1].startswith("_")
        and not target.rsplit(".", 1)[-1].startswith("__")
        and target.rsplit(".", 1)[0] != name
        and target.startswith("layerscan")
    )
    assert private == []


@pytest.mark.parametrize(
    "command", sorted(n for n in MODULES if n.startswith("layerscan.cli.commands."))
)
def test_commands_never_import_each_other(command):
    others = tuple(n for n in MODULES if n.startswith("layerscan.cli.commands.") and n != command)
    assert sorted(t for t in MODULES[command] if t.startswith(others)) == []


def test_the_wheel_lists_every_package():
    """A non-editable install carries every folder that holds an `__init__.py`."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {package: folder for folder, package in PACKAGES.items()}
    wanted = {
        ".".join((package, *init.parent.relative_to(ROOT / folder).parts))
        for folder, package in PACKAGES.items()
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert wanted <= set(setuptools["packages"])
