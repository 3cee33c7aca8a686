"""`layerscan eval`: held-out reconstruction R² of a trained autoencoder, per layer and length."""

from __future__ import annotations

import argparse

from layerscan.cli.common import add_model_arguments, data_changes, note


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure an autoencoder's reconstruction R² on held-out text",
        description="Per-layer reconstruction R² (1 - SSE/SST over tokens and hidden dims) by "
        "prompt length, beside the mean-pool bound. Without --corpus, uses the "
        "validation split of the corpus the autoencoder was trained on; with "
        "--corpus, every window of that corpus.",
    )
    parser.add_argument(
        "--autoencoder", help="artifact folder (default: the packaged one for the embedded model)"
    )
    parser.add_argument("--corpus", help="held-out corpus (.txt, .jsonl, folder, hf:NAME)")
    parser.add_argument("--json", dest="json_path", help="also write the metrics as JSON")
    parser.add_argument("--cache-dir", help="where hidden-state caches live")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_arguments(
        parser, defaults="the language model, device and precision the autoencoder was trained with"
    )
    parser.set_defaults(run=run)


def check_matches(artifact_config, language_model: str) -> None:
    """Raise a one-line LayerscanError when the autoencoder was trained on another model's
    sizes; reads the model's config only, never its weights."""
    from layerscan.autoencoder.capture.loading import model_config
    from layerscan.core.errors import LayerscanError

    model_id, config = model_config(language_model)
    sizes = (config.hidden_size, config.num_hidden_layers)
    trained = (artifact_config.d_model, artifact_config.n_layers)
    if model_id != artifact_config.model_id or sizes != trained:
        raise LayerscanError(
            f"the autoencoder was trained on {artifact_config.model_id} (hidden size "
            f"{trained[0]}, {trained[1]} layers) but the states would come from {model_id} "
            f"(hidden size {sizes[0]}, {sizes[1]} layers); pass the matching --model"
        )


def run(args: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from layerscan.autoencoder.artifact import load_autoencoder
    from layerscan.autoencoder.config import DataConfig, RunConfig, TrainConfig, from_dict
    from layerscan.autoencoder.datamodule import HiddenStateDataModule
    from layerscan.autoencoder.evaluation import evaluate, format_metrics
    from layerscan.core.outputs import atomic_path, check_output

    if args.json_path:
        check_output(args.json_path, flag="--json")  # before any expensive work
    trained = load_autoencoder(args.autoencoder)
    recorded = trained.config.training.get("run_config", {})
    data = (
        from_dict(DataConfig, recorded["data"])
        if "data" in recorded
        else DataConfig(language_model=trained.config.model_id)
    )
    train_cfg = from_dict(TrainConfig, recorded["train"]) if "train" in recorded else TrainConfig()
    changes = {"normalization": trained.config.normalization}
    if args.corpus:
        changes["corpus"] = args.corpus
    changes.update(data_changes(args))
    data = replace(data, **changes)
    check_matches(trained.config, data.language_model)  # before the model loads
    config = RunConfig(model=trained.config.model, data=data, train=train_cfg)
    what = (
        f"every window of {data.corpus}"
        if args.corpus
        else f"the held-out documents of its training corpus ({data.corpus})"
    )
    note(
        f"evaluating {args.autoencoder or 'the packaged autoencoder'} on {what}; a corpus "
        f"or hidden states not cached yet are built first"
        + (
            " (default corpus: 5-7 min on a CPU, once, for the embedded model, whose text ships "
            "with layerscan; about 15 min for another model, which writes its own first)"
            if data.corpus == "default"
            else ""
        )
    )
    datamodule = HiddenStateDataModule(config, args.cache_dir, progress=not args.no_progress)
    datamodule.setup()
    indices = list(range(len(datamodule.cache))) if args.corpus else datamodule.val_indices
    metrics = evaluate(trained.model, datamodule.cache, indices)
    print(format_metrics(metrics))
    if args.json_path:
        with atomic_path(args.json_path) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return 0
