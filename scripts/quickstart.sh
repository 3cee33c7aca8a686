#!/usr/bin/env bash
# The main job: set up .venv, then render the embedded default model's layer-time movie.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "quickstart 1/2: the Python environment in .venv"
bash scripts/setup_env.sh
echo "quickstart 2/2: layerscan render $* (loads the model, scans the prompt, renders; each stage reports)"
exec .venv/bin/layerscan render "$@"
