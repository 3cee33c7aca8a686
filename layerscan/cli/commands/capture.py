"""`layerscan capture`: one prompt's hidden states at every layer, summarised and saved."""

from __future__ import annotations

import argparse

from layerscan.cli.common import (
    DEFAULT_PROMPT,
    PipelineFlags,
    add_capture_arguments,
    add_model_arguments,
    add_overwrite_argument,
    check_outputs,
)

LENS_LAYERS_SHOWN = 5


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "capture",
        help="capture every layer's hidden states for a prompt",
        description="Run the model on a prompt (and on tokens it generates) and keep every "
        "layer's hidden states; print a summary and optionally save them.",
    )
    parser.add_argument(
        "prompt", nargs="?", default=DEFAULT_PROMPT, help=f"the text (default: {DEFAULT_PROMPT!r})"
    )
    parser.add_argument("-o", "--output", help="save the capture here (.safetensors file)")
    add_overwrite_argument(parser)
    add_model_arguments(parser)
    add_capture_arguments(parser)
    parser.set_defaults(run=run)


def summary(capture) -> str:
    """A few lines: shape, tokens, and the logit lens at the last position of a few layers."""
    lines = [
        f"{capture.model_id}: {capture.n_layers + 1} hidden states x {capture.n_tokens} "
        f"tokens x {capture.d_model} hidden ({capture.normalization})"
    ]
    marked = [
        ("| " if i == capture.n_prompt_tokens and i else "") + repr(t)
        for i, t in enumerate(capture.tokens)
    ]
    lines.append(
        "tokens: "
        + " ".join(marked)
        + (
            f"   ({capture.n_tokens - capture.n_prompt_tokens} generated after |)"
            if capture.n_tokens > capture.n_prompt_tokens
            else ""
        )
    )
    if capture.lens_tokens is not None:
        position = capture.n_prompt_tokens - 1
        lines.append(f"logit lens at the last prompt token {capture.tokens[position]!r}:")
        n = capture.n_layers
        shown = sorted({round(i * n / (LENS_LAYERS_SHOWN - 1)) for i in range(LENS_LAYERS_SHOWN)})
        for layer in shown:
            tops = ", ".join(
                f"{t!r} {p:.2f}"
                for t, p in zip(
                    capture.lens_tokens[layer][position],
                    capture.lens_probs[layer][position],
                    strict=True,
                )
            )
            lines.append(f"  {capture.layer_names[layer]:>12}: {tops}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    flags = PipelineFlags(args, scan=False)  # validated before the model loads
    check_outputs([("-o", args.output, False)], args.overwrite)
    result = flags.pipeline.capture_prompt(args.prompt)
    print(summary(result))
    if result.attention is not None:
        record = result.attention
        stored = "every weight" if record.weights is not None else "top keys per query"
        print(
            f"attention ({record.kind}): {record.n_layers} layers x {record.n_heads} heads x "
            f"{record.n_tokens} tokens, {stored}, with queries and keys: "
            f"{record.nbytes / 2**20:.1f} MiB"
        )
    if args.output:
        path = result.save(args.output)
        print(f"saved {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0
