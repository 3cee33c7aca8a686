"""The one place that knows model architectures: where the final norm and the lens head live."""

from __future__ import annotations

from typing import Any

import torch

from layerscan.errors import LayerscanError

FINAL_NORM = {
    # model_type: attribute path of the final norm below `model.base_model`
    "llama": "norm",
    "mistral": "norm",
    "mixtral": "norm",
    "qwen2": "norm",
    "qwen3": "norm",
    "qwen2_moe": "norm",
    "phi3": "norm",
    "gemma": "norm",
    "gemma2": "norm",
    "olmo2": "norm",
    "smollm3": "norm",
    "granite": "norm",
    "gpt2": "ln_f",
    "gptj": "ln_f",
    "bloom": "ln_f",
    "falcon": "ln_f",
    "gpt_neox": "final_layer_norm",
    "opt": "decoder.final_layer_norm",
    "phi": "final_layernorm",
}
"""Pre-norm decoders: the residual stream is normed once more before the LM head."""

POST_NORM = {"bert", "roberta", "xlm-roberta", "distilbert", "electra", "albert"}
"""Post-norm encoders: every block already ends in a LayerNorm, so there is no final norm and
final-norm equals raw."""

LENS_TRANSFORM = {
    "bert": "cls.predictions.transform",
    "roberta": "lm_head.dense",
}
"""Masked-LM heads that transform the state before the output embedding."""


def _attribute(root: Any, path: str) -> Any:
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def final_norm(model: Any) -> torch.nn.Module | None:
    """The model's final norm module, or None for post-norm encoders.

    Raises:
        LayerscanError: the architecture is in neither table.
    """
    model_type = model.config.model_type
    if model_type in POST_NORM:
        return None
    path = FINAL_NORM.get(model_type)
    module = None if path is None else _attribute(model.base_model, path)
    if module is None:
        raise LayerscanError(
            f"architecture {model_type!r} has no known final norm; use --normalization raw or "
            "standardize, or add it to FINAL_NORM in autoencoder/capture/architectures.py")
    return module


def lens_head(model: Any) -> Any | None:
    """A function state → logits for the logit lens, or None when the model has no LM head.

    The state passed in must already be final-normed (see `final_norm`).
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is None:
        return None
    transform_path = LENS_TRANSFORM.get(model.config.model_type)
    transform = None if transform_path is None else _attribute(model, transform_path)
    if transform is None:
        return output
    if model.config.model_type == "roberta":  # dense → gelu → layer norm → decoder
        head = model.lm_head
        return lambda h: output(head.layer_norm(torch.nn.functional.gelu(transform(h))))
    return lambda h: output(transform(h))


def context_length(config: Any, tokenizer: Any) -> int | None:
    """The longest sequence the model accepts, from its config (None if it does not say)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None
