#!/usr/bin/env bash
# Set up .venv (and Xvfb, node and Chromium for the window and HTML tests, where apt-get can),
# then run every test; `bash scripts/test.sh -m "not slow"` is the quick loop.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
if ! command -v Xvfb >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing xvfb for the viewer tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb) >/dev/null \
    || echo "could not install xvfb; viewer tests will be skipped" >&2
fi
if ! command -v node >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing nodejs for the HTML viewer tests..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs) >/dev/null \
    || echo "could not install nodejs; the HTML script tests will be skipped" >&2
fi
if ! command -v chromedriver >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium and chromium-driver for the HTML viewer's browser tests..."
  (apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >/dev/null \
    || echo "could not install chromium; the HTML browser tests will be skipped" >&2
fi
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
