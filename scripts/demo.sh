#!/usr/bin/env bash
# Install authctl into .venv, create ./demo with a demo user, and serve it on 127.0.0.1:9091.
# Usage: bash scripts/demo.sh [--port N]   (Ctrl-C stops the server; run it again to restart)
#   --port N   the HTTPS port your proxy will listen on (default 443), written into the demo's
#              portal_url and default_redirect_url when demo/ is first made (authctl init --port)
set -euo pipefail
cd "$(dirname "$0")/.."

port=443
while [ $# -gt 0 ]; do
    case "$1" in
        --port) [ $# -ge 2 ] || { echo "demo.sh: --port needs a number" >&2; exit 2; }
                port=$2; shift 2 ;;
        --port=*) port=${1#--port=}; shift ;;
        *) echo "usage: bash scripts/demo.sh [--port N]" >&2; exit 2 ;;
    esac
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q -c constraints.txt --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt -e .   # the versions CI tests (constraints.txt)
AUTHCTL=.venv/bin/authctl
export AUTHCTL_CONFIG=demo/authctl.toml

if [ ! -f demo/authctl.toml ]; then
    "$AUTHCTL" init demo --port "$port"
    password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
    printf '%s\n' "$password" | "$AUTHCTL" user add demo \
        --displayname "Demo User" --email demo@example.com --group admins --password-stdin
    echo
    echo "demo user: demo   password: $password"
    echo "(shown once; change it with: $AUTHCTL --config demo/authctl.toml user passwd demo)"
    echo
elif [ "$port" != 443 ]; then
    echo "demo/authctl.toml exists: --port $port is not applied (remove demo/ to start over)" >&2
fi
exec "$AUTHCTL" serve
