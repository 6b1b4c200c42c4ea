"""Traefik v3: a ``forwardAuth`` middleware to ``/api/authz/forward-auth`` (file provider).

Traefik sends ``X-Forwarded-Method/Proto/Host/Uri/For`` and the client's headers, and copies
``authResponseHeaders`` onto the request on a 2xx, replacing the client's; on anything else it
returns authctl's answer as it is (302 to the portal, 401, 403), and 500 when authctl is down.
``trustForwardHeader: false``: the ``X-Forwarded-*`` authctl reads are built by forwardAuth
from the request Traefik routed, never taken from the request's headers (which a load balancer
listed in the entry point's ``forwardedHeaders.trustedIPs`` would pass on from its clients).
A ``headers`` middleware runs first and deletes every ``Remote-*`` the client sent (an empty
value deletes a header in Traefik), and the client's ``X-Original-*``, ``Forwarded`` and the
``X-Forwarded-*`` Traefik does not set itself, which forwardAuth would otherwise copy to
authctl, on the portal and on every protected or bypass site.
"""

from __future__ import annotations

import re
from pathlib import Path

from authctl.snippets import FORWARDING_HEADERS
from authctl.snippets import IDENTITY_HEADERS
from authctl.snippets import STRIPPED_HEADERS
from authctl.snippets import Plan
from authctl.snippets import Rendered
from authctl.snippets import find_binary
from authctl.snippets import header
from authctl.snippets import require_tcp
from server.core.endpoints import FORWARD_AUTH

ENTRY_POINT = "websecure"
#: Set by Traefik's entry point itself (the client's are dropped there): kept for the app.
TRAEFIK_SETS = ("X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port", "X-Forwarded-Server")
#: Client headers the strip middleware deletes: identity and forwarding headers.
STRIP = STRIPPED_HEADERS + tuple(h for h in FORWARDING_HEADERS if h not in TRAEFIK_SETS)
#: Above the default priority (the rule's length), so ``*.domain`` never takes the portal.
PORTAL_PRIORITY = 10000


def _rule(hosts: tuple[str, ...]) -> str:
    parts = []
    for host in hosts:
        if host.startswith("*."):
            parts.append(f"HostRegexp(`^[a-z0-9-]+{re.escape(host[1:])}$`)")
        else:
            parts.append(f"Host(`{host}`)")
    return " || ".join(parts)


def _quote(text: str) -> str:
    """A single-quoted YAML scalar (backslashes are literal there)."""
    return "'" + text.replace("'", "''") + "'"


def dropin(plan: Plan) -> str:
    """The dynamic configuration: middlewares, routers, services and the certificate."""
    require_tcp(plan, "Traefik")
    strip = ", ".join(f'{name}: ""' for name in STRIP)
    lines = header(plan, "authctl forward auth for Traefik v3 (forwardAuth, file provider).")
    lines += [
        "# This is dynamic configuration: load it with providers.file (the entry point is",
        f"# called {ENTRY_POINT!r} here; rename it to yours).",
        "#",
        "# The same with Docker labels (on the authctl container, then on each app):",
        f"#   traefik.http.middlewares.authctl.forwardAuth.address=http://authctl:9091{FORWARD_AUTH}",
        "#   traefik.http.middlewares.authctl.forwardAuth.trustForwardHeader=false",
        "#   traefik.http.middlewares.authctl.forwardAuth.authResponseHeaders="
        + ",".join(IDENTITY_HEADERS),
        *(
            f"#   traefik.http.middlewares.authctl-strip.headers.customRequestHeaders.{name}="
            for name in STRIP
        ),
        "#   traefik.http.routers.app.middlewares=authctl-strip@docker,authctl@docker",
        "#   traefik.http.routers.authctl.rule=Host(`auth.example.com`)",
        "#   traefik.http.routers.authctl.middlewares=authctl-strip@docker",
        "",
        "http:",
        "  middlewares:",
        "    # Identity headers come from authctl only, and which request authctl judges is",
        "    # Traefik's word only (a client's X-Original-URL decides on /api/verify): an empty",
        "    # value deletes the client's header.",
        "    authctl-strip:",
        "      headers:",
        f"        customRequestHeaders: {{{strip}}}",
        "    authctl:",
        "      forwardAuth:",
        f"        address: {_quote(plan.authctl.http_url + FORWARD_AUTH)}",
        "        # X-Forwarded-* to authctl from the routed request, never from its headers",
        "        trustForwardHeader: false",
        f"        authResponseHeaders: [{', '.join(IDENTITY_HEADERS)}]",
        "",
        "  routers:",
        "    # the portal, served by authctl itself",
        "    authctl-portal:",
        f"      rule: {_quote(_rule(plan.portals))}",
        f"      entryPoints: [{ENTRY_POINT}]",
        f"      priority: {PORTAL_PRIORITY}",
        "      middlewares: [authctl-strip]",
        "      service: authctl",
        "      tls: {}",
        "    # protected sites: every request asks authctl first",
        "    authctl-protected:",
        f"      rule: {_quote(_rule(plan.hosts))}",
        f"      entryPoints: [{ENTRY_POINT}]",
        "      middlewares: [authctl-strip, authctl]",
        "      service: authctl-app",
        "      tls: {}",
        "",
        "  services:",
        "    authctl:",
        "      loadBalancer:",
        f"        servers: [{{url: {_quote(plan.authctl.http_url)}}}]",
        "    authctl-app:",
        "      loadBalancer:",
        f"        servers: [{{url: {_quote(plan.upstream.http_url)}}}]",
        "",
        "tls:",
        "  certificates:",
        f"    - certFile: {_quote(str(plan.tls_cert))}",
        f"      keyFile: {_quote(str(plan.tls_key))}",
        "  stores:",
        "    default:",
        "      defaultCertificate:",
        f"        certFile: {_quote(str(plan.tls_cert))}",
        f"        keyFile: {_quote(str(plan.tls_key))}",
    ]
    return "\n".join(lines) + "\n"


def standalone(plan: Plan, out_dir: Path) -> Rendered:
    """traefik.yml (static) and traefik-dynamic.yml, for ``traefik --configFile``."""
    binary = find_binary("traefik")
    static = out_dir / "traefik.yml"
    start = [binary, f"--configFile={static}"]
    lines = header(plan, "authctl forward auth for Traefik v3: static configuration.")
    lines += [
        f"# Start: {' '.join(start)}",
        "",
        "global:",
        "  checkNewVersion: false",
        "  sendAnonymousUsage: false",
        "log:",
        "  level: WARN",
        f"  filePath: {_quote(str(out_dir / 'logs' / 'traefik.log'))}",
        "entryPoints:",
        f"  {ENTRY_POINT}:",
        f"    address: {_quote(plan.listen.hostport)}",
        "providers:",
        "  file:",
        f"    filename: {_quote(str(out_dir / 'traefik-dynamic.yml'))}",
        "    watch: false",
    ]
    return Rendered(
        files={"traefik.yml": "\n".join(lines) + "\n", "traefik-dynamic.yml": dropin(plan)},
        start=start,
        check=None,
        folders=("logs",),
    )
