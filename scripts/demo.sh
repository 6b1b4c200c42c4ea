#!/usr/bin/env bash
# Install authctl into .venv, create a demo folder with a demo user, and show how to use it.
# Usage: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
AUTHCTL=.venv/bin/authctl

if [ ! -f demo/authctl.toml ]; then
    "$AUTHCTL" init demo
    password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
    printf '%s\n' "$password" | "$AUTHCTL" --config demo/authctl.toml user add demo \
        --displayname "Demo User" --email demo@example.com --group admins --password-stdin
    echo "demo user: demo  password: $password  (saved nowhere else; run 'user passwd demo' to change it)"
fi
"$AUTHCTL" --config demo/authctl.toml user list
