"""`layerscan eval`: held-out reconstruction R² of a trained autoencoder, per layer and length."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval", help="measure an autoencoder's reconstruction R² on held-out text",
        description="Per-layer reconstruction R² (1 - SSE/SST over tokens and hidden dims) by "
                    "prompt length, beside the mean-pool bound. Without --corpus, uses the "
                    "validation split of the corpus the autoencoder was trained on; with "
                    "--corpus, every window of that corpus.")
    parser.add_argument("--autoencoder", help="artifact folder (default: the packaged one "
                                              "for the embedded model)")
    parser.add_argument("--corpus", help="held-out corpus (.txt, .jsonl, folder, hf:NAME)")
    parser.add_argument("--model", help="language model (default: the one it was trained on)")
    parser.add_argument("--json", dest="json_path", help="also write the metrics as JSON")
    parser.add_argument("--cache-dir", help="where hidden-state caches live")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from layerscan.autoencoder.artifact import load_autoencoder
    from layerscan.autoencoder.config import DataConfig, RunConfig, TrainConfig, from_dict
    from layerscan.autoencoder.data import HiddenStateDataModule
    from layerscan.autoencoder.evaluation import evaluate, format_metrics
    from layerscan.files import atomic_path, check_output

    if args.json_path:
        check_output(args.json_path, flag="--json")  # before any expensive work
    trained = load_autoencoder(args.autoencoder)
    recorded = trained.config.training.get("run_config", {})
    data = from_dict(DataConfig, recorded["data"]) if "data" in recorded else DataConfig(
        language_model=trained.config.model_id)
    train_cfg = from_dict(TrainConfig, recorded["train"]) if "train" in recorded \
        else TrainConfig()
    if args.corpus:
        data.corpus = args.corpus
    if args.model:
        data.language_model = args.model
    data.normalization = trained.config.normalization
    config = RunConfig(model=trained.config.model, data=data, train=train_cfg)
    datamodule = HiddenStateDataModule(config, args.cache_dir, progress=not args.no_progress)
    datamodule.setup()
    if datamodule.info["model_id"] != trained.config.model_id \
            or datamodule.cache.d_model != trained.config.d_model:
        from layerscan.errors import LayerscanError

        raise LayerscanError(
            f"the autoencoder was trained on {trained.config.model_id} (hidden size "
            f"{trained.config.d_model}) but the states come from {datamodule.info['model_id']} "
            f"(hidden size {datamodule.cache.d_model}); pass the matching --model")
    indices = list(range(len(datamodule.cache))) if args.corpus else datamodule.val_indices
    metrics = evaluate(trained.model, datamodule.cache, indices)
    print(format_metrics(metrics))
    if args.json_path:
        with atomic_path(args.json_path) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    return 0
