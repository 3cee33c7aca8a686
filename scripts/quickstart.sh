#!/usr/bin/env bash
# The main job: set up .venv, then render the embedded default model's layer-time movie.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/layerscan render "$@"
