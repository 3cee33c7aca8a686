"""A second model to compare with the first: a fine-tune, or a PEFT/LoRA adapter of its base."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from layerscan.autoencoder.capture.loading import (
    EMBEDDED_ALIASES,
    LoadedModel,
    ModelOptions,
    load_model,
    model_config,
)
from layerscan.core.errors import LayerscanError

ADAPTER_CONFIG = "adapter_config.json"
"""The file that marks a PEFT adapter folder."""
PEFT_INSTALL = "pip install 'layerscan[peft]'"
EMBEDDED_UPSTREAM = "SmolLM2-135M-Instruct"
"""The hub model the embedded one is a quantized copy of: adapters trained on it fit it."""


@dataclass(frozen=True)
class SecondModelOptions:
    """The second model of a model-vs-model comparison (B; --model is A, the base)."""

    model_b: str | None = field(default=None, metadata={"metavar": "MODEL"})
    """Compare --model (A) with this model (B): a fine-tune's folder or hub id with the same
    hidden size and layer count, or a PEFT/LoRA adapter folder (holds adapter_config.json; needs
    `pip install 'layerscan[peft]'`). B goes through A's autoencoder."""
    adapter: str | None = field(default=None, metadata={"metavar": "DIR"})
    """A PEFT/LoRA adapter folder: B is --model-b (default --model) with this adapter merged
    in."""

    @property
    def wanted(self) -> bool:
        """Whether a second model is asked for at all."""
        return self.model_b is not None or self.adapter is not None


@dataclass(frozen=True)
class SecondModelPlan:
    """What B is: a base model and, optionally, an adapter merged into it."""

    base: str
    """The model B is loaded from (--model-b, or --model)."""
    adapter: Path | None
    """The adapter folder merged into `base`, or None."""

    @property
    def model_id(self) -> str:
        """How messages name B (its captures carry the loaded base's id + the adapter)."""
        return self.base if self.adapter is None else f"{self.base}+{self.adapter}"


def is_adapter_folder(path: str | None) -> bool:
    """Whether `path` is a PEFT adapter folder (it holds adapter_config.json)."""
    return (
        path is not None
        and len(path) < 4096
        and (Path(path).expanduser() / ADAPTER_CONFIG).is_file()
    )


def plan_second_model(model: ModelOptions, second: SecondModelOptions) -> SecondModelPlan:
    """Resolve --model-b / --adapter into a base and an adapter (no file beyond configs read)."""
    if not second.wanted:
        raise LayerscanError("no second model: pass --model-b MODEL or --adapter DIR")
    base, adapter = second.model_b or model.model, second.adapter
    if second.model_b is not None and is_adapter_folder(second.model_b):
        if adapter is not None:
            raise LayerscanError(
                f"--model-b {second.model_b} is an adapter folder and --adapter "
                f"names another; give one adapter"
            )
        base, adapter = model.model, second.model_b
    if adapter is None:
        return SecondModelPlan(base=base, adapter=None)
    folder = Path(adapter).expanduser()
    if not (folder / ADAPTER_CONFIG).is_file():
        raise LayerscanError(
            f"--adapter {adapter}: no {ADAPTER_CONFIG} there; point it at a PEFT adapter folder"
        )
    return SecondModelPlan(base=base, adapter=folder)


def _shape(config: Any) -> tuple[int | None, int | None]:
    """(hidden size, transformer blocks) of a transformers config."""
    return getattr(config, "hidden_size", None), getattr(config, "num_hidden_layers", None)


def _adapter_base(folder: Path) -> str | None:
    try:
        values = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LayerscanError(f"{folder / ADAPTER_CONFIG}: unreadable ({exc})") from exc
    return values.get("base_model_name_or_path") or None


def _same_name(wanted: str, base: str) -> bool:
    """Whether an adapter's recorded base names `base` (equal, same folder, or same hub name)."""
    if base in EMBEDDED_ALIASES:
        return Path(wanted).name.lower() == EMBEDDED_UPSTREAM.lower()
    if wanted == base:
        return True
    w, b = Path(wanted).expanduser(), Path(base).expanduser()
    if w.exists() and b.exists():
        return w.resolve() == b.resolve()
    return w.name.lower() == b.name.lower()


def check_adapter_base(
    folder: Path, base: str, base_config: Any, trust_remote_code: bool = False
) -> None:
    """Refuse an adapter trained on another base model, before loading any weights.

    The adapter's `base_model_name_or_path` must name `base` (the same id, folder, or hub name
    under another folder), or be a model whose config has `base_config`'s type and shapes.
    """
    wanted = _adapter_base(folder)
    if wanted is None or _same_name(wanted, base):
        return
    try:
        _, config = model_config(wanted, trust_remote_code)
    except LayerscanError:
        config = None
    if (
        config is not None
        and config.model_type == base_config.model_type
        and _shape(config) == _shape(base_config)
        and getattr(config, "vocab_size", None) == getattr(base_config, "vocab_size", None)
    ):
        return
    raise LayerscanError(
        f"adapter {folder} was trained on {wanted}, not on {base}; pass "
        f"--model {wanted} (or the folder that holds it)"
    )


def check_model_pair(
    model: ModelOptions, plan: SecondModelPlan, shape: tuple[int, int] | None = None
) -> None:
    """Refuse, from configs alone (no weights), a B that cannot be compared with A.

    Args:
        model: A's options.
        plan: B.
        shape: (d_model, n_layers) the autoencoder encodes, if known.
    """
    _, config_a = model_config(model.model, model.trust_remote_code)
    _, config_b = model_config(plan.base, model.trust_remote_code)
    shape_a, shape_b = _shape(config_a), _shape(config_b)
    if plan.adapter is not None:
        check_adapter_base(plan.adapter, plan.base, config_b, model.trust_remote_code)
        peft_module()
    if shape_a != shape_b:
        raise LayerscanError(
            f"{model.model} (hidden size {shape_a[0]}, {shape_a[1]} layers) and "
            f"{plan.base} (hidden size {shape_b[0]}, {shape_b[1]} layers) "
            f"differ in shape, so one autoencoder cannot encode both; compare "
            f"a model with its own fine-tunes or adapters"
        )
    if shape is not None and tuple(shape) != shape_b:
        raise LayerscanError(
            f"the autoencoder encodes hidden size {shape[0]} with {shape[1]} "
            f"layers, but {plan.model_id} has hidden size {shape_b[0]} with "
            f"{shape_b[1]} layers; pass --autoencoder for this model family"
        )


def peft_module() -> Any:
    """The `peft` package, or a one-line error that says how to install it."""
    try:
        import peft
    except ImportError as exc:
        raise LayerscanError(f"PEFT/LoRA adapters need the peft library: {PEFT_INSTALL}") from exc
    return peft


def load_second_model(model: ModelOptions, plan: SecondModelPlan) -> LoadedModel:
    """Load B as A's options say (device, dtype); an adapter is merged into its base."""
    loaded = load_model(
        plan.base, device=model.device, dtype=model.dtype, trust_remote_code=model.trust_remote_code
    )
    if plan.adapter is None:
        return loaded
    peft = peft_module()
    try:
        merged = peft.PeftModel.from_pretrained(loaded.model, str(plan.adapter)).merge_and_unload()
    except (RuntimeError, ValueError, OSError, KeyError) as exc:
        raise LayerscanError(
            f"cannot apply adapter {plan.adapter} to {plan.base}: {exc}".splitlines()[0]
        ) from exc
    merged.eval()
    return replace(loaded, model=merged, model_id=f"{loaded.model_id}+{plan.adapter}")
