"""One module per `layerscan` subcommand; each exposes `register(subparsers)`."""
