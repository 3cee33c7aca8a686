"""The one place that knows model architectures: where the final norm and the lens head live."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from layerscan.core.errors import LayerscanError

TABLE_PATH = "ARCHITECTURES in autoencoder/capture/architectures.py"


@dataclass(frozen=True)
class Architecture:
    """What capture and the logit lens need to know about one `config.model_type`."""

    final_norm: str | None
    """Attribute path of the final norm below `model.base_model`; None for post-norm encoders,
    whose blocks already end in a LayerNorm (final-norm then equals raw)."""
    lens: tuple[str, ...] | None = ()
    """Steps from the final-normed state to the output embedding: attribute paths below the
    model (a trailing "?" marks a step some configs lack) or "gelu". None: the LM head is not
    known, so there is no logit lens."""
    logit_softcap: str | None = None
    """Config field of a tanh soft cap on the logits (cap · tanh(logits / cap)), if any."""
    attention: str | None = "layers.*.self_attn"
    """Path below `model.base_model` of each block's self-attention module, "*" standing for
    the block index (what --attention records); None: not known."""


PRE_NORM = Architecture("norm")
"""A decoder whose LM head reads `base_model.norm(h)` directly (Llama and most of its kin)."""

ARCHITECTURES: dict[str, Architecture] = {
    "llama": PRE_NORM,
    "mistral": PRE_NORM,
    "mixtral": PRE_NORM,
    "qwen2": PRE_NORM,
    "qwen3": PRE_NORM,
    "qwen2_moe": PRE_NORM,
    "phi3": PRE_NORM,
    "gemma": PRE_NORM,
    "gemma2": Architecture("norm", logit_softcap="final_logit_softcapping"),
    "olmo2": PRE_NORM,
    "smollm3": PRE_NORM,
    "granite": Architecture("norm", lens=None),  # divides its logits by config.logits_scaling
    "stablelm": PRE_NORM,
    "mpt": Architecture("norm_f", attention=None),
    "gpt2": Architecture("ln_f", attention="h.*.attn"),
    "gptj": Architecture("ln_f", attention="h.*.attn"),
    "bloom": Architecture("ln_f", attention=None),
    "falcon": Architecture("ln_f", attention="h.*.self_attention"),
    "gpt_neox": Architecture("final_layer_norm", attention="layers.*.attention"),
    "opt": Architecture(
        "decoder.final_layer_norm",
        lens=("model.decoder.project_out?",),
        attention="decoder.layers.*.self_attn",
    ),
    "phi": Architecture("final_layernorm"),
    "bert": Architecture(
        None, lens=("cls.predictions.transform",), attention="encoder.layer.*.attention.self"
    ),
    "roberta": Architecture(
        None,
        lens=("lm_head.dense", "gelu", "lm_head.layer_norm"),
        attention="encoder.layer.*.attention.self",
    ),
    "xlm-roberta": Architecture(
        None,
        lens=("lm_head.dense", "gelu", "lm_head.layer_norm"),
        attention="encoder.layer.*.attention.self",
    ),
    "distilbert": Architecture(
        None,
        lens=("vocab_transform", "activation", "vocab_layer_norm"),
        attention="transformer.layer.*.attention",
    ),
    "electra": Architecture(
        None, lens=("generator_predictions",), attention="encoder.layer.*.attention.self"
    ),
    "albert": Architecture(  # one attention module shared by every block
        None,
        lens=("predictions.dense", "predictions.activation", "predictions.LayerNorm"),
        attention=None,
    ),
}
"""model_type → where its final norm and its LM head live. Every lens here is tested against
the model's own output at the last layer (tests/test_reliability.py); a model type missing here
has no final-norm normalization and no logit lens, and the errors name this table."""


def _attribute(root: Any, path: str) -> Any:
    for name in path.split("."):
        root = getattr(root, name, None)
        if root is None:
            return None
    return root


def architecture(model: Any) -> Architecture | None:
    """The table entry of a model, or None when layerscan does not know its architecture."""
    return ARCHITECTURES.get(model.config.model_type)


def final_norm(model: Any) -> torch.nn.Module | None:
    """The model's final norm module, or None for post-norm encoders.

    Raises:
        LayerscanError: the architecture is not in the table (or its norm is missing).
    """
    entry = architecture(model)
    if entry is not None and entry.final_norm is None:
        return None
    module = None if entry is None else _attribute(model.base_model, entry.final_norm)
    if module is None:
        raise LayerscanError(
            f"architecture {model.config.model_type!r} has no known final norm; use "
            f"--normalization raw or standardize, or add it to {TABLE_PATH}"
        )
    return module


def lens_head(model: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A function final-normed state (…, d_model) → logits (…, vocab), or None without an LM head.

    The state passed in must already be final-normed (see `final_norm`).

    Raises:
        LayerscanError: the model has an LM head that layerscan does not know, so a lens would
            be wrong.
    """
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is None:
        return None
    entry = architecture(model)
    if entry is None or entry.lens is None:
        raise LayerscanError(
            f"architecture {model.config.model_type!r}: layerscan does not know "
            f"its LM head, so it has no logit lens; use --top-k 0, or add it "
            f"to {TABLE_PATH}"
        )
    steps = []
    for path in entry.lens:
        if path == "gelu":
            steps.append(torch.nn.functional.gelu)
            continue
        module = _attribute(model, path.rstrip("?"))
        if module is None and not path.endswith("?"):
            raise LayerscanError(
                f"architecture {model.config.model_type!r}: the lens step "
                f"{path!r} is missing from {type(model).__name__}; fix "
                f"{TABLE_PATH}"
            )
        if module is not None:
            steps.append(module)
    cap = None if entry.logit_softcap is None else getattr(model.config, entry.logit_softcap)

    def head(state: torch.Tensor) -> torch.Tensor:
        for step in steps:
            state = step(state)
        logits = output(state)
        return logits if cap is None else cap * torch.tanh(logits / cap)

    return head


def attention_modules(model: Any) -> list[torch.nn.Module]:
    """Each block's self-attention module, in block order (what --attention records).

    Raises:
        LayerscanError: the architecture's attention modules are not in the table or missing.
    """
    entry = architecture(model)
    path = None if entry is None else entry.attention
    head, _, tail = (path or "").partition(".*.")
    blocks = _attribute(model.base_model, head) if path else None
    modules = [_attribute(block, tail) for block in blocks] if blocks is not None else []
    if not modules or any(m is None for m in modules):
        raise LayerscanError(
            f"architecture {model.config.model_type!r}: layerscan does not know where its "
            f"attention modules are; drop --attention, or add them to {TABLE_PATH}"
        )
    return modules


def context_length(config: Any, tokenizer: Any) -> int | None:
    """The longest sequence the model accepts, from its config (None if it does not say)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None


@dataclass(frozen=True)
class ResidualWrites:
    """Where a block's attention and MLP write into the residual stream (for --components).

    Paths are below `model.base_model`, "*" standing for the block index; each names the module
    whose output is added to the stream as it is (after any post-norm, e.g. Gemma 2's). A
    trailing "+" marks a module that adds the residual (its second input) itself: its write is
    its output minus that input.
    """

    attention: str
    mlp: str
    parallel: str | bool = False
    """True, or the config field saying so: attention and the MLP both read the block's input,
    and both writes are added to it (GPT-J, Falcon, Phi, GPT-NeoX's use_parallel_residual)."""
    weights: str | None = None
    """The attention module whose output holds the weights in eager mode, when `attention`
    is not it (a post-norm after attention)."""


SEPARATE = ResidualWrites("layers.*.self_attn", "layers.*.mlp")
SANDWICH = ResidualWrites(
    "layers.*.post_attention_layernorm",
    "layers.*.post_feedforward_layernorm",
    weights="layers.*.self_attn",
)

RESIDUAL_WRITES: dict[str, ResidualWrites] = {
    "llama": SEPARATE,
    "mistral": SEPARATE,
    "mixtral": SEPARATE,
    "qwen2": SEPARATE,
    "qwen3": SEPARATE,
    "qwen2_moe": SEPARATE,
    "phi3": SEPARATE,
    "gemma": SEPARATE,
    "gemma2": SANDWICH,
    "olmo2": SANDWICH,
    "smollm3": SEPARATE,
    "stablelm": ResidualWrites(
        "layers.*.self_attn", "layers.*.mlp", parallel="use_parallel_residual"
    ),
    "mpt": ResidualWrites("blocks.*.attn", "blocks.*.ffn+"),
    "gpt2": ResidualWrites("h.*.attn", "h.*.mlp"),
    "gptj": ResidualWrites("h.*.attn", "h.*.mlp", parallel=True),
    "bloom": ResidualWrites("h.*.self_attention+", "h.*.mlp+"),
    "falcon": ResidualWrites("h.*.self_attention", "h.*.mlp", parallel="parallel_attn"),
    "gpt_neox": ResidualWrites(
        "layers.*.attention", "layers.*.mlp", parallel="use_parallel_residual"
    ),
    "opt": ResidualWrites("decoder.layers.*.self_attn", "decoder.layers.*.fc2"),
    "phi": ResidualWrites("layers.*.self_attn", "layers.*.mlp", parallel=True),
}
"""model_type → its residual writes. Every entry is tested against the residual identity
h_l - h_(l-1) = attention + MLP on tiny models (tests/test_components.py). Post-norm encoders
(BERT, ...) are absent: their LayerNorm after each sum leaves no additive write."""


def _block_modules(model: Any, path: str) -> list | None:
    head, _, tail = path.rstrip("+").partition(".*.")
    blocks = _attribute(model.base_model, head)
    modules = [_attribute(b, tail) for b in blocks] if blocks is not None else []
    return None if not modules or any(m is None for m in modules) else modules


def _residual_writes(model: Any) -> ResidualWrites:
    entry = RESIDUAL_WRITES.get(model.config.model_type)
    if entry is None or any(
        _block_modules(model, path) is None for path in (entry.attention, entry.mlp)
    ):
        raise LayerscanError(
            f"architecture {model.config.model_type!r}: layerscan does not know where its "
            f"attention and MLP write into the residual stream; drop --components, or add it "
            f"to RESIDUAL_WRITES in autoencoder/capture/architectures.py"
        )
    return entry


def residual_write_modules(model: Any) -> tuple[list, list, bool]:
    """Each block's attention and MLP write modules, and whether the blocks are parallel.

    Returns:
        ([(module, adds_residual)] per block for attention, the same for the MLP, parallel).

    Raises:
        LayerscanError: the architecture's writes are not in the table (or missing).
    """
    entry = _residual_writes(model)
    found = [
        [(m, path.endswith("+")) for m in _block_modules(model, path)]
        for path in (entry.attention, entry.mlp)
    ]
    parallel = entry.parallel
    if isinstance(parallel, str):
        config = model.config
        parallel = bool(getattr(config, parallel, False)) or (
            parallel == "parallel_attn" and bool(getattr(config, "new_decoder_architecture", 0))
        )
    return found[0], found[1], bool(parallel)


def attention_weight_modules(model: Any) -> list:
    """Each block's attention module that returns the weights in eager mode (--components)."""
    entry = _residual_writes(model)
    modules = _block_modules(model, entry.weights or entry.attention)
    if modules is None:
        raise LayerscanError(f"architecture {model.config.model_type!r}: fix {TABLE_PATH}")
    return modules
