"""Hostile files: real scan, capture and autoencoder files edited to lie (huge sizes, indices out
of range, wrong types and dtypes), random mutations of them for fuzzing, and the bad-input
matrix cases (tests/bad_inputs.py) that use them, with device, fifo and socket outputs."""

from __future__ import annotations

import json
import os
import random
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from tests.bad_inputs import QUICK, Case, _copy_of

FORMAT_KEY = "layerscan"

# ---- reading and writing the container without layerscan's checks -------------------------


def read_container(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays and the layerscan JSON header of a file layerscan wrote."""
    from safetensors import safe_open
    from safetensors.numpy import load_file

    with safe_open(str(path), framework="numpy") as handle:
        header = json.loads(handle.metadata()[FORMAT_KEY])
    return load_file(str(path)), header


def write_container(path: Path, arrays: dict[str, np.ndarray], header: object) -> None:
    """Write arrays and any header (even one that is no object) as safetensors, unchecked."""
    from safetensors.numpy import save_file

    arrays = {name: np.ascontiguousarray(value) for name, value in arrays.items()}
    save_file(arrays, str(path), metadata={FORMAT_KEY: json.dumps(header)})


Edit = Callable[[dict, dict], object]
"""Changes (arrays, header) in place; may return a `Replace` with a whole new header."""


class Replace(NamedTuple):
    """What an edit returns to replace the whole header."""

    header: object


def edited(source: Path, target: Path, edit: Edit) -> Path:
    """`target`: a copy of the container `source` after `edit`."""
    arrays, header = read_container(source)
    replaced = edit(arrays, header)
    write_container(target, arrays, replaced.header if isinstance(replaced, Replace) else header)
    return target


def _set(name: str, index, value) -> Edit:
    def edit(arrays, header):
        array = arrays[name].copy()
        array[index] = value
        arrays[name] = array

    return edit


def _meta(key: str, value) -> Edit:
    def edit(arrays, header):
        header["meta"]["scan"][key] = value

    return edit


def _drop_meta(key: str) -> Edit:
    return lambda arrays, header: header["meta"]["scan"].pop(key)


def _astype(name: str, dtype) -> Edit:
    def edit(arrays, header):
        arrays[name] = arrays[name].astype(dtype)

    return edit


def _no_particles(arrays, header):
    for name in ("positions", "clouds", "neighbors", "particle_tokens"):
        arrays[name] = arrays[name][:, :, :0]


def _projection_list(arrays, header):
    header["meta"]["scan"]["settings"]["projection"] = ["density"]


SCAN_EDITS: dict[str, tuple[Edit, str]] = {
    "a surface face index of 1e9": (_set("surface_faces", (0, 0), 10**9), "past its surface"),
    "a negative surface face index": (_set("surface_faces", (0, 1), -5), "below 0"),
    "a token index of 2**31-1": (_set("particle_tokens", (0, 0, 0), 2**31 - 1), "particle_tok"),
    "a negative token index": (_set("particle_tokens", (0, 1, 3), -1), "particle_tokens"),
    "step_lengths of 1e12": (_meta("step_lengths", [10**12]), "step_lengths"),
    "surface counts of 1e12": (_set("surface_counts", (0, 0), 10**12), "surface counts"),
    "surface counts that are negative": (_set("surface_counts", (1, 1), -3), "surface_counts"),
    "neighbours past the particles": (_set("neighbors", (0, 0, 0, 0), 10**6), "neighbors"),
    "a header meta that is a list": (lambda a, h: Replace({**h, "meta": [1, 2]}), "'meta' object"),
    "a scan header that is a string": (
        lambda a, h: h["meta"].__setitem__("scan", "oops"),
        "not an object",
    ),
    "no meta in the header": (lambda a, h: h.pop("meta"), "'meta' object"),
    "no positions array": (lambda a, h: a.pop("positions"), "'positions' is missing"),
    "an extra header key": (_meta("evil", 1), "unknown keys"),
    "a missing header key": (_drop_meta("tokens"), "lacks tokens"),
    "float16 positions": (_astype("positions", np.float16), "float16"),
    "float particle tokens": (_astype("particle_tokens", np.float32), "particle_tokens"),
    "an empty token list": (_meta("tokens", []), "0 tokens"),
    "tokens that are numbers": (_meta("tokens", [1, 2, 3, 4, 5, 6]), "not text"),
    "zero particles": (_no_particles, "empty"),
    "NaN positions": (_set("positions", (0, 1, 2, 0), np.nan), "non-finite"),
    "infinite clouds": (_set("clouds", (0, 0, 0, 0), np.inf), "non-finite"),
    "an infinite trust figure": (_set("token_trust", (0, 1), np.inf), "infinite"),
    "lens probabilities above 1": (_set("lens_probs", (0, 0, 0), 7.0), "outside [0, 1]"),
    "lens tokens of the wrong length": (_meta("lens_tokens", [[["a"]]]), "lens_tokens"),
    "settings.projection a list": (_projection_list, "settings.projection"),
    "a negative n_prompt_tokens": (_meta("n_prompt_tokens", -4), "n_prompt_tokens"),
    "too few layer names": (_meta("layer_names", ["embeddings"]), "layer_names"),
    "a prompt that is a number": (_meta("prompt", 42), "prompt"),
    "positions of five dimensions": (
        lambda a, h: a.__setitem__("positions", a["positions"][..., None]),
        "positions",
    ),
}
"""Edits of a real single scan: (edit, a fragment of the one-line error it must cause)."""


def _diff_meta(key: str, value) -> Edit:
    return lambda arrays, header: header["meta"].__setitem__(key, value)


DIFF_EDITS: dict[str, tuple[Edit, str]] = {
    "a peak layer past the last": (_diff_meta("peak_layer", 99), "peak_layer"),
    "an aligned token past the prompt": (_set("aligned_tokens", (0, 1), 10**9), "outside"),
    "a negative aligned token": (_set("aligned_tokens", (1, 0), -1), "aligned_tokens"),
    "aligned tokens out of order": (
        lambda a, h: a.__setitem__("aligned_tokens", a["aligned_tokens"][::-1].copy()),
        "increasing",
    ),
    "a token divergence of the wrong length": (
        lambda a, h: a.__setitem__("token_divergence_b", a["token_divergence_b"][:, :1]),
        "token_divergence_b",
    ),
    "a NaN divergence": (_set("divergence", (0,), np.nan), "non-finite"),
    "an infinite threshold": (_diff_meta("threshold", 1e400), "threshold"),
    "a face index of 1e9 in scan b": (_set("b/surface_faces", (0, 0), 10**9), "past its"),
}


def nan_r2(arrays, header) -> None:
    """A hostile scan whose R² is NaN at one layer: loads, with a warning."""
    _set("reconstruction_r2", (0, 1), np.nan)(arrays, header)


def raw_header_size(path: Path, declared: int) -> None:
    """Overwrite the safetensors header-length field (the first 8 bytes)."""
    data = bytearray(path.read_bytes())
    data[:8] = declared.to_bytes(8, "little")
    path.write_bytes(bytes(data))


def sparse_huge(path: Path, size: int) -> None:
    """Make `path` a sparse file of `size` bytes whose header declares an array that fills it."""
    data_bytes = size - 8 - 512
    header = json.dumps(
        {
            "__metadata__": {FORMAT_KEY: json.dumps({"kind": "scan", "format_version": 2})},
            "positions": {
                "dtype": "F32",
                "shape": [data_bytes // 4],
                "data_offsets": [0, data_bytes // 4 * 4],
            },
        }
    ).ljust(512)
    with path.open("wb") as handle:
        handle.write(len(header).to_bytes(8, "little") + header.encode())
        handle.truncate(8 + len(header) + data_bytes // 4 * 4)


# ---- autoencoder and model configs ----------------------------------------------------------


def ae_config_edit(section: str | None, key: str, value) -> Callable[[Path], None]:
    """Edits an autoencoder folder's config.json: `key` (in `section`, e.g. "model") = value."""

    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (config[section] if section else config)[key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


AE_EDITS: dict[str, tuple[Callable[[Path], None], str]] = {
    "n_particles 0": (ae_config_edit("model", "n_particles", 0), "n_particles"),
    "n_particles -1": (ae_config_edit("model", "n_particles", -1), "n_particles"),
    "n_particles 1e9 (an integer)": (ae_config_edit("model", "n_particles", 10**9), "65536"),
    "n_particles 1e9 (a float)": (ae_config_edit("model", "n_particles", 1e9), "integer"),
    "n_particles a string": (ae_config_edit("model", "n_particles", "1024"), "integer"),
    "d_particle 1e9": (ae_config_edit("model", "d_particle", 10**9), "d_particle"),
    "d_hidden 1e9": (ae_config_edit("model", "d_hidden", 10**9), "d_hidden"),
    "d_hidden 2.5": (ae_config_edit("model", "d_hidden", 2.5), "integer"),
    "d_model 1e9": (ae_config_edit(None, "d_model", 10**9), "d_model"),
    "d_model 0": (ae_config_edit(None, "d_model", 0), "d_model"),
    "d_model a string": (ae_config_edit(None, "d_model", "big"), "d_model"),
    "n_layers 1e9": (ae_config_edit(None, "n_layers", 10**9), "n_layers"),
    "n_layers -2": (ae_config_edit(None, "n_layers", -2), "n_layers"),
    "model section a list": (ae_config_edit(None, "model", [1]), "mapping"),
    "weights header of 2**62 bytes": (
        lambda folder: raw_header_size(folder / "weights.safetensors", 2**62),
        "header declares",
    ),
}


def model_config_edit(key: str, value) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config[key] = value
        (folder / "config.json").write_text(json.dumps(config))

    return edit


MODEL_EDITS: dict[str, tuple[Callable[[Path], None], str]] = {
    "num_hidden_layers 1e9": (model_config_edit("num_hidden_layers", 10**9), "num_hidden_layers"),
    "num_hidden_layers 1e9 as a float": (
        model_config_edit("num_hidden_layers", 1e9),
        "num_hidden_layers",
    ),
    "hidden_size 0": (model_config_edit("hidden_size", 0), "hidden_size"),
    "vocab_size 1e12": (model_config_edit("vocab_size", 10**12), "vocab_size"),
    "intermediate_size 1e9": (model_config_edit("intermediate_size", 10**9), "intermediate"),
}


# ---- random mutations (fuzzing) --------------------------------------------------------------


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One random corruption of a file's bytes: truncation, byte flips, a header-length edit,
    or a JSON header edit (a number, a key or a bracket changed)."""
    data = bytearray(data)
    choice = rng.randrange(5)
    if choice == 0:
        return bytes(data[: rng.randrange(len(data))])
    if choice == 1:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if choice == 2:
        declared = rng.choice([0, 1, 7, 2**31, 2**63, len(data), rng.randrange(len(data))])
        data[:8] = declared.to_bytes(8, "little")
        return bytes(data)
    size = int.from_bytes(data[:8], "little")
    header = data[8 : 8 + size]
    positions = [i for i, b in enumerate(header) if chr(b) in '0123456789[]{}":,']
    if not positions:
        return bytes(data)
    for _ in range(rng.randint(1, 3)):
        at = rng.choice(positions)
        header[at] = ord(rng.choice('0123456789-e.[]{}":, x'))
    return bytes(data[:8] + header + data[8 + size :])


def mutate_json(text: str, rng: random.Random) -> str:
    """One random corruption of a JSON config: a value made huge, negative, a string, a
    float, null, or a character flipped."""
    try:
        config = json.loads(text)
    except ValueError:
        return text
    sections = [config] + [v for v in config.values() if isinstance(v, dict)]
    section = rng.choice(sections)
    if not section or rng.random() < 0.2:
        chars = list(text)
        chars[rng.randrange(len(chars))] = rng.choice('{}[]",:0x-')
        return "".join(chars)
    key = rng.choice(sorted(section))
    section[key] = rng.choice([0, -1, 10**9, 1e9, 2.5, "x", None, [], {}, True, 10**30, -1e300])
    return json.dumps(config)


# ---- special files ---------------------------------------------------------------------------


def make_fifo(path: Path) -> None:
    os.mkfifo(path)


def make_socket(path: Path) -> None:
    """A bound Unix socket file (the socket itself is closed; the file stays)."""
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
    finally:
        sock.close()


def make_null_device(path: Path) -> bool:
    """`path` as /dev/null's character device (needs CAP_MKNOD); False where not permitted."""
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError):
        return False
    return True


# ---- bad-input matrix cases -------------------------------------------------------------------


def _scan_edit(source: str, name: str, edit: Edit) -> Callable[[Path], None]:
    return lambda work: edited(work / source, work / name, edit) and None


def _special(make: Callable[[Path], None], name: str) -> Callable[[Path], None]:
    def setup(work: Path) -> None:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        make(work / name)

    return setup


def _loop(work: Path) -> None:
    (work / "loop").symlink_to("loop")


def hostile_cases() -> list[Case]:
    """The matrix cases of issue 17: special-file outputs, hostile scans, autoencoder and model
    configs, and flags asking for unbounded work (each a one-line exit 2 before any work)."""
    from tests.bad_inputs import OUTPUT_KINDS

    cases = []
    for kind, (argv, name, _folder) in OUTPUT_KINDS.items():
        training = kind.startswith("train")
        flag = () if training else ("-o",)
        cases.append(
            Case(
                f"{kind}: onto a fifo",
                (*argv, *flag, name),
                message="named pipe",
                setup=_special(make_fifo, name),
            )
        )
    for kind in ("render-png", "export-html", "capture"):
        argv, name, _folder = OUTPUT_KINDS[kind]
        cases.append(
            Case(
                f"{kind}: onto a socket",
                (*argv, "-o", name),
                message="socket",
                setup=_special(make_socket, name),
            )
        )
    for kind in ("render-png", "export-vtp"):
        argv, name, _folder = OUTPUT_KINDS[kind]
        cases.append(
            Case(
                f"{kind}: parent is a symbolic link loop",
                (*argv, "-o", f"loop/{name}"),
                message="symbolic link loop",
                setup=_loop,
            )
        )
    long_png = "p" * 245 + ".png"
    cases += [
        Case(
            "render: a legal 249-character output name",
            ("render", "x.scan", *QUICK, "-o", long_png),
            exit_code=0,
        ),
        Case(
            "export: a legal 255-character folder name",
            ("export", "x.scan", "-o", "m" * 255),
            exit_code=0,
        ),
    ]
    for what, (edit, message) in SCAN_EDITS.items():
        cases.append(
            Case(
                f"render a scan with {what}",
                ("render", "bad.scan", *QUICK, "-o", "out.png"),
                message=message,
                setup=_scan_edit("x.scan", "bad.scan", edit),
            )
        )
    for what in ("a surface face index of 1e9", "a negative surface face index"):
        cases.append(
            Case(
                f"export a scan with {what}",
                ("export", "bad.scan", "-o", "meshes"),
                message=SCAN_EDITS[what][1],
                setup=_scan_edit("x.scan", "bad.scan", SCAN_EDITS[what][0]),
            )
        )
    for what, (edit, message) in DIFF_EDITS.items():
        cases.append(
            Case(
                f"diff file with {what}",
                ("render", "bad.scan", *QUICK, "-o", "out.png"),
                message=message,
                setup=_scan_edit("d.scan", "bad.scan", edit),
            )
        )
    cases += [
        Case(
            "render a scan with NaN R² warns and renders",
            ("render", "bad.scan", *QUICK, "-o", "out.png"),
            exit_code=0,
            setup=_scan_edit("x.scan", "bad.scan", nan_r2),
        ),
        Case(
            "render a scan whose header declares 2**62 bytes",
            ("render", "x.scan", *QUICK, "-o", "out.png"),
            message="header declares",
            setup=lambda work: raw_header_size(work / "x.scan", 2**62),
        ),
        Case(
            "render a fifo as the scan",
            ("render", "pipe.scan", *QUICK, "-o", "out.png"),
            message="not a regular file",
            setup=_special(make_fifo, "pipe.scan"),
        ),
    ]
    for what, (edit, message) in AE_EDITS.items():
        cases.append(
            Case(
                f"autoencoder config.json: {what}",
                ("scan", "the fox", "--model", "{llama}", "--autoencoder", "bad", "-o", "o.scan"),
                message=message,
                setup=_copy_of("ae", "bad", edit),
            )
        )
    for what, (edit, message) in MODEL_EDITS.items():
        cases.append(
            Case(
                f"model config.json: {what}",
                ("capture", "the fox", "--model", "big"),
                message=message,
                setup=_copy_of("llama", "big", edit),
            )
        )
    return cases + flag_cases()


def flag_cases() -> list[Case]:
    """Flags asking for endless or unbounded work, non-finite numbers, bad text."""
    render = ("render", "x.scan", "-o", "out.mp4")
    scan = ("scan", "the fox", "--model", "{llama}", "--autoencoder", "{ae}", "-o", "o.scan")
    table = [
        ("--prompts-file /dev/zero", ("render", "--prompts-file", "/dev/zero"), "64 MiB"),
        ("--surface-grid 100000", (*scan, "--surface-grid", "100000"), "--surface-grid"),
        ("render --duration 1e9", (*render, "--duration", "1e9"), "--duration"),
        ("render --hold 1e9", (*render, "--hold", "1e9"), "--hold"),
        ("render --orbit -1e300", (*render, "--orbit", "-1e300"), "--orbit"),
        ("render --point-size inf", (*render, "--point-size", "inf"), "finite"),
        ("render --frames-per-layer 1e6", (*render, "--frames-per-layer", "1000000"), "frames"),
        ("scan --threads 0", (*scan, "--threads", "0"), "--threads"),
        ("scan --threads -1", (*scan, "--threads", "-1"), "--threads"),
        ("scan --threads 100000", (*scan, "--threads", "100000"), "--threads"),
        ("capture --seed 2**70", ("capture", "hi", "--seed", str(2**70)), "too large"),
        ("scan --projection-seed -1", (*scan, "--projection-seed", "-1"), "--projection-seed"),
        ("scan --alignment nan", (*scan, "--alignment", "nan"), "finite"),
        ("scan --alignment -1", (*scan, "--alignment", "-1"), "--alignment"),
        ("scan --token-time-epochs -1", (*scan, "--token-time-epochs", "-1"), "token-time"),
        ("scan --neighbors 1e9", (*scan, "--neighbors", "1000000000"), "--neighbors"),
        ("scan --epochs 1e9", (*scan, "--epochs", "1000000000"), "--epochs"),
        ("scan --line-neighbors 1e9", (*scan, "--line-neighbors", "1000000000"), "--line"),
        ("scan --faithfulness-k 1e9", (*scan, "--faithfulness-k", "1000000000"), "faithful"),
        ("scan --generate 1e9", (*scan, "--generate", "1000000000"), "--generate"),
        ("scan --generate past the limit", (*scan, "--generate", "5000"), "(64 tokens)"),
        ("capture --temperature inf", ("capture", "hi", "--temperature", "inf"), "finite"),
        ("invalid UTF-8 prompt", ("capture", "hi \udcff there"), "UTF-8"),
        ("render --save-scan of a .scan", (*render, "--save-scan", "y.scan"), "--save-scan"),
        ("train --set model.n_particles=1e9", _train("model.n_particles=1000000000"), "65536"),
        ("train --set train.lr=.nan", _train("train.lr=.nan"), "finite"),
    ]
    cases = [Case(name, argv, message=message) for name, argv, message in table]
    cases.append(
        Case(
            "render --prompt names a prompt equal to a file",
            (
                "render",
                "--prompt",
                "notes.txt",
                *("--model", "{llama}", "--autoencoder", "{ae}", "--epochs", "5"),
                *("--surface", "none", "--top-k", "2", *QUICK, "-o", "n.png"),
            ),
            exit_code=0,
            setup=lambda work: (work / "notes.txt").write_text("a file"),
        )
    )
    cases.append(
        Case(
            "export --prompt names a prompt equal to a file",
            (
                "export",
                "--prompt",
                "x.scan",
                *("--model", "{llama}", "--autoencoder", "{ae}", "--epochs", "5"),
                *("--surface", "none", "--top-k", "2", "-o", "page.html"),
            ),
            exit_code=0,
        )
    )
    return cases


def _train(setting: str) -> tuple[str, ...]:
    from tests.bad_inputs import TRAIN

    return (*TRAIN, "--set", setting, "--output", "run")


# ---- fuzzing the loaders -----------------------------------------------------------------------


def _load_scan(path: Path, work: Path) -> None:
    """Load a scan or diff and, when it loads, export its meshes (its arrays reach VTK)."""
    from layerscan.geometry.diff_scan import load_any
    from layerscan.geometry.scene.export import export_meshes

    export_meshes(load_any(path), work / "meshes", overwrite=True)


def _load_capture(path: Path, work: Path) -> None:
    from layerscan.autoencoder.capture.capture_file import Capture

    Capture.load(path)


def _load_autoencoder(folder: Path, work: Path) -> None:
    from layerscan.autoencoder.artifact import load_autoencoder

    load_autoencoder(folder, cache_bases=False)


def fuzz(kind: str, source: Path, n: int, seed: int, work: Path) -> dict[str, list[str]]:
    """Load `n` random mutations of `source` (a scan or capture file, or an autoencoder
    folder) in this process; returns {"ok": [...], "error": [messages], "crash": [reprs]}."""
    from layerscan.core.errors import LayerscanError

    rng = random.Random(seed)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[str]] = {"ok": [], "error": [], "crash": []}
    for i in range(n):
        if kind == "autoencoder":
            target = work / "ae"
            if target.exists():
                for item in target.iterdir():
                    item.unlink()
            else:
                target.mkdir()
            config = (source / "config.json").read_text()
            weights = (source / "weights.safetensors").read_bytes()
            if rng.random() < 0.5:
                config = mutate_json(config, rng)
            else:
                weights = mutate(weights, rng)
            (target / "config.json").write_text(config)
            (target / "weights.safetensors").write_bytes(weights)
            load = _load_autoencoder
        else:
            target = work / f"mutant{source.suffix}"
            target.write_bytes(mutate(source.read_bytes(), rng))
            load = _load_scan if kind == "scan" else _load_capture
        try:
            load(target, work)
            results["ok"].append(str(i))
        except LayerscanError as exc:
            results["error"].append(str(exc))
        except Exception as exc:  # noqa: BLE001 - the fuzz counts every other failure
            results["crash"].append(f"mutation {i}: {type(exc).__name__}: {exc}"[:300])
    return results


def fuzz_main(kind: str, source: str, n: int, seed: int, work: str, report: str) -> None:
    """Entry point for a subprocess: fuzz, then write the results and the peak memory (MiB)."""
    import resource
    import warnings

    warnings.simplefilter("ignore")
    results = fuzz(kind, Path(source), n, seed, Path(work))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(report).write_text(json.dumps({**results, "peak_mib": peak}))
