"""Arguments shared by several subcommands, and the glue that turns them into objects."""

from __future__ import annotations

import argparse

DEFAULT_PROMPT = "The quick brown fox jumps over the lazy dog because"


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype, --trust-remote-code."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="embedded",
                       help="'embedded' (SmolLM2-135M-Instruct, offline; default), a local "
                            "folder, or a Hugging Face hub id (needs the hub or its cache)")
    group.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    group.add_argument("--dtype", default="auto",
                       choices=["auto", "float32", "bfloat16", "float16"],
                       help="auto: float32 on CPU, bfloat16 on GPU")
    group.add_argument("--trust-remote-code", action="store_true",
                       help="allow the model repository's own Python code to run")


def add_capture_arguments(parser: argparse.ArgumentParser) -> None:
    """--normalization, --generate, --sample, --temperature, --chat, --top-k, --seed."""
    group = parser.add_argument_group("capture")
    group.add_argument("--normalization", default="final-norm",
                       choices=["final-norm", "standardize", "raw"],
                       help="final-norm: the model's final norm on every layer, as the logit "
                            "lens does (default); standardize: zero mean, unit variance per "
                            "token and layer; raw: residual stream as is")
    group.add_argument("--generate", type=int, default=0, metavar="N",
                       help="continue the prompt by N tokens and capture them too (causal)")
    group.add_argument("--sample", action="store_true",
                       help="sample generated tokens instead of greedy decoding")
    group.add_argument("--temperature", type=float, default=0.8, help="with --sample")
    group.add_argument("--chat", action="store_true",
                       help="wrap the prompt in the model's chat template as a user message")
    group.add_argument("--top-k", type=int, default=5, help="logit-lens tokens kept per position")
    group.add_argument("--seed", type=int, default=0, help="random seed for sampling")


def load_model_from_args(args: argparse.Namespace):
    """The LoadedModel that --model/--device/--dtype/--trust-remote-code name."""
    from layerscan.autoencoder.capture.loading import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype,
                      trust_remote_code=args.trust_remote_code)


def capture_from_args(loaded, prompt: str, args: argparse.Namespace):
    """Capture `prompt` with the options of `add_capture_arguments`."""
    from layerscan.autoencoder.capture.hidden_states import capture

    return capture(loaded, prompt, normalization=args.normalization, generate=args.generate,
                   sample=args.sample, temperature=args.temperature, chat=args.chat,
                   top_k=args.top_k, seed=args.seed)


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """--overwrite, for every command that writes an output."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an output folder that an earlier layerscan run wrote "
                             "(files are always replaced atomically; a folder layerscan did "
                             "not write is never replaced)")


def check_outputs(args: argparse.Namespace, outputs: list[tuple[str | None, bool]],
                  inputs: list[str | None] = ()) -> None:
    """Check each (path, is_folder) output before any expensive work (see `check_output`)."""
    from layerscan.files import check_output

    sources = [item for item in inputs if item and len(item) < 4096]
    for path, folder in outputs:
        if path:
            flag = "--save-scan" if path == getattr(args, "save_scan", None) else "-o"
            check_output(path, folder=folder, overwrite=getattr(args, "overwrite", False),
                         inputs=sources, flag=flag)
