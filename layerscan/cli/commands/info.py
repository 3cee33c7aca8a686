"""`layerscan info`: what a model offers for capture."""

from __future__ import annotations

import argparse

from layerscan.cli.common import add_model_arguments
from layerscan.cli.options import options_from_args
from layerscan.core.startup import paused_collection


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info",
        help="print a model's layers, hidden size, context and normalizations",
        description="Print the layers, hidden size, context length and the normalization modes "
        "a model supports.",
    )
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Reads the model's config, tokenizer and weight headers only: no weights are loaded."""
    from layerscan.autoencoder.capture.architectures import ARCHITECTURES, context_length
    from layerscan.autoencoder.capture.capture_file import NORMALIZATIONS
    from layerscan.autoencoder.capture.loading import ModelOptions, is_causal, model_files

    options = options_from_args(ModelOptions, args)
    with paused_collection():  # transformers' imports
        files = model_files(options.model, trust_remote_code=options.trust_remote_code)
    config, tokenizer = files.config, files.tokenizer
    entry = ARCHITECTURES.get(config.model_type)
    if entry is None:
        norm_text = "unknown architecture"
        modes = ", ".join(n for n in NORMALIZATIONS if n != "final-norm")
    else:
        norm_text = (
            "none (post-norm: = raw)"
            if entry.final_norm is None
            else f"base_model.{entry.final_norm}"
        )
        modes = ", ".join(NORMALIZATIONS)
    lens = (
        "yes"
        if entry is not None and entry.lens is not None
        else "off (layerscan does not know this model's final norm or LM head)"
    )
    n_params = files.n_parameters
    rows = [
        ("model", files.model_id),
        ("revision", files.revision or "unknown"),
        ("architecture", f"{config.model_type} ({', '.join(config.architectures or ['?'])})"),
        ("kind", "causal LM (token-time, --generate)" if is_causal(config) else "encoder"),
        ("parameters", "unknown" if n_params is None else f"{n_params / 1e6:.1f} M"),
        (
            "layers",
            f"{config.num_hidden_layers} blocks -> {config.num_hidden_layers + 1} "
            "hidden states (embeddings + blocks)",
        ),
        ("hidden size", str(config.hidden_size)),
        ("context length", str(context_length(config, tokenizer) or "unknown")),
        ("final norm", norm_text),
        ("normalizations", modes),
        ("logit lens", lens),
        ("chat template", "yes" if getattr(tokenizer, "chat_template", None) else "no"),
        (
            "device",
            f"--device {options.device}, --dtype {options.dtype} (auto: the GPU in "
            f"bfloat16 when torch sees one, else the CPU in float32)",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0
