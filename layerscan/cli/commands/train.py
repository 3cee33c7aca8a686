"""`layerscan train`: train a particle autoencoder on a corpus, with PyTorch Lightning."""

from __future__ import annotations

import argparse

from layerscan.autoencoder.config import DataConfig, RunConfig, TrainConfig
from layerscan.cli.common import (
    add_model_arguments,
    add_overwrite_argument,
    data_changes,
    note,
)
from layerscan.cli.options import add_options, given_options

RUN_FLAGS = ("output", "export")
"""RunConfig fields that `train` takes as flags (shortcuts for --set KEY=VALUE)."""
LIGHTNING_FLAGS = ("accelerator", "devices", "num_nodes", "strategy", "precision")
"""TrainConfig fields that `train` takes as flags."""

HELP = """Train the particle autoencoder from a YAML config (configs/*.yaml) with overrides.

Corpus formats: a .txt file (one document per line; blank lines skipped), a .jsonl file
(field data.text_field, default "text"), a folder of .txt files (one document per file),
hf:NAME (a Hugging Face dataset, online), or "default" (seed prompts written for layerscan,
continued by the language model, cached). Bytes that are not UTF-8 are replaced by U+FFFD
with a warning. Documents longer than model.max_len are cut into windows, never dropped.
Hidden states are extracted once and cached as memory-mapped shards.

Several devices or machines: --devices N (N > 1) or --num-nodes M runs the extraction of the
hidden states data-parallel (Lightning DDP: each process writes its own shards; the index joins
them in corpus order) and then the training, on the same processes. On one machine Lightning
starts the processes itself; on several, start the same command on each with torchrun or
SLURM (srun), as Lightning documents, with --cache-dir on a folder they all share. An
interrupted extraction resumes from its finished shards when the command is run again.

Where the autoencoder goes: --export DIR, else the config's `export` when the run is exactly
the config (no --corpus, --set, --output, --model, ... changing it: `layerscan train` alone
rebuilds the packaged default), else <output>/artifact. The folder is printed at the end;
render with it by `layerscan render "prompt" --autoencoder DIR`."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a particle autoencoder",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", default="default", help="YAML config file, or a shipped one: default, tiny"
    )
    add_options(
        parser, DataConfig, "data (overrides the config's)", show_defaults=False, only=("corpus",)
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. train.lr=0.001 (repeatable; values parsed as YAML)",
    )
    add_options(
        parser, RunConfig, "run (overrides the config's)", show_defaults=False, only=RUN_FLAGS
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from <output>/checkpoints/last.ckpt"
    )
    add_overwrite_argument(parser)
    add_options(
        parser,
        TrainConfig,
        "Lightning (overrides the config's train section)",
        show_defaults=False,
        only=LIGHTNING_FLAGS,
    )
    parser.add_argument(
        "--cache-dir",
        help="where hidden-state caches live (default: $LAYERSCAN_CACHE or the user cache)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(
        parser,
        defaults="the config's data.language_model, data.device, "
        "data.dtype and data.trust_remote_code",
    )
    parser.set_defaults(run=run)


def config_from_args(args: argparse.Namespace):
    """The RunConfig named by --config, --set, the model flags and the shortcut flags.

    The config's own `export` folder is kept only for the config exactly as written (so a
    run with another corpus or any override never replaces the packaged autoencoder); a
    changed run exports to `<output>/artifact` unless --export (or --set export=) says.
    """
    from dataclasses import replace

    from layerscan.autoencoder.config import load_config

    overrides = list(args.overrides)
    for section, cls in (("data.", DataConfig), ("", RunConfig), ("train.", TrainConfig)):
        overrides += [f"{section}{k}={v}" for k, v in given_options(cls, args).items()]
    config = load_config(args.config, overrides)
    model = data_changes(args)
    if model:
        config = replace(config, data=replace(config.data, **model))
    exported = any(item.partition("=")[0].strip() == "export" for item in overrides)
    if config.export and not exported:
        written = {k: v for k, v in load_config(args.config).to_dict().items() if k != "export"}
        if {k: v for k, v in config.to_dict().items() if k != "export"} != written:
            config = replace(config, export="")
            note(
                f"layerscan: note: this run changes the config, so the autoencoder goes to "
                f"{config.output}/artifact, not to the config's export folder"
            )
    return config


def run(args: argparse.Namespace) -> int:
    from layerscan.autoencoder.training import train

    config = config_from_args(args)
    result = train(
        config,
        resume=args.resume,
        cache_root=args.cache_dir,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    if result.artifact is not None:
        print(result.report)
        print(f"autoencoder written to {result.artifact}")
    return 0
