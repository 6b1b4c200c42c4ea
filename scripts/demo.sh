#!/usr/bin/env bash
# Install authctl into .venv, create ./demo with a demo user, and serve it on 127.0.0.1:9091.
# Usage: bash scripts/demo.sh          (Ctrl-C stops the server; run it again to restart)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e .
AUTHCTL=.venv/bin/authctl
export AUTHCTL_CONFIG=demo/authctl.toml

if [ ! -f demo/authctl.toml ]; then
    "$AUTHCTL" init demo
    password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
    printf '%s\n' "$password" | "$AUTHCTL" user add demo \
        --displayname "Demo User" --email demo@example.com --group admins --password-stdin
    echo
    echo "demo user: demo   password: $password"
    echo "(shown once; change it with: $AUTHCTL --config demo/authctl.toml user passwd demo)"
    echo
fi
exec "$AUTHCTL" serve
