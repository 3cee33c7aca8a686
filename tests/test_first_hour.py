"""A newcomer's first hour (issue 12): flags where users type them, errors before expensive
work, notices before long work, and a `train` that never replaces what it was not asked to."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import pytest
import yaml

from layerscan.cli.main import build_parser, main
from tests.test_training import LINES

SMALL_CORPUS = "\n".join(LINES) + "\n"
SHORT_LINES = "one\ntwo\nsix\nseven\nnine\nten\nthe dog\n"
"""Documents no longer than the tiny config stores exactly (64 // ceil(32 / 4) = 8 tokens; the
tiny tokenizer spells words out letter by letter)."""


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A tiny Llama, autoencoders for it (96 and 32 particles) and two small corpora."""
    from layerscan.autoencoder.artifact import export_autoencoder
    from layerscan.autoencoder.capture.loading import load_model
    from layerscan.autoencoder.config import ModelConfig
    from tests.test_pipeline import PROMPT, autoencoder_for
    from tests.tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("first-hour")
    llama = save_tiny_model("llama", root / "llama")
    loaded = load_model(str(llama), device="cpu")
    trained = autoencoder_for(loaded, [PROMPT])
    few = autoencoder_for(
        loaded,
        [PROMPT],
        ModelConfig(n_particles=32, d_particle=4, max_len=16, d_pos=8, n_anchors=2, d_hidden=16),
    )
    export_autoencoder(few.model, few.config, root / "ae32")
    (root / "corpus.txt").write_text(SMALL_CORPUS, encoding="utf-8")
    (root / "short.txt").write_text(SHORT_LINES, encoding="utf-8")
    return {
        "llama": llama,
        "ae": export_autoencoder(trained.model, trained.config, root / "ae"),
        "ae32": root / "ae32",
        "corpus": root / "corpus.txt",
        "short": root / "short.txt",
        "root": root,
    }


COMMAND_LINES = {
    "info": [],
    "capture": ["hi"],
    "scan": ["hi"],
    "render": ["hi"],
    "diff": ["a", "b"],
    "view": ["hi"],
    "export": ["hi", "-o", "x.html"],
    "train": [],
    "eval": [],
    "heatmap": ["hi", "-o", "x.png"],
    "attention": ["hi", "-o", "x.png"],
    "components": ["hi", "-o", "x.png"],
}
"""Every subcommand, with the arguments it needs to parse."""


def test_every_command_has_a_case():
    from layerscan.cli.main import COMMAND_MODULES

    assert set(COMMAND_LINES) == set(COMMAND_MODULES)


@pytest.mark.parametrize("command", list(COMMAND_LINES))
def test_common_flags_parse_after_every_subcommand(command):
    """docs/commands.md: every command takes --model, --device, --dtype and --debug, after it."""
    from layerscan.autoencoder.capture.loading import ModelOptions
    from layerscan.cli.options import given_options

    parser = build_parser()
    args = parser.parse_args(
        [
            command,
            *COMMAND_LINES[command],
            "--debug",
            "--model",
            "m",
            "--device",
            "cpu",
            "--dtype",
            "float32",
        ]
    )
    assert args.debug is True
    assert given_options(ModelOptions, args) == {"model": "m", "device": "cpu", "dtype": "float32"}
    assert parser.parse_args(["--debug", command, *COMMAND_LINES[command]]).debug is True
    assert parser.parse_args([command, *COMMAND_LINES[command]]).debug is False


def test_debug_after_the_command_prints_the_traceback(capsys, tmp_path):
    assert main(["scan", "hi", "-o", str(tmp_path / "x.txt"), "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "end in .scan" in err


def _forbid(monkeypatch, module: str, name: str) -> None:
    """Make `module.name` fail the test if anything calls it."""
    import importlib

    def forbidden(*args, **kwargs):
        raise AssertionError(f"{name} ran, but the error should have come before it")

    monkeypatch.setattr(importlib.import_module(module), name, forbidden)


def _long_prompt(llama: Path, low: int, high: int) -> str:
    """A prompt of more than `low` and at most `high` tokens for the tiny Llama's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(llama))
    words = []
    while len(tokenizer(" ".join(words))["input_ids"]) <= low:
        words.append(["alpha", "beta", "gamma", "delta"][len(words) % 4])
    prompt = " ".join(words)
    assert low < len(tokenizer(prompt)["input_ids"]) <= high
    return prompt


def test_a_prompt_past_a_limit_fails_before_the_forward_pass(inputs, monkeypatch, capsys, tmp_path):
    """The autoencoder's particle count (one particle a token) and the model's context are
    checked right after tokenizing."""
    prompt = _long_prompt(inputs["llama"], 32, 60)  # within the model's context of 64
    _forbid(monkeypatch, "layerscan.autoencoder.capture.hidden_states", "_forward_states")
    base = ["--model", str(inputs["llama"]), "--autoencoder", str(inputs["ae32"])]
    assert main(["scan", prompt, "-o", str(tmp_path / "x.scan"), *base]) == 2
    err = capsys.readouterr().err
    assert "exceed what the autoencoder holds, one particle a token (32 tokens)" in err
    assert "generate" not in err
    assert main(["diff", "short", prompt, "-o", str(tmp_path / "d.scan"), *base]) == 2
    assert "one particle a token (32 tokens)" in capsys.readouterr().err
    too_long = _long_prompt(inputs["llama"], 64, 80)  # past the context; 96 particles fit it
    base = ["--model", str(inputs["llama"]), "--autoencoder", str(inputs["ae"])]
    assert main(["scan", too_long, "-o", str(tmp_path / "x.scan"), *base]) == 2
    assert "exceed the context of" in capsys.readouterr().err
    assert (
        main(["scan", "a short prompt", "--generate", "60", "-o", str(tmp_path / "x.scan"), *base])
        == 2
    )
    assert "to generate (--generate)" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_missing_autoencoder_fails_before_the_model_loads(inputs, monkeypatch, capsys, tmp_path):
    _forbid(monkeypatch, "layerscan.autoencoder.capture.loading", "load_model")
    _forbid(monkeypatch, "layerscan.autoencoder.capture.loading", "model_config")
    missing = str(tmp_path / "no-such-ae")
    for argv in (
        ["scan", "hi", "-o", str(tmp_path / "x.scan")],
        ["render", "hi", "-o", str(tmp_path / "x.mp4")],
        ["diff", "a", "b", "-o", str(tmp_path / "d.scan")],
        ["eval"],
    ):
        assert main([*argv, "--model", str(inputs["llama"]), "--autoencoder", missing]) == 2
        assert "not an autoencoder folder" in capsys.readouterr().err


def test_scan_without_a_prompt_says_so(tmp_path, capsys):
    assert (
        main(["scan", "-o", str(tmp_path / "x.scan"), "--autoencoder", str(tmp_path / "missing")])
        == 2
    )
    assert "no prompt given: scanning the default prompt" in capsys.readouterr().err


def test_eval_says_what_it_is_about_to_do(inputs, capsys, tmp_path):
    assert (
        main(
            [
                "eval",
                "--autoencoder",
                str(inputs["ae"]),
                "--corpus",
                str(inputs["corpus"]),
                "--model",
                str(inputs["llama"]),
                "--device",
                "cpu",
                "--dtype",
                "float32",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert f"evaluating {inputs['ae']} on every window of {inputs['corpus']}" in captured.err
    assert "extracting the hidden states of" in captured.err  # before it starts
    assert "R²" in captured.out


def _write_tiny_config(inputs: dict[str, Path], folder: Path, corpus: str) -> Path:
    """configs/tiny.yaml made complete (corpus, model, output, export), so it runs as is."""
    import layerscan.configs as configs

    values = yaml.safe_load((Path(configs.__file__).parent / "tiny.yaml").read_text())
    values["data"].update(corpus=corpus, language_model=str(inputs["llama"]))
    values.update(output=str(folder / "run"), export=str(folder / "packaged"))
    path = folder / "tiny-full.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path


def _train_config(*argv: str):
    from layerscan.cli.commands.train import config_from_args

    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_only_the_exact_config_exports_to_its_export_folder(inputs, tmp_path, capsys):
    config_file = str(_write_tiny_config(inputs, tmp_path, str(inputs["corpus"])))
    assert _train_config("--config", config_file).export == str(tmp_path / "packaged")
    assert _train_config(
        "--config", config_file, "--no-progress", "--resume", "--cache-dir", "c"
    ).export == str(tmp_path / "packaged")
    assert _train_config("--config", config_file, "--device", "cpu").export == str(
        tmp_path / "packaged"
    )  # the value the config has: still the exact run
    for changed in (
        ["--corpus", "mine.txt"],
        ["--set", "train.lr=0.5"],
        ["--output", "o"],
        ["--model", "other"],
        ["--dtype", "bfloat16"],
        ["--precision", "bf16-mixed"],
    ):
        assert _train_config("--config", config_file, *changed).export == "", changed
        assert "not to the config's export folder" in capsys.readouterr().err
    assert (
        _train_config("--config", config_file, "--corpus", "m.txt", "--export", "e").export == "e"
    )
    assert (
        _train_config("--config", config_file, "--set", "export=e2", "--set", "train.lr=0.5").export
        == "e2"
    )
    config = _train_config(
        "--config",
        config_file,
        "--model",
        "m",
        "--device",
        "cpu",
        "--dtype",
        "bfloat16",
        "--trust-remote-code",
    )
    assert (
        config.data.language_model,
        config.data.device,
        config.data.dtype,
        config.data.trust_remote_code,
    ) == ("m", "cpu", "bfloat16", True)


def test_train_with_another_corpus_keeps_the_packaged_folder(inputs, tmp_path, capfd):
    """A tiny run with an override exports under --output and prints where; the export folder
    the config names is never touched; Lightning's tips stay out of the output."""
    config_file = _write_tiny_config(inputs, tmp_path, "default")
    out = tmp_path / "mine"
    assert (
        main(
            [
                "train",
                "--config",
                str(config_file),
                "--corpus",
                str(inputs["corpus"]),
                "--output",
                str(out),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--set",
                "train.progress_bar=true",
            ]
        )
        == 0
    )
    captured = capfd.readouterr()
    assert not (tmp_path / "packaged").exists()
    assert (out / "artifact" / "config.json").is_file()
    assert f"autoencoder written to {out / 'artifact'}" in captured.out
    text = captured.out + captured.err
    assert "litlogger" not in text and "limit_train_batches" not in text
    assert "val/r2" in text  # the metrics stay


def test_a_corpus_stored_exactly_gets_a_one_line_warning(inputs, tmp_path):
    from layerscan.autoencoder.config import load_config
    from layerscan.autoencoder.datamodule import HiddenStateDataModule
    from layerscan.core.errors import Caution

    config = load_config(
        "tiny", [f"data.corpus={inputs['short']}", f"data.language_model={inputs['llama']}"]
    )
    assert config.model.exact_len(32) == 8  # 64 particles // ceil(32 / 4) ranks
    with pytest.warns(Caution, match=r"longest window has \d tokens, and up to 8 .* exactly"):
        HiddenStateDataModule(config, tmp_path / "cache", progress=False).setup()
    config = load_config(
        "tiny", [f"data.corpus={inputs['corpus']}", f"data.language_model={inputs['llama']}"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", Caution)
        HiddenStateDataModule(config, tmp_path / "cache", progress=False).setup()


def test_the_warning_is_one_line_from_the_command_line(inputs, tmp_path, capsys):
    assert (
        main(
            [
                "train",
                "--config",
                "tiny",
                "--corpus",
                str(inputs["short"]),
                "--model",
                str(inputs["llama"]),
                "--output",
                str(tmp_path / "run"),
                "--cache-dir",
                str(tmp_path / "cache"),
                "--no-progress",
                "--set",
                "train.max_epochs=1",
            ]
        )
        == 0
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert len(lines) == 1 and lines[0].startswith("layerscan: warning: corpus ")


def test_given_options_reads_only_typed_flags():
    from layerscan.autoencoder.capture.loading import ModelOptions
    from layerscan.cli.options import add_options, given_options

    parser = argparse.ArgumentParser()
    add_options(parser, ModelOptions, "model", show_defaults=False)
    assert given_options(ModelOptions, parser.parse_args([])) == {}
    assert given_options(ModelOptions, parser.parse_args(["--dtype", "float16"])) == {
        "dtype": "float16"
    }
    assert "(default:" not in parser.format_help()


def test_a_self_diff_says_the_prompts_do_not_diverge(inputs, tmp_path, capsys):
    base = [
        "--model",
        str(inputs["llama"]),
        "--autoencoder",
        str(inputs["ae"]),
        "--epochs",
        "5",
        "--surface",
        "none",
    ]
    assert main(["diff", "the fox", "the fox", "-o", str(tmp_path / "same.scan"), *base]) == 0
    assert "the prompts do not diverge" in capsys.readouterr().err
    assert main(["diff", "the fox", "the dog", "-o", str(tmp_path / "other.scan"), *base]) == 0
    assert "divergence peaks at" in capsys.readouterr().err


def test_a_prompt_longer_than_a_file_name_is_a_prompt(tmp_path):
    """A prompt of more than 255 characters cannot name a file (ENAMETOOLONG): the commands
    read it as a prompt, and the output checks pass it by, never raising an OSError."""
    from layerscan.cli.common import check_outputs, is_scan_file, names_path

    prompt = "The keeper counted the ships every evening " * 10  # 430 characters, no "/"
    assert not is_scan_file(prompt) and not names_path(prompt)
    check_outputs([("-o", str(tmp_path / "d.scan"), False)], inputs=[prompt, "short"])
