"""Start-up: the CLI imports nothing heavy until a command needs it; cached autoencoder bases."""

from __future__ import annotations

import gc
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch

from layerscan.autoencoder.artifact import export_autoencoder, load_autoencoder
from layerscan.autoencoder.basis_cache import FOLDER, basis_key, basis_path, read_basis, write_basis
from layerscan.cli.main import main
from layerscan.core.startup import paused_collection
from tests.test_autoencoder import SMALL, _fitted, _trained

HEAVY = ("torch", "transformers", "pyvista", "vtkmodules", "sklearn", "scipy")


def test_cli_import_and_parser_import_nothing_heavy():
    code = (
        "import sys\n"
        "import layerscan.cli.main\n"
        "parser = layerscan.cli.main.build_parser()\n"
        "parser.format_help()\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def _frozen(obj) -> bool:
    """Whether `obj` is in the permanent generation (gc.get_objects lists the others)."""
    return all(o is not obj for o in gc.get_objects())


def test_paused_collection_pauses_freezes_and_resumes():
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_collection():
        kept = [[i] for i in range(10)]
        assert not gc.isenabled()
        with paused_collection():  # nested: changes nothing
            assert not gc.isenabled()
        assert not gc.isenabled()
        raise RuntimeError
    assert gc.isenabled() and _frozen(kept) and _frozen(kept[0])
    gc.disable()  # entered while collection is off: left off, nothing frozen
    try:
        with paused_collection():
            other = [[0]]
        assert not gc.isenabled() and not _frozen(other)
    finally:
        gc.enable()


def test_a_renders_start_up_pauses_collection_and_imports_no_sklearn(tiny_model_dirs, tmp_path):
    """`render` of a prompt run by main(), stopped where its work would start (as the bench
    does): its imports and its loading ran with collection paused, then frozen."""
    argv = ["render", "--model", str(tiny_model_dirs["llama"]), "-o", str(tmp_path / "x.png")]
    code = (
        "import gc, sys\n"
        "from layerscan.cli.main import main\n"
        "import layerscan.cli.common as common\n"
        "import layerscan.autoencoder.capture.loading as loading\n"
        "real, seen, make = loading.load_model, [], common.PipelineFlags.pipeline.func\n"
        "def until_load(self, load):\n"
        "    import torch\n"  # imported already: its classes were frozen with it
        "    seen.append((gc.isenabled(), all(o is not torch.nn.Module\n"
        "                                     for o in gc.get_objects())))\n"
        "    return load(self)\n"
        "def load_model(*args, **kwargs):\n"
        "    seen.append(gc.isenabled())\n"
        "    return real(*args, **kwargs)\n"
        "def until_work(self, *args):\n"
        "    self.load()\n"
        "    print(seen, gc.isenabled(),\n"
        "          sorted(m for m in ('sklearn', 'scipy.stats') if m in sys.modules))\n"
        "    raise SystemExit(0)\n"
        "def pipeline(self):\n"  # the pipeline's module is imported there, as in a command
        "    made = make(self)\n"
        "    load = type(made).load\n"
        "    type(made).load = lambda self: until_load(self, load)\n"
        "    type(made).check_prompts = until_work\n"
        "    return made\n"
        "common.PipelineFlags.pipeline = property(pipeline)\n"
        "loading.load_model = load_model\n"
        f"main({argv!r})\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "[(True, True), False] True []"


def test_rendering_a_scan_file_imports_no_torch(tmp_path):
    from tests.synthetic_scan import make_scan

    scan, still = tmp_path / "x.scan", tmp_path / "x.png"
    make_scan().save(scan)
    argv = ["render", str(scan), "-o", str(still), "--resolution", "160x120"]
    code = (
        "import sys\n"
        "from layerscan.cli.main import main\n"
        f"code = main({argv!r})\n"
        "print(code, sorted(m for m in ('torch', 'transformers', 'sklearn', 'pyvista')\n"
        "                   if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "0 ['pyvista']"
    assert iio.imread(still).shape == (120, 160, 3)


def test_a_commands_help_still_lists_its_lazy_options(capsys):
    assert main(["render", "--help"]) == 0
    text = capsys.readouterr().out
    for flag in ("--model", "--normalization", "--projection", "--surface", "--fps", "--color"):
        assert flag in text
    order = [
        text.index(f"\n{group}:")
        for group in ("drawing", "movie", "model", "capture", "projection", "scan")
    ]
    assert order == sorted(order)


def _cached_files(root):
    return sorted((root / FOLDER).glob("*.safetensors"))


def test_bases_cache_is_used_identical_and_keyed_by_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCAN_CACHE", str(tmp_path / "cache"))
    trained = _trained()
    folder = export_autoencoder(trained.model, trained.config, tmp_path / "ae")
    derived = load_autoencoder(folder, cache_bases=False).model.basis
    assert _cached_files(tmp_path / "cache") == []
    first = load_autoencoder(folder).model.basis  # derives and writes the cache
    assert len(_cached_files(tmp_path / "cache")) == 1
    second = load_autoencoder(folder).model.basis  # reads it
    assert torch.equal(first, derived) and torch.equal(second, derived)

    # the second load really reads the file: a basis written under the same key comes back
    key = basis_key(folder / "config.json", folder / "weights.safetensors")
    assert write_basis(basis_path(key), key, derived.flip(0))
    assert torch.equal(load_autoencoder(folder).model.basis, derived.flip(0))

    # new weights in the same folder: a new key, the bases derived again
    retrained = _fitted(SMALL)
    with torch.no_grad():
        retrained.variances[:, 0] *= 0.01  # another top direction, so other bases
    export_autoencoder(retrained, trained.config, folder, overwrite=True)
    fresh = load_autoencoder(folder, cache_bases=False).model.basis
    assert not torch.equal(fresh, derived)
    assert torch.equal(load_autoencoder(folder).model.basis, fresh)
    assert len(_cached_files(tmp_path / "cache")) == 2


def test_a_corrupt_cached_basis_is_ignored_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("LAYERSCAN_CACHE", str(tmp_path / "cache"))
    trained = _trained()
    folder = export_autoencoder(trained.model, trained.config, tmp_path / "ae")
    derived = load_autoencoder(folder).model.basis
    (cached,) = _cached_files(tmp_path / "cache")
    key = basis_key(folder / "config.json", folder / "weights.safetensors")
    for damage in (b"not a safetensors file", cached.read_bytes()[:100]):
        cached.write_bytes(damage)
        assert read_basis(cached, key, derived) is None
        assert torch.equal(load_autoencoder(folder).model.basis, derived)
        assert torch.equal(read_basis(cached, key, derived), derived)  # rewritten
    write_basis(cached, key, derived[:, :2])  # wrong shape: ignored too
    assert torch.equal(load_autoencoder(folder).model.basis, derived)


def test_prompts_file_names_and_errors(tmp_path, capsys):
    from layerscan.cli.commands.render import numbered

    assert numbered("out/a.mp4", 3, 12) == "out/a-03.mp4" and numbered("frames", 1, 2) == "frames-1"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n  \n", encoding="utf-8")
    for argv in (
        ["--prompts-file", str(tmp_path / "missing.txt")],
        ["--prompts-file", str(prompts)],
        ["a prompt", "--prompts-file", str(prompts)],
    ):
        assert main(["render", *argv, "-o", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("layerscan: error: ") == 3 and err.count("\n") == 3
    assert list(tmp_path.iterdir()) == [prompts]


@pytest.mark.slow
def test_prompts_file_renders_one_still_per_prompt(tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The cat sat\n\nA dog ran far\n", encoding="utf-8")
    assert (
        main(
            [
                "render",
                "--prompts-file",
                str(prompts),
                "-o",
                str(tmp_path / "s.png"),
                "--resolution",
                "160x120",
            ]
        )
        == 0
    )
    first, second = (iio.imread(tmp_path / f"s-{i}.png") for i in (1, 2))
    assert first.shape == second.shape == (120, 160, 3) and (first != second).any()
    assert capsys.readouterr().err.count("scanned") == 2


def test_transformers_models_structure_is_read_once_and_the_same():
    """`transformers.models`' import structure, derived from the one `transformers` built,
    equals transformers' own reading of it; its files are read once per process."""
    code = (
        "from pathlib import Path\n"
        "from layerscan.autoencoder.capture.model_classes import import_transformers,"
        " models_structure\n"
        "transformers = import_transformers()\n"
        "import transformers.utils.import_utils as iu\n"
        "once = iu.create_import_structure_from_path.cache_info().misses\n"
        "init = Path(transformers.__file__).parent / 'models' / '__init__.py'\n"
        "print(models_structure() == iu.define_import_structure(str(init)), once)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    same, misses = result.stdout.split()
    assert same == "True"
    count = subprocess.run(  # what one reading of the models folder costs
        [
            sys.executable,
            "-c",
            "import transformers.utils.import_utils as iu\n"
            "print(iu.create_import_structure_from_path.cache_info().misses)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(misses) == int(count.stdout)


def test_table_architectures_load_their_class_directly(tiny_models):
    """A model type of the architecture table is loaded by its own class, not an Auto one."""
    from layerscan.autoencoder.capture.architectures import ARCHITECTURES
    from layerscan.autoencoder.capture.model_classes import import_transformers, model_class

    transformers = import_transformers()
    for arch, loaded in tiny_models.items():
        cls = model_class(loaded.config, loaded.is_causal, transformers)
        assert type(loaded.model) is cls or arch not in ARCHITECTURES
        if arch in ARCHITECTURES:
            assert not cls.__name__.startswith("Auto"), arch
    unknown = transformers.LlamaConfig(model_type="llama")
    unknown.model_type = "not-in-the-table"
    assert model_class(unknown, True, transformers) is transformers.AutoModelForCausalLM
