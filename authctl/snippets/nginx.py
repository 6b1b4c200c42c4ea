"""nginx: ``auth_request`` to authctl's ``/api/authz/auth-request``.

nginx's sub-request is always a GET with the client's headers, so the original method and URL
travel as ``X-Original-Method``/``X-Original-URL``; the client's ``Content-Length`` is cleared
and the body not passed, or authctl would wait for a body that never comes. authctl answers
"sign in first" with 401 + ``Location``, which ``error_page 401`` and a named location turn
into the redirect (any other non-2xx code would be a 500 in nginx); a 401 without
``Location`` (a refused token or Basic login) stays a 401 with authctl's ``WWW-Authenticate``,
which ``auth_request`` copies to the reply (a plain ``error_page 401 =302`` made it a 302 with
an empty ``Location``). ``proxy_set_header`` is not inherited into a location that sets any of
its own, so every location spells out all of its headers, including ``Connection ""`` for the
upstream keepalive pools (proxies.md §4, pitfall 3).

The judged URL is built from ``$http_host``, which nginx does not check against the host it
routes by (an absolute-form ``GET https://app/admin`` with ``Host: public`` is routed to app)
and in which it keeps anything after the port (``Host: app:8443?``). So every server first
refuses (421) a Host that is not ``host[:port]`` naming ``$host``, and (400) an h2c upgrade;
the auth location clears the client's other forwarding headers.
"""

from __future__ import annotations

from pathlib import Path

from authctl.snippets import FORWARDING_HEADERS
from authctl.snippets import H2C_UPGRADE_RE
from authctl.snippets import IDENTITY_HEADERS
from authctl.snippets import Plan
from authctl.snippets import Rendered
from authctl.snippets import find_binary
from authctl.snippets import header
from authctl.snippets import indent
from server.core.endpoints import AUTH_REQUEST

AUTH_LOCATION = "/internal/authctl/authz"
AUTHCTL_UPSTREAM = "authctl"
APP_UPSTREAM = "authctl_app"
#: The named location authctl's 401 is handled in (redirect to the portal, or 401 as is).
REFUSED_LOCATION = "@authctl_401"
TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def _var(name: str) -> str:
    """``Remote-Groups`` -> ``$authctl_remote_groups``."""
    return "$authctl_" + name.lower().replace("-", "_")


def _answer(name: str) -> str:
    """``Remote-Groups`` -> ``$upstream_http_remote_groups`` (authctl's answer header)."""
    return "$upstream_http_" + name.lower().replace("-", "_")


def _listen(plan: Plan) -> str:
    where = plan.listen.port if plan.listen.address is None else plan.listen.hostport
    return f"listen {where} ssl;"


def _upstream_server(plan: Plan) -> str:
    if plan.authctl.unix is not None:
        return f"unix:{plan.authctl.unix}"
    return plan.authctl.hostport


def _tls(plan: Plan) -> list[str]:
    return [
        f"ssl_certificate     {plan.tls_cert};",
        f"ssl_certificate_key {plan.tls_key};",
    ]


def _proxy_headers(forwarded_for: str) -> list[str]:
    return [
        "proxy_http_version 1.1;",
        'proxy_set_header Connection "";          # keep the upstream connection alive',
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        f"proxy_set_header X-Forwarded-For {forwarded_for};",
    ]


#: Forwarding headers the auth location sets itself; the client's others are cleared.
OWN_FORWARDING = {
    "X-Original-URL": "$scheme://$http_host$request_uri",
    "X-Original-Method": "$request_method",
    "X-Forwarded-Proto": "$scheme",
    "X-Forwarded-Host": "$http_host",
    "X-Forwarded-Uri": "$request_uri",
    "X-Forwarded-Method": "$request_method",
}


def _guards() -> list[str]:
    """The server-level refusals every site (protected and portal) starts with."""
    return [
        "# The judged URL is built from the Host header: refuse (421) one that is not",
        "# host[:port] (nginx takes `app:8443?` or `app:8443/x` in Host) or that names another",
        "# host than the one nginx routed by ($host, from an absolute-form target if any).",
        "if ($authctl_host_ok = 0) { return 421; }",
        "# h2c upgrade: a tunnel to the app whose requests authctl would never see. nginx 1.22",
        "# reads only the first Upgrade line; every h2c upgrade also carries HTTP2-Settings.",
        f'if ($http_upgrade ~* "{H2C_UPGRADE_RE}") {{ return 400; }}',
        "if ($http_http2_settings) { return 400; }",
    ]


def _refused() -> list[str]:
    """Where authctl's 401 goes: the portal redirect, or the 401 itself for a script."""
    return [
        '# authctl\'s 401: "sign in first" carries Location (the portal with rd=<this URL>)',
        "# and becomes a 302 there; a refused token or Basic login carries none and stays",
        "# 401 with authctl's one WWW-Authenticate (auth_request copies it to the reply): a",
        "# script wants a status and a challenge, not a redirect to an empty Location.",
        f"location {REFUSED_LOCATION} {{",
        "    if ($authctl_redirect) { return 302 $authctl_redirect; }",
        "    return 401;",
        "}",
    ]


def _no_client_forwarding(skip: tuple[str, ...] = ()) -> list[str]:
    """Clear the client's forwarding headers: authctl must judge what nginx routed."""
    return [f'proxy_set_header {name} "";' for name in FORWARDING_HEADERS if name not in skip]


def dropin(plan: Plan) -> str:
    """The upstreams and server blocks, for the ``http { }`` block of nginx.conf."""
    lines = header(plan, "authctl forward auth for nginx (auth_request).")
    lines += [
        "# Put this inside the http { } block of nginx.conf (or include it from there). It needs",
        "# ngx_http_auth_request_module, which Debian's nginx has. nginx drops request headers",
        "# with underscores (underscores_in_headers off), so Remote_User never reaches the app.",
        "",
        "# authctl, and the app, each with a pool of kept-alive connections: without keepalive",
        "# every request pays a new TCP connection for its auth sub-request.",
        f"upstream {AUTHCTL_UPSTREAM} {{",
        f"    server {_upstream_server(plan)};",
        "    keepalive 16;",
        "}",
        "",
        f"upstream {APP_UPSTREAM} {{",
        f"    server {plan.upstream.hostport};",
        "    keepalive 16;",
        "}",
        "",
        "# 1 when the Host header is host[:port] and its host is the one nginx routed by ($host).",
        'map "$http_host|$host" $authctl_host_ok {',
        "    default 0;",
        '    "~*^([a-z0-9.-]+)(:[0-9]{1,5})?\\|\\1$" 1;',
        "}",
        "",
        "# ---- The portal, served by authctl itself ----",
        "server {",
        f"    {_listen(plan)}",
        f"    server_name {' '.join(plan.portals)};",
        *("    " + line for line in _tls(plan)),
        *("    " + line for line in _guards()),
        "",
        "    location / {",
        f"        proxy_pass http://{AUTHCTL_UPSTREAM};",
        *("        " + line for line in _proxy_headers("$remote_addr")),
        "        # identity headers come from authctl only, never from the client",
        *(f'        proxy_set_header {name} "";' for name in IDENTITY_HEADERS),
        "        # nor does authctl get the client's idea of which request to judge",
        *(
            "        " + line
            for line in _no_client_forwarding(("X-Forwarded-Proto", "X-Forwarded-Host"))
        ),
        "    }",
        "}",
        "",
        "# ---- Protected sites: every request asks authctl first ----",
        "server {",
        f"    {_listen(plan)}",
        f"    server_name {' '.join(plan.hosts)};",
        *("    " + line for line in _tls(plan)),
        *("    " + line for line in _guards()),
        "",
        "    # The auth sub-request; `internal` keeps clients from calling it directly.",
        f"    location = {AUTH_LOCATION} {{",
        "        internal;",
        f"        proxy_pass http://{AUTHCTL_UPSTREAM}{AUTH_REQUEST};",
        "        proxy_http_version 1.1;",
        '        proxy_set_header Connection "";',
        "        # The sub-request is a GET without a body; the client's Content-Length must not",
        "        # reach authctl, or it waits for a body that never comes.",
        "        proxy_pass_request_body off;",
        '        proxy_set_header Content-Length "";',
        "        # What authctl decides on: the original method and the full original URL, from",
        "        # the Host checked above and the request line nginx routed; the same in the",
        "        # X-Forwarded-* triple. Every other forwarding header of the client is cleared.",
        *(f"        proxy_set_header {name} {value};" for name, value in OWN_FORWARDING.items()),
        *("        " + line for line in _no_client_forwarding(tuple(OWN_FORWARDING))),
        "        proxy_set_header X-Forwarded-For $remote_addr;",
        "    }",
        "",
        "    location / {",
        f"        auth_request {AUTH_LOCATION};",
        "        # the identity authctl answered with (empty values for anonymous bypass)",
        *(f"        auth_request_set {_var(name)} {_answer(name)};" for name in IDENTITY_HEADERS),
        "        # 401 goes to @authctl_401: a redirect when authctl named the portal",
        "        auth_request_set $authctl_redirect $upstream_http_location;",
        f"        error_page 401 = {REFUSED_LOCATION};",
        "",
        f"        proxy_pass http://{APP_UPSTREAM};",
        *("        " + line for line in _proxy_headers("$proxy_add_x_forwarded_for")),
        "        # Always set, so whatever the client sent is replaced; an empty value (anonymous",
        "        # bypass) drops the header.",
        *(f"        proxy_set_header {name} {_var(name)};" for name in IDENTITY_HEADERS),
        "    }",
        "    # Every other location of these sites needs the same auth_request and error_page",
        "    # lines.",
        "",
        *("    " + line for line in _refused()),
        "}",
    ]
    return "\n".join(lines) + "\n"


def standalone(plan: Plan, out_dir: Path) -> Rendered:
    """nginx.conf for ``nginx -p DIR -c DIR/nginx.conf``, pid, logs and temp files in DIR."""
    logs = out_dir / "logs"
    tmp = out_dir / "tmp"
    lines = header(plan, "authctl forward auth for nginx (auth_request): standalone nginx.conf.")
    binary = find_binary("nginx")
    start = [
        binary,
        "-p",
        f"{out_dir}/",
        "-c",
        str(out_dir / "nginx.conf"),
        "-e",
        str(logs / "error.log"),
    ]
    lines += [
        f"# Start: {' '.join(start)}",
        "",
        "daemon off;",
        "worker_processes 1;",
        f"pid {out_dir / 'nginx.pid'};",
        f"error_log {logs / 'error.log'} warn;",
        "events { worker_connections 1024; }",
        "",
        "http {",
        f"    access_log {logs / 'access.log'};",
        *(f"    {name}_temp_path {tmp / name};" for name in TEMP_DIRS),
        "",
        indent(dropin(plan), "    ").rstrip("\n"),
        "}",
    ]
    check = [binary, "-t", "-p", f"{out_dir}/", "-c", str(out_dir / "nginx.conf"), "-e", "stderr"]
    return Rendered(
        files={"nginx.conf": "\n".join(lines) + "\n"},
        start=start,
        check=check,
        folders=("logs", "tmp"),
    )
