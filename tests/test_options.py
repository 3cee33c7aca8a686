"""Options defined once: flags come from dataclass fields; bad values fail early, in one line."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest

from layerscan.cli.main import main
from layerscan.cli.options import add_options, field_docs, options_from_args
from layerscan.core.errors import LayerscanError
from layerscan.geometry.scan_options import ScanOptions
from layerscan.geometry.scene.scene import SceneOptions
from tests.synthetic_scan import make_scan


@dataclass
class Inner:
    level: float = 0.2
    """How high."""


@dataclass
class Outer:
    mode: Literal["a", "b"] = "a"
    """Which mode."""
    count: int | None = field(default=None, metadata={"flag": "n"})
    """How many; None: as many as there are."""
    loud: bool = False
    """Shout (100% sure)."""
    hidden: str = field(default="x", metadata={"cli": False})
    """Set by the program."""
    inner: Inner = field(default_factory=Inner)
    """Nested options."""


def parse(*argv: str) -> Outer:
    parser = argparse.ArgumentParser()
    add_options(parser, Outer)
    return options_from_args(Outer, parser.parse_args(list(argv)))


def test_flags_defaults_and_help_come_from_the_dataclass():
    assert parse() == Outer()
    assert parse("--mode", "b", "--n", "3", "--loud", "--inner-level", "0.5") == Outer(
        mode="b", count=3, loud=True, inner=Inner(level=0.5)
    )
    assert parse("--loud", "--no-loud").loud is False
    with pytest.raises(SystemExit):
        parse("--mode", "c")  # Literal → choices
    with pytest.raises(SystemExit):
        parse("--hidden", "y")  # not on the command line
    parser = argparse.ArgumentParser()
    add_options(parser, Outer)
    text = parser.format_help()
    assert "Which mode. (default: a)" in text and "100% sure" in text
    assert field_docs(Outer)["count"] == "How many; None: as many as there are."


def test_every_option_field_has_help():
    for cls in (ScanOptions, SceneOptions):
        docs = field_docs(cls)
        assert all(docs.get(f.name) for f in dataclasses.fields(cls)), cls


def test_neighbors_sets_the_umap_graph_and_line_neighbors_the_lines():
    parser = argparse.ArgumentParser()
    add_options(parser, ScanOptions)
    options = options_from_args(
        ScanOptions,
        parser.parse_args(
            [
                "--neighbors",
                "7",
                "--line-neighbors",
                "4",
                "--surface",
                "alpha",
                "--surface-quantile",
                "0.3",
            ]
        ),
    )
    assert options.n_neighbors == 7 and options.k_neighbors == 4
    assert options.surface.method == "alpha" and options.surface.level_quantile == 0.3


@pytest.mark.parametrize(
    "argv, message",
    [
        (["render", "--layer", "nan", "-o", "x.png"], "--layer"),
        (["render", "--hold", "-3"], "--hold"),
        (["render", "--top-k", "-1"], "--top-k"),
        (["render", "--temperature", "-1"], "--temperature"),
        (["scan", "--generate", "-2"], "--generate"),
        (["render", "--surface-opacity", "2"], "opacity"),
        (["view", "--fps", "0"], "--fps"),
        (["export", "x.scan", "-o", "out.xyz"], "unknown export type"),
        (["diff", "a", "b", "--token-time"], "token-time"),
    ],
)
def test_bad_values_are_one_line_errors_before_any_work(
    argv, message, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "no-model")  # any model work would fail with another message
    assert main([*argv, "--model", missing]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_top_k_beyond_the_vocabulary_is_an_error(tiny_model_dirs, capsys):
    assert main(["capture", "hi", "--model", str(tiny_model_dirs["gpt2"]), "--top-k", "500"]) == 2
    assert "exceeds the vocabulary" in capsys.readouterr().err


def test_a_layer_past_the_last_is_clamped_with_a_notice(tmp_path, capsys):
    make_scan(n_layers=3, n_particles=64).save(tmp_path / "s.scan")
    out = tmp_path / "still.png"
    assert (
        main(
            [
                "render",
                str(tmp_path / "s.scan"),
                "-o",
                str(out),
                "--layer",
                "999",
                "--resolution",
                "160x120",
            ]
        )
        == 0
    )
    assert "showing layer 3" in capsys.readouterr().err and out.is_file()


def test_option_objects_are_never_changed():
    with pytest.raises(LayerscanError, match="resolution"):
        SceneOptions(window_size=(10, 10))
    options = SceneOptions(window_size=(160, 120))
    from layerscan.geometry.scene.scene import Scene

    scene = Scene(make_scan(n_layers=2, n_particles=32), options)
    try:
        scene.toggle("lines")
        assert options == SceneOptions(window_size=(160, 120))  # the caller's, untouched
        assert scene.options.show_lines and scene.options.surface_opacity == 0.2
    finally:
        scene.close()
