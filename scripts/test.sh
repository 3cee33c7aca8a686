#!/usr/bin/env bash
# Set up .venv (and Xvfb for the desktop-window tests, where apt-get can), then run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if ! command -v Xvfb >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing xvfb for the viewer tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb) >/dev/null \
    || echo "could not install xvfb; viewer tests will be skipped" >&2
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
