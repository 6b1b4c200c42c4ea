"""HAProxy: a small Lua action (``lua.authctl_auth``) asking ``/api/authz/auth-request``.

HAProxy has no forward-auth of its own, and the usual Lua plugins (haproxy-auth-request,
haproxy-lua-http) are in no package registry; HAProxy ≥ 2.5 has an HTTP client in its Lua API,
so authctl ships its own script (``haproxy-forward-auth.lua``, about 80 lines of code). The
frontend then turns authctl's answer into HAProxy rules: 2xx passes, 401 + ``Location``
redirects to the portal (302, or 303 for methods other than GET/HEAD), 401 without it (a
refused token or Basic login) is returned as 401 with authctl's ``WWW-Authenticate``, 403
denies, and anything else, including authctl being unreachable, is refused with 500. Nothing
is ever let through by default.

HAProxy routes by the Host header's text before ``:``, so the frontend first refuses a Host
that is not exactly one ``host[:port]`` (the Lua once glued ``Host: app:8443/static/x?`` into
the judged URL), an h2c upgrade, and drops the client's forwarding headers; the Lua builds the
judged URL from the validated Host and refuses an absolute target naming another host (421).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from authctl.snippets import FORWARDING_HEADERS
from authctl.snippets import H2C_UPGRADE_RE
from authctl.snippets import HOST_HEADER_RE
from authctl.snippets import STRIPPED_HEADERS
from authctl.snippets import Plan
from authctl.snippets import Rendered
from authctl.snippets import find_binary
from authctl.snippets import header
from authctl.snippets import require_tcp
from server.core.endpoints import AUTH_REQUEST

LUA_NAME = "authctl-forward-auth.lua"
COMBINED_NAME = "authctl-combined.pem"


def lua_script() -> str:
    """The Lua forward-auth action shipped with authctl."""
    return files("authctl.snippets").joinpath("haproxy-forward-auth.lua").read_text("utf-8")


def _frontend(plan: Plan, crt: str) -> list[str]:
    bind = f"{plan.listen.hostport} ssl crt {crt} alpn h2,http/1.1"
    portal = "authctl_portal"
    guarded = "authctl_protected !authctl_portal"
    lines = [
        "frontend authctl_https",
        "    mode http",
        f"    bind {bind}",
        "",
        "    # The judged URL is built from the Host header and HAProxy routes by it: refuse one",
        "    # that is not exactly one host[:port] (`Host: app:8443/static/x?` was judged as",
        "    # /static/x, a duplicate or comma-joined Host routes by one name, judges another).",
        "    http-request deny deny_status 400 if !{ req.fhdr_cnt(host) eq 1 }",
        f"    http-request deny deny_status 400 if !{{ req.fhdr(host) -m reg {HOST_HEADER_RE} }}",
        "    # h2c upgrade: a tunnel to the app whose requests authctl would never see (every",
        "    # Upgrade line is checked; an h2c upgrade also carries HTTP2-Settings).",
        "    http-request deny deny_status 400 if "
        f"{{ req.hdr(upgrade) -m reg -i {H2C_UPGRADE_RE} }}",
        "    http-request deny deny_status 400 if { req.hdr_cnt(http2-settings) gt 0 }",
        "",
        "    # Which request to judge is HAProxy's word only: drop the client's forwarding",
        "    # headers (the portal is authctl too), then set our own.",
        *(f"    http-request del-header {name}" for name in FORWARDING_HEADERS),
        "    # Identity headers come from authctl only: drop what the client sent, on every",
        "    # site (both spellings: some apps read Remote_User like Remote-User).",
        *(f"    http-request del-header {name}" for name in STRIPPED_HEADERS),
        "    # What the app and the portal are told about the original request.",
        "    http-request set-header X-Forwarded-Proto https",
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)]",
        "    http-request set-header X-Forwarded-For %[src]",
        "",
        f"    acl {portal} hdr(host),field(1,:) -i {' '.join(plan.portals)}",
    ]
    if plan.exact_hosts:
        lines.append(
            f"    acl authctl_protected hdr(host),field(1,:) -i {' '.join(plan.exact_hosts)}"
        )
    for wildcard in plan.wildcard_hosts:
        lines.append(f"    acl authctl_protected hdr(host),field(1,:) -i -m end {wildcard[1:]}")
    lines += [
        "",
        "    # Ask authctl (the original URL and method, the client's cookie and Authorization).",
        f"    http-request lua.authctl_auth {plan.authctl.http_url}{AUTH_REQUEST} if {guarded}",
        "    acl authctl_allow    var(txn.authctl_status) -m int 200:299",
        "    acl authctl_sign_in  var(txn.authctl_status) -m int 401",
        "    acl authctl_deny     var(txn.authctl_status) -m int 403",
        "    acl authctl_location var(txn.authctl_location) -m found",
        "    acl authctl_challenge var(txn.authctl_challenge) -m found",
        "    # the Lua refuses a Host it cannot judge (400) or one that is not the request's (421)",
        "    acl authctl_bad_host var(txn.authctl_status) -m int 400",
        "    acl authctl_misdirected var(txn.authctl_status) -m int 421",
        f"    http-request deny deny_status 400 if {guarded} authctl_bad_host",
        f"    http-request deny deny_status 421 if {guarded} authctl_misdirected",
        "    # 401 + Location: sign in first, at the portal with rd=<this URL>",
        "    http-request redirect location %[var(txn.authctl_location)] code 302 "
        f"if {guarded} authctl_sign_in authctl_location METH_GET",
        "    http-request redirect location %[var(txn.authctl_location)] code 303 "
        f"if {guarded} authctl_sign_in authctl_location !METH_GET",
        "    # 401 without Location (a refused token or Basic login): the script gets the 401",
        "    # with authctl's WWW-Authenticate challenge, not a redirect and not a bare 401",
        '    http-request return status 401 content-type "text/plain; charset=utf-8" '
        'string "401 Unauthorized" hdr WWW-Authenticate "%[var(txn.authctl_challenge)]" '
        f"if {guarded} authctl_sign_in authctl_challenge",
        f"    http-request deny deny_status 401 if {guarded} authctl_sign_in",
        f"    http-request deny deny_status 403 if {guarded} authctl_deny",
        "    # anything else (authctl down: status 0, or an unexpected answer) is refused",
        f"    http-request deny deny_status 500 if {guarded} !authctl_allow",
        "",
        f"    use_backend authctl_portal if {portal}",
        "    use_backend authctl_app if authctl_protected",
        "",
        "backend authctl_portal",
        "    mode http",
        f"    server authctl {plan.authctl.hostport}",
        "",
        "backend authctl_app",
        "    mode http",
        f"    server app {plan.upstream.hostport}",
    ]
    return lines


def _global(lua_path: str) -> list[str]:
    return [
        "global",
        f"    lua-load {lua_path}",
        "    # authctl is asked over plain HTTP; this only keeps the Lua httpclient from",
        "    # looking for a CA bundle at start-up.",
        "    httpclient.ssl.verify none",
        "    httpclient.resolvers.prefer ipv4",
    ]


def dropin(plan: Plan) -> str:
    """The ``global`` lines, the frontend and the two backends, for haproxy.cfg."""
    require_tcp(plan, "HAProxy")
    lines = header(plan, "authctl forward auth for HAProxy >= 2.5 (Lua httpclient).")
    lines += [
        f"# The Lua script: `authctl proxy-snippet haproxy --out DIR` writes DIR/{LUA_NAME}",
        "# (with a standalone haproxy.cfg); copy it to /etc/haproxy/. HAProxy wants the",
        f"# certificate and key in one file: cat {plan.tls_cert} {plan.tls_key} > "
        f"/etc/haproxy/{COMBINED_NAME}",
        "",
        "# Add to your global section:",
        *_global(f"/etc/haproxy/{LUA_NAME}"),
        "",
        *_frontend(plan, f"/etc/haproxy/{COMBINED_NAME}"),
    ]
    return "\n".join(lines) + "\n"


def standalone(plan: Plan, out_dir: Path) -> Rendered:
    """haproxy.cfg with the Lua script and the combined PEM beside it, for ``haproxy -db``."""
    require_tcp(plan, "HAProxy")
    binary = find_binary("haproxy")
    config = out_dir / "haproxy.cfg"
    start = [binary, "-db", "-f", str(config)]
    lines = header(plan, "authctl forward auth for HAProxy >= 2.5: standalone haproxy.cfg.")
    lines += [
        f"# Start: {' '.join(start)}",
        "",
        *_global(str(out_dir / LUA_NAME)),
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    option http-keep-alive",
        "",
        *_frontend(plan, str(out_dir / COMBINED_NAME)),
    ]
    combined = plan.tls_cert.read_bytes().rstrip(b"\n") + b"\n" + plan.tls_key.read_bytes()
    return Rendered(
        files={
            "haproxy.cfg": "\n".join(lines) + "\n",
            LUA_NAME: lua_script(),
            COMBINED_NAME: combined,
        },
        start=start,
        check=[binary, "-c", "-f", str(config)],
        secret_files=(COMBINED_NAME,),
    )
