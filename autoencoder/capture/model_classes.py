"""A model's transformers classes, imported directly instead of through the Auto* machinery.

Two costs of transformers' lazy imports are avoidable:

- `transformers/__init__.py` builds the import structure of `transformers.models` by reading
  the `__all__` of its ~1,700 source files; `transformers/models/__init__.py` then builds the
  same structure again, since the cache of `create_import_structure_from_path` holds 128 of
  its ~570 folders. That second reading (0.3-0.5 s) is served here from the first one.
- `AutoModelFor*.from_pretrained` finds the class through the Auto mappings; the classes of the
  model types in the architecture table are imported from their modelling module directly.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from layerscan.autoencoder.capture.architectures import ARCHITECTURES


def import_transformers() -> Any:
    """`import transformers` with `transformers.models` imported too, its structure read once."""
    import transformers

    if "transformers.models" in sys.modules:
        return transformers
    import transformers.utils.import_utils as import_utils

    original = import_utils.define_import_structure
    models = Path(transformers.__file__).parent / "models"

    def define_import_structure(module_path: Any, prefix: str | None = None) -> Any:
        if prefix is not None or Path(module_path) != models / "__init__.py":
            return original(module_path, prefix)
        return models_structure()

    import_utils.define_import_structure = define_import_structure
    try:
        import transformers.models  # noqa: F401 - its __init__ reads the patched function
    finally:
        import_utils.define_import_structure = original
    return transformers


def model_class(config: Any, causal: bool, transformers: Any) -> Any:
    """The class that loads `config`'s weights with the head capture needs.

    A model type in the architecture table is imported from
    `transformers.models.<type>.modeling_<type>` by the class name transformers' own mapping
    gives; any other type (or a config with remote code) goes through the Auto class.
    """
    auto = transformers.models.auto.modeling_auto
    if causal:
        names, fallback = auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, transformers.AutoModelForCausalLM
    elif config.model_type in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        names, fallback = auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, transformers.AutoModelForMaskedLM
    else:
        names, fallback = auto.MODEL_MAPPING_NAMES, transformers.AutoModel
    name = names.get(config.model_type)
    if (
        config.model_type not in ARCHITECTURES
        or not isinstance(name, str)
        or getattr(config, "auto_map", None)
    ):
        return fallback
    configs = transformers.models.auto.configuration_auto
    folder = configs.model_type_to_module_name(config.model_type)
    try:
        module = importlib.import_module(f"transformers.models.{folder}.modeling_{folder}")
        return getattr(module, name)
    except (ImportError, AttributeError):
        return fallback


def models_structure() -> dict:
    """The import structure `transformers/models/__init__.py` asks for, from the one
    `transformers/__init__.py` built (and cached) with the prefix "models." on every name."""
    import transformers
    import transformers.utils.import_utils as import_utils

    models = Path(transformers.__file__).parent / "models"
    known = import_utils.define_import_structure(models, prefix="models")  # its cached call
    return {  # transformers/__init__.py added its own top-level names to the set of one key
        backends: {
            name.removeprefix("models."): set(objects)
            for name, objects in modules.items()
            if name.startswith("models.")
        }
        for backends, modules in known.items()
    }
