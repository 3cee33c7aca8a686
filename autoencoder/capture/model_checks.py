"""Checks on a language model's files before its weights are built: bounded sizes in its
config.json, and a usable cached copy of the embedded model (else it is converted again)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from layerscan.core.errors import LayerscanError
from layerscan.core.limits import check_size

CONFIG_SIZES = {
    "num_hidden_layers": "n_layers",
    "n_layer": "n_layers",
    "hidden_size": "d_model",
    "n_embd": "d_model",
    "d_model": "d_model",
    "intermediate_size": "d_hidden",
    "n_inner": "d_hidden",
    "num_attention_heads": "n_heads",
    "n_head": "n_heads",
    "num_key_value_heads": "n_heads",
    "vocab_size": "vocab_size",
    "max_position_embeddings": "context",
    "n_positions": "context",
}
"""transformers config attributes that size the weights, and their key in core.limits.LIMITS."""


def check_model_config(config: Any, model_id: str) -> None:
    """Refuse, before any weights are allocated, a config asking for absurd sizes (0,
    negative, fractional, or beyond LIMITS: e.g. num_hidden_layers 1e9)."""
    for attribute, limit in CONFIG_SIZES.items():
        value = getattr(config, attribute, None)
        if value is None:
            continue
        check_size(
            value,
            limit,
            f"model {model_id!r}: its config.json's {attribute}",
            low=0 if attribute == "n_inner" else 1,
        )


WEIGHTS = "model.safetensors"


def cached_model_problem(folder: Path) -> str | None:
    """Why the cached conversion of the embedded model in `folder` is unusable (None: usable).

    Reads only headers: config.json as a JSON object, the safetensors header and its offsets
    against the file size (a truncated file fails), and a tokenizer file.
    """
    from safetensors import SafetensorError, safe_open

    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        return "not a folder"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if not isinstance(config, dict) or "model_type" not in config:
            return "its config.json is not a model config"
        with safe_open(str(folder / WEIGHTS), framework="numpy") as handle:
            if not list(handle.keys()):
                return f"its {WEIGHTS} holds no weights"
    except (OSError, UnicodeDecodeError, ValueError, SafetensorError) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
    if not (folder / "tokenizer.json").is_file():
        return "its tokenizer.json is missing"
    return None


def check_cache_place(folder: Path) -> None:
    """A cached model path taken by something that is no folder: name it and the fix."""
    if folder.exists() and not folder.is_dir():
        raise LayerscanError(
            f"the layerscan cache entry {folder} is a file, not the converted embedded model; "
            f"delete it and rerun (the model is converted again, about 30 s)"
        )


def convert_embedded(gguf: Path, revision: str, folder: Path, problem: str) -> None:
    """Convert the embedded model's GGUF into a safetensors model folder at `folder` (about
    30 s), replacing an unusable cached copy (`problem` says why; "missing": none yet)."""
    import sys
    import time

    import torch
    import transformers

    from layerscan.core.outputs import atomic_path

    started = time.perf_counter()
    why = "" if problem == "missing" else f" (the cached copy is unusable: {problem})"
    print(
        f"layerscan: converting the embedded model to safetensors (about 30 s, once) into "
        f"{folder}{why} ...",
        file=sys.stderr,
        flush=True,
    )
    tokenizer = transformers.AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    try:
        with atomic_path(folder, suffix="", folder=True, overwrite=True, kind="model") as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / "layerscan.json").write_text(
                json.dumps({"source": str(gguf), "revision": revision}, indent=2)
            )
    except LayerscanError as exc:
        raise LayerscanError(
            f"cannot replace the cached embedded model {folder} "
            f"({str(exc).removeprefix(f'-o {folder}: ')}); delete it and rerun"
        ) from None
    print(
        f"layerscan: converted in {time.perf_counter() - started:.0f} s; later runs load it "
        f"directly",
        file=sys.stderr,
        flush=True,
    )
