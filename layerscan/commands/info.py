"""`layerscan info`: what a model offers for capture."""

from __future__ import annotations

import argparse

from layerscan.commands.common import add_model_arguments, load_model_from_args


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="print a model's layers, hidden size, context and normalizations",
        description="Print the layers, hidden size, context length and the normalization modes "
                    "a model supports.")
    add_model_arguments(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from layerscan.autoencoder.capture.architectures import context_length, final_norm, lens_head
    from layerscan.autoencoder.capture.capture_file import NORMALIZATIONS
    from layerscan.errors import LayerscanError

    loaded = load_model_from_args(args)
    config = loaded.config
    try:
        norm = final_norm(loaded.model)
        norm_text = type(norm).__name__ if norm is not None else "none (post-norm: = raw)"
        modes = ", ".join(NORMALIZATIONS)
    except LayerscanError:
        norm_text = "unknown architecture"
        modes = ", ".join(n for n in NORMALIZATIONS if n != "final-norm")
    n_params = sum(p.numel() for p in loaded.model.parameters())
    rows = [
        ("model", loaded.model_id),
        ("revision", loaded.revision or "unknown"),
        ("architecture", f"{loaded.architecture} ({type(loaded.model).__name__})"),
        ("kind", "causal LM (token-time, --generate)" if loaded.is_causal else "encoder"),
        ("parameters", f"{n_params / 1e6:.1f} M"),
        ("layers", f"{config.num_hidden_layers} blocks -> {config.num_hidden_layers + 1} "
                   "hidden states (embeddings + blocks)"),
        ("hidden size", str(config.hidden_size)),
        ("context length", str(context_length(config, loaded.tokenizer) or "unknown")),
        ("final norm", norm_text),
        ("normalizations", modes),
        ("logit lens", "yes" if lens_head(loaded.model) is not None else "no LM head"),
        ("chat template", "yes" if getattr(loaded.tokenizer, "chat_template", None) else "no"),
        ("device", f"{loaded.device} ({next(loaded.model.parameters()).dtype})"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0
