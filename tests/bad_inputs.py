"""The bad-input matrix: command lines that must fail cleanly (or succeed) without losing files.

One table serves the test suite (in-process, `run_in_process`) and
`scripts/bad_input_matrix.py` (one subprocess per case, `run_subprocess`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pickle
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
MARKER = "UNPICKLED"
"""A file that a pickle payload creates if anything ever unpickles it."""
QUICK = (
    "--resolution",
    "160x120",
    "--frames-per-layer",
    "1",
    "--hold",
    "0",
    "--orbit",
    "0",
    "--no-progress",
    "--no-overlays",
)
"""Render options that make a movie of a synthetic scan in well under a second."""
TRAIN = (
    "train",
    "--config",
    "tiny",
    "--corpus",
    "corpus.txt",
    "--set",
    "data.language_model={llama}",
    "--no-progress",
    "--cache-dir",
    "{cache}",
)
"""A tiny training run; every case with it fails before any training starts."""


@dataclass(frozen=True)
class Case:
    """One command line, what to put in its folder first, and what must come out."""

    name: str
    argv: tuple[str, ...]
    """Arguments after `layerscan`; {llama}, {ae}, {cache} are filled in."""
    exit_code: int = 2
    message: str = ""
    """Text the one-line error must contain (exit code 2), or the output must contain."""
    setup: Callable[[Path], None] | None = None
    """Makes files in the case's folder (which already holds x.scan, d.scan, corpus.txt)."""
    replaces: tuple[str, ...] = ()
    """Files the command may rewrite (a file output onto an existing file)."""
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment; "{work}" is the case's folder."""
    owner: str = ""
    """Non-empty: a known gap that another change owns (the test is xfail, not strict)."""


class Result(NamedTuple):
    """What a case did."""

    exit_code: int
    stderr: str
    before: dict[str, str]
    after: dict[str, str]

    @property
    def lost(self) -> list[str]:
        """Entries that were there before and are gone (or changed) after."""
        return sorted(p for p, digest in self.before.items() if self.after.get(p) != digest)

    @property
    def partials(self) -> list[str]:
        return sorted(p for p in self.after if ".partial" in Path(p).name)


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: content digest, "dir", or the kind of a special file (a fifo, socket or
    device is never read) } of everything under `folder`."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_symlink() and not path.exists():
            entries[rel] = "broken link"
        elif path.is_dir():
            entries[rel] = "dir"
        elif path.is_file():
            entries[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
        else:
            entries[rel] = f"special {stat.S_IFMT(path.stat().st_mode)}"
    return entries


# ---- setups -------------------------------------------------------------------------------


def _file(name: str, text: str = "precious") -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text(text)

    return setup


def _folder(name: str, manifest: bool = False, extra: bool = False) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        folder = work / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "keep.txt").write_text("mine")
        if manifest:
            names = ["keep.txt"]
            (folder / ".layerscan-output.json").write_text(json.dumps({"entries": names}))
        if extra:
            (folder / "notes.txt").write_text("also mine")

    return setup


def _both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        for step in setups:
            step(work)

    return setup


class _Payload:
    """Unpickling this creates `path` (MARKER in the case's folder)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _pickle_file(name: str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(pickle.dumps({"state_dict": _Payload(work / MARKER)}))

    return setup


def _input_in_sub(work: Path) -> None:
    (work / "sub").mkdir()
    shutil.copy(work / "x.scan", work / "sub" / "x.scan")


def _copy_of(source_key: str, name: str, edit: Callable[[Path], None]):
    """Copies a prepared folder ({llama} or {ae}) into the case's folder and edits it."""

    def setup(work: Path) -> None:
        source = Path(os.environ["LAYERSCAN_MATRIX_" + source_key.upper()])
        shutil.copytree(source, work / name)
        edit(work / name)

    return setup


def _wider(folder: Path) -> None:
    """The model's config says hidden size 64 (its weights are never loaded)."""
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_size": 64}))


def _adapter_for(base: str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / "adapter").mkdir()
        (work / "adapter" / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "base_model_name_or_path": base})
        )

    return setup


def _only_config(folder: Path) -> None:
    for path in folder.iterdir():
        if path.name != "config.json":
            path.unlink()


def _pickled_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(folder.parent / MARKER)))


def _hidden_768(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["d_model"] = 768
    (folder / "config.json").write_text(json.dumps(config))


def _pickled_autoencoder(folder: Path) -> None:
    (folder / "weights.safetensors").write_bytes(pickle.dumps(_Payload(folder.parent / MARKER)))


# ---- the table ----------------------------------------------------------------------------

OUTPUT_KINDS = {
    # kind: (arguments before -o, output name, whether the output is a folder)
    "render-mp4": (("render", "x.scan", *QUICK), "out.mp4", False),
    "render-gif": (("render", "x.scan", *QUICK), "out.gif", False),
    "render-png": (("render", "x.scan", *QUICK), "out.png", False),
    "render-frames": (("render", "x.scan", *QUICK), "frames", True),
    "diff-scan": (("diff", "d.scan"), "again.scan", False),
    "export-html": (("export", "x.scan"), "page.html", False),
    "export-vtp": (("export", "x.scan"), "meshes", True),
    "scan": (
        (
            "scan",
            "the fox",
            "--model",
            "{llama}",
            "--autoencoder",
            "{ae}",
            "--epochs",
            "5",
            "--surface",
            "none",
            "--top-k",
            "2",
        ),
        "out.scan",
        False,
    ),
    "capture": (
        ("capture", "the fox", "--model", "{llama}", "--top-k", "2"),
        "cap.safetensors",
        False,
    ),
    "train-output": ((*TRAIN, "--output"), "run", True),
    "train-export": ((*TRAIN, "--output", "run", "--export"), "artifact", True),
}


def _output_cases() -> list[Case]:
    cases = []
    for kind, (argv, name, folder) in OUTPUT_KINDS.items():
        training = kind.startswith("train")
        cases += [
            Case(
                f"{kind}: onto an existing file",
                (*argv, *(() if training else ("-o",)), name),
                exit_code=2 if folder else 0,
                message="is a file" if folder else "",
                setup=_file(name),
                replaces=() if folder else (name,),
            ),
            Case(
                f"{kind}: onto a non-empty folder",
                (*argv, *(() if training else ("-o",)), name),
                message="is a folder" if not folder else "not empty",
                setup=_folder(name),
            ),
            Case(
                f"{kind}: onto the current folder",
                (*argv, *(() if training else ("-o",)), "."),
                message="the current folder",
            ),
            Case(
                f"{kind}: parent is a file",
                (*argv, *(() if training else ("-o",)), f"blocker/{name}"),
                message="blocker is a file",
                setup=_file("blocker"),
            ),
        ]
    return cases


CASES: list[Case] = [
    *_output_cases(),
    # folders: only layerscan's own, only with --overwrite, never with someone else's files
    Case(
        "export into an empty folder",
        ("export", "x.scan", "-o", "empty"),
        exit_code=0,
        setup=lambda work: (work / "empty").mkdir(),
    ),
    Case(
        "export over a layerscan folder without --overwrite",
        ("export", "x.scan", "-o", "m"),
        message="--overwrite",
        setup=_folder("m", manifest=True),
    ),
    Case(
        "export over a layerscan folder with --overwrite",
        ("export", "x.scan", "-o", "m", "--overwrite"),
        exit_code=0,
        setup=_folder("m", manifest=True),
        replaces=("m/keep.txt", "m/.layerscan-output.json"),
    ),
    Case(
        "export over a layerscan folder holding a foreign file",
        ("export", "x.scan", "-o", "m", "--overwrite"),
        message="notes.txt",
        setup=_folder("m", manifest=True, extra=True),
    ),
    Case(
        "render frames over a folder with --overwrite but no manifest",
        ("render", "x.scan", *QUICK, "-o", "frames", "--overwrite"),
        message="layerscan did not write it",
        setup=_folder("frames"),
    ),
    Case(
        "export into the folder holding the input",
        ("export", "sub/x.scan", "-o", "sub"),
        message="holds the input",
        setup=_input_in_sub,
    ),
    Case(
        "export -o the home folder",
        ("export", "x.scan", "-o", "~"),
        message="home folder",
        setup=lambda work: (work / "home").mkdir(),
        env={"HOME": "{work}/home"},
    ),
    Case(
        "export -o the filesystem root", ("export", "x.scan", "-o", "/"), message="filesystem root"
    ),
    Case(
        "export -o a folder above the current one",
        ("export", "x.scan", "-o", ".."),
        message="holds the current folder",
    ),
    Case(
        "render under /proc",
        ("render", "x.scan", *QUICK, "-o", "/proc/x.mp4"),
        message="cannot write in /proc",
    ),
    Case(
        "scan under /proc (before the model loads)",
        ("scan", "the fox", "--model", "{llama}", "-o", "/proc/layerscan/x.scan"),
        message="cannot write in /proc",
    ),
    Case(
        "scan -o a folder named .scan",
        ("scan", "the fox", "--model", "{llama}", "-o", "dir.scan"),
        message="is a folder",
        setup=_folder("dir.scan"),
    ),
    Case(
        "render --save-scan onto a folder",
        ("render", "x.scan", *QUICK, "-o", "a.mp4", "--save-scan", "kept"),
        message="--save-scan kept: is a folder",
        setup=_folder("kept"),
    ),
    Case(
        "train --output over a foreign folder (no --resume)",
        (*TRAIN, "--output", "mine"),
        message="not a layerscan training run",
        setup=_folder("mine"),
    ),
    # inputs that must be refused, never run
    Case(
        "pickled model weights (.bin) are never unpickled",
        ("capture", "hi", "--model", "pickled"),
        message="safetensors",
        setup=_copy_of("llama", "pickled", _pickled_weights),
    ),
    Case(
        "pickled last.ckpt is never unpickled",
        (*TRAIN, "--output", "run", "--resume"),
        message="corrupt",
        setup=_pickle_file("run/checkpoints/last.ckpt"),
    ),
    Case(
        "pickled autoencoder weights are never unpickled",
        ("scan", "hi", "--model", "{llama}", "--autoencoder", "bad-ae", "-o", "x2.scan"),
        message="corrupt",
        setup=_copy_of("ae", "bad-ae", _pickled_autoencoder),
    ),
    Case(
        "autoencoder whose config says another hidden size",
        ("scan", "hi", "--model", "{llama}", "--autoencoder", "ae768", "-o", "x2.scan"),
        message="hidden 768 vs 32",
        setup=_copy_of("ae", "ae768", _hidden_768),
    ),
    Case(
        "model folder with only config.json",
        ("capture", "hi", "--model", "cfg-only"),
        message="no tokenizer files",
        setup=_copy_of("llama", "cfg-only", _only_config),
    ),
    Case(
        "model folder without config.json",
        ("capture", "hi", "--model", "blocker-dir"),
        message="has no config.json",
        setup=_folder("blocker-dir"),
    ),
    Case(
        "model folder that does not exist",
        ("capture", "hi", "--model", "./nope"),
        message="does not exist",
    ),
    Case(
        "corrupt scan file",
        ("render", "bad.scan", *QUICK, "-o", "a.mp4"),
        message="corrupt",
        setup=_file("bad.scan", "not a scan"),
    ),
    Case(
        "a diff scan given to render",
        ("render", "d.scan", *QUICK, "-o", "a.mp4"),
        message="holds a diff",
    ),
    Case(
        "unknown output type", ("render", "x.scan", "-o", "out.avi"), message="unknown output type"
    ),
    Case(
        "bad --resolution",
        ("render", "x.scan", "--resolution", "big", "-o", "a.mp4"),
        message="--resolution: 'big' is not a size",
    ),
    Case(
        "odd video size",
        ("render", "x.scan", *QUICK, "--resolution", "161x120", "-o", "a.mp4"),
        message="even width",
    ),
    Case("empty prompt", ("capture", "  ", "--model", "{llama}"), message="prompt is empty"),
    Case(
        "prompt longer than the context",
        ("capture", "one two three " * 40, "--model", "{llama}"),
        message="exceed the context",
    ),
    Case(
        "--generate on an encoder needs a causal model",
        ("capture", "hi", "--model", "{bert}", "--generate", "2"),
        message="not a causal LM",
    ),
    Case(
        "unknown config key",
        ("train", "--config", "tiny", "--set", "model.bogus=1"),
        message="unknown key",
    ),
    Case(
        "a scan file that does not exist",
        ("export", "missing.scan", "-o", "a.html"),
        message="no such file",
    ),
    # flag values: checked in the options dataclasses' __post_init__, before any work
    Case(
        "--layer nan",
        ("render", "x.scan", *QUICK, "--layer", "nan", "-o", "s.png"),
        message="--layer",
    ),
    Case(
        "--layer 999 is clamped to the last layer, with a note",
        ("render", "x.scan", *QUICK, "--layer", "999", "-o", "s.png"),
        exit_code=0,
    ),
    Case(
        "--hold -3", ("render", "x.scan", *QUICK, "--hold", "-3", "-o", "a.mp4"), message="--hold"
    ),
    Case("--top-k -1", ("capture", "hi", "--model", "{llama}", "--top-k", "-1"), message="--top-k"),
    Case(
        "--top-k 100000",
        ("capture", "hi", "--model", "{llama}", "--top-k", "100000"),
        message="from 0 to 1000",
    ),
    Case(
        "--top-k 500",
        ("capture", "hi", "--model", "{llama}", "--top-k", "500"),
        message="exceeds the vocabulary",
    ),
    Case(
        "--temperature -1",
        (
            "capture",
            "hi",
            "--model",
            "{llama}",
            "--generate",
            "1",
            "--sample",
            "--temperature",
            "-1",
        ),
        message="--temperature",
    ),
    Case("export -o out.xyz", ("export", "x.scan", "-o", "out.xyz"), message="unknown export type"),
    # model-vs-model: refused from configs, before any weights load
    Case(
        "diff --model-b of another hidden size",
        ("diff", "the fox", "--model", "{llama}", "--model-b", "wide", "-o", "m.scan"),
        message="differ in shape",
        setup=_copy_of("llama", "wide", _wider),
    ),
    Case(
        "diff --model-b an adapter for another base model",
        ("diff", "the fox", "--model", "{llama}", "--model-b", "adapter", "-o", "m.scan"),
        message="trained on someone/other-model",
        setup=_adapter_for("someone/other-model"),
    ),
    Case(
        "diff --adapter a folder without adapter_config.json",
        ("diff", "the fox", "--model", "{llama}", "--adapter", "sub", "-o", "m.scan"),
        message="adapter_config.json",
        setup=_folder("sub"),
    ),
    Case(
        "heatmap --token first",
        ("heatmap", "hi", "--token", "first", "-o", "h.png"),
        message="invalid choice",
    ),
    Case("heatmap -o h.jpg", ("heatmap", "hi", "-o", "h.jpg"), message="written as .png"),
]


# ---- running a case -------------------------------------------------------------------------


def prepare_inputs(root: Path) -> dict[str, str]:
    """Synthetic scans, a tiny Llama and BERT, a tiny autoencoder and a corpus under `root`."""
    from layerscan.autoencoder.artifact import export_autoencoder
    from layerscan.autoencoder.capture.loading import load_model
    from tests.synthetic_scan import make_diff, make_scan
    from tests.test_pipeline import PROMPT, autoencoder_for
    from tests.tiny_models import save_tiny_model

    root.mkdir(parents=True, exist_ok=True)
    make_scan(n_layers=3, n_particles=64).save(root / "x.scan")
    make_diff(n_layers=3, n_particles=64).save(root / "d.scan")
    (root / "corpus.txt").write_text("the quick brown fox\none two three four\n")
    llama = save_tiny_model("llama", root / "llama")
    bert = save_tiny_model("bert", root / "bert")
    trained = autoencoder_for(load_model(str(llama), device="cpu"), [PROMPT])
    ae = export_autoencoder(trained.model, trained.config, root / "ae")
    return {
        "llama": str(llama),
        "bert": str(bert),
        "ae": str(ae),
        "cache": str(root / "cache"),
        "inputs": str(root),
    }


def prepare_case(case: Case, work: Path, inputs: dict[str, str]) -> tuple[list[str], dict]:
    """Fill the case's folder; returns the argv and the environment changes."""
    work.mkdir(parents=True)
    for name in ("x.scan", "d.scan", "corpus.txt"):
        shutil.copy(Path(inputs["inputs"]) / name, work / name)
    env = {f"LAYERSCAN_MATRIX_{key.upper()}": value for key, value in inputs.items()}
    os.environ.update(env)
    if case.setup is not None:
        case.setup(work)
    argv = [arg.format(**inputs) if "{" in arg else arg for arg in case.argv]
    env.update({key: value.format(work=work) for key, value in case.env.items()})
    return argv, env


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("layerscan:")]
    return lines[-1] if lines else (stderr.strip().splitlines() or [""])[-1]


def run_in_process(case: Case, work: Path, inputs: dict[str, str]) -> Result:
    """Run a case through `layerscan.cli.main` in this process (chdir into its folder)."""
    from layerscan.cli.main import main

    argv, env = prepare_case(case, work, inputs)
    before = snapshot(work)
    err = io.StringIO()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with (
            contextlib.chdir(work),
            contextlib.redirect_stderr(err),
            contextlib.redirect_stdout(io.StringIO()),
        ):
            code = main(argv)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Result(code, err.getvalue(), before, snapshot(work))


def run_subprocess(case: Case, work: Path, inputs: dict[str, str], timeout: float = 300) -> Result:
    """Run a case as `python -m layerscan ...` in its own folder."""
    argv, env = prepare_case(case, work, inputs)
    before = snapshot(work)
    full_env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **env)
    proc = subprocess.run(
        [sys.executable, "-m", "layerscan", *argv],
        cwd=work,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stderr, before, snapshot(work))


def problems(case: Case, result: Result) -> list[str]:
    """Every way `result` breaks the case's promise (empty: it kept it)."""
    found = []
    if result.exit_code != case.exit_code:
        found.append(f"exit {result.exit_code}, expected {case.exit_code}")
    line = _one_line(result.stderr)
    if case.exit_code == 2:
        if case.message and case.message not in line:
            found.append(f"message lacks {case.message!r}")
        if not line.startswith("layerscan: error:"):
            found.append("no one-line error")
        if "Traceback" in result.stderr:
            found.append("traceback")
        words = line.removeprefix("layerscan: error: ").split(":")[0]
        if words.endswith(("Error", "Exception")):
            found.append(f"generic exception text ({words})")
    lost = [p for p in result.lost if p not in case.replaces]
    if lost:
        found.append(f"lost {lost[:3]}")
    if result.partials:
        found.append(f"left partial {result.partials[:2]}")
    if MARKER in result.after:
        found.append("a pickle payload ran")
    return found


def start_long_render(folder: Path, source: list[str], env: dict | None = None):
    """`layerscan render SOURCE -o out.mp4` of many frames in `folder`, started and returned
    once its partial movie (`.out.PID...`, whichever process writes it) has data."""
    import os
    import subprocess
    import sys
    import time

    import pytest

    proc = subprocess.Popen(
        [sys.executable, "-m", "layerscan", "render", *source, "-o", "out.mp4"]
        + ["--frames-per-layer", "600", "--resolution", "320x240", "--no-progress"],
        cwd=folder,
        env=dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", **(env or {})),
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        partials = [p for p in folder.iterdir() if p.name.startswith(".out.")]
        if partials and partials[0].stat().st_size > 0:
            return proc
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"the render never wrote a partial file: {proc.communicate()[1][-800:]}")
