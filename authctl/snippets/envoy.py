"""Envoy: the ``ext_authz`` HTTP filter to ``/api/authz/ext-authz``.

Envoy asks with the original method and ``path_prefix`` + the original path and query, the
``Host`` of the request, and only the headers it is allowed to pass (the session cookie must be
listed, or every request looks anonymous). It allows on 200 only and copies the ``remote-*``
answer headers to the request; otherwise it answers with authctl's status, ``Location`` and
``Set-Cookie``. Envoy does not remove client-sent headers that the auth answer lacks, and a
route's ``request_headers_to_remove`` runs after ext_authz (deleting authctl's copy too), so a
``header_mutation`` filter before ext_authz removes them (proxies.md §3), and headers with
underscores are dropped at the connection manager. authctl down: 503, never a pass.

No guard of its own is needed against request smuggling (checked by tests/e2e/
test_smuggling.py): Envoy routes and asks authctl by the same ``:authority`` (virtual hosts
name exact ``host`` and ``host:port``), sends authctl only the ``allowed_headers`` (never a
client's ``X-Original-*``/``X-Forwarded-Host``), and drops ``Upgrade: h2c`` itself.
"""

from __future__ import annotations

from pathlib import Path

from authctl.snippets import IDENTITY_HEADERS
from authctl.snippets import HostPort
from authctl.snippets import Plan
from authctl.snippets import Rendered
from authctl.snippets import find_binary
from authctl.snippets import header
from authctl.snippets import require_tcp
from server.core.endpoints import EXT_AUTHZ

T = "type.googleapis.com/envoy.extensions"
HCM = f"{T}.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _domains(plan: Plan, hosts: tuple[str, ...]) -> str:
    names: list[str] = []
    for host in hosts:
        names.append(host)
        if plan.listen.port != 443:
            names.append(f"{host}:{plan.listen.port}")  # the Host header carries the port
        else:
            names.append(f"{host}:443")
    return "[" + ", ".join(f'"{n}"' for n in names) + "]"


def _cluster(name: str, where: HostPort) -> list[str]:
    kind = "STATIC" if where.is_ip else "STRICT_DNS"
    return [
        f"  - name: {name}",
        f"    type: {kind}",
        "    connect_timeout: 2s",
        "    load_assignment:",
        f"      cluster_name: {name}",
        "      endpoints:",
        "      - lb_endpoints:",
        "        - endpoint:",
        "            address:",
        f'              socket_address: {{address: "{where.host}", port_value: {where.port}}}',
    ]


def _static_resources(plan: Plan) -> list[str]:
    listen_address = plan.listen.address or "0.0.0.0"  # noqa: S104 - the user's choice
    removals = [f"                - remove: {name.lower()}" for name in IDENTITY_HEADERS]
    return [
        "static_resources:",
        "  listeners:",
        "  - name: authctl_https",
        "    address:",
        f'      socket_address: {{address: "{listen_address}", port_value: {plan.listen.port}}}',
        "    filter_chains:",
        "    - transport_socket:",
        "        name: envoy.transport_sockets.tls",
        "        typed_config:",
        f'          "@type": {T}.transport_sockets.tls.v3.DownstreamTlsContext',
        "          common_tls_context:",
        "            tls_certificates:",
        f'            - certificate_chain: {{filename: "{plan.tls_cert}"}}',
        f'              private_key: {{filename: "{plan.tls_key}"}}',
        "      filters:",
        "      - name: envoy.filters.network.http_connection_manager",
        "        typed_config:",
        f'          "@type": {HCM}',
        "          stat_prefix: authctl_https",
        "          # the client address is the TCP peer, X-Forwarded-Proto the connection's",
        "          use_remote_address: true",
        "          common_http_protocol_options:",
        "            # Remote_User would reach some apps as Remote-User: drop such headers",
        "            headers_with_underscores_action: DROP_HEADER",
        "          route_config:",
        "            virtual_hosts:",
        "            # the portal, served by authctl itself (no ext_authz on it)",
        "            - name: authctl_portal",
        f"              domains: {_domains(plan, plan.portals)}",
        "              routes:",
        '              - match: {prefix: "/"}',
        "                route: {cluster: authctl}",
        "                typed_per_filter_config:",
        "                  envoy.filters.http.ext_authz:",
        f'                    "@type": {T}.filters.http.ext_authz.v3.ExtAuthzPerRoute',
        "                    disabled: true",
        "            # protected sites: every request asks authctl first",
        "            - name: authctl_protected",
        f"              domains: {_domains(plan, plan.hosts)}",
        "              routes:",
        '              - match: {prefix: "/"}',
        "                route: {cluster: authctl_app}",
        "          http_filters:",
        "          # 1. identity headers come from authctl only: remove the client's BEFORE",
        "          #    ext_authz (a route's request_headers_to_remove would run after it and",
        "          #    drop authctl's too)",
        "          - name: envoy.filters.http.header_mutation",
        "            typed_config:",
        f'              "@type": {T}.filters.http.header_mutation.v3.HeaderMutation',
        "              mutations:",
        "                request_mutations:",
        *removals,
        "          # 2. ask authctl: <method> /api/authz/ext-authz<original path and query>",
        "          - name: envoy.filters.http.ext_authz",
        "            typed_config:",
        f'              "@type": {T}.filters.http.ext_authz.v3.ExtAuthz',
        "              transport_api_version: V3",
        "              failure_mode_allow: false",
        "              status_on_error: {code: ServiceUnavailable}",
        "              # the credentials authctl reads; without cookie every request is anonymous.",
        "              # Only these reach authctl: never a client's X-Original-*/X-Forwarded-Host.",
        "              allowed_headers:",
        "                patterns:",
        "                - {exact: cookie}",
        "                - {exact: authorization}",
        "                - {exact: proxy-authorization}",
        "                - {exact: accept}",
        "                - {exact: x-requested-with}",
        "                - {exact: x-forwarded-for}",
        "              http_service:",
        f"                path_prefix: {EXT_AUTHZ}",
        "                server_uri:",
        f'                  uri: "{plan.authctl.http_url}"',
        "                  cluster: authctl",
        "                  timeout: 5s",
        "                authorization_request:",
        "                  headers_to_add:",
        '                  - {key: X-Forwarded-Proto, value: "%REQ(:SCHEME)%"}',
        "                authorization_response:",
        "                  # on 200: the identity for the app, replacing any copy",
        "                  allowed_upstream_headers:",
        "                    patterns: [{prefix: remote-}]",
        "                  # on a refusal: Location, status and body always go to the client",
        "                  allowed_client_headers:",
        "                    patterns: [{exact: set-cookie}, {exact: www-authenticate}]",
        "          # 3. the app (or the portal)",
        "          - name: envoy.filters.http.router",
        "            typed_config:",
        f'              "@type": {T}.filters.http.router.v3.Router',
        "  clusters:",
        *_cluster("authctl", plan.authctl),
        *_cluster("authctl_app", plan.upstream),
    ]


def dropin(plan: Plan) -> str:
    """A listener with its filters and the two clusters, to merge into an Envoy bootstrap."""
    require_tcp(plan, "Envoy")
    lines = header(plan, "authctl forward auth for Envoy (ext_authz HTTP service).")
    lines += [
        "# Merge this listener and these clusters into your bootstrap's static_resources.",
        "",
        *_static_resources(plan),
    ]
    return "\n".join(lines) + "\n"


def standalone(plan: Plan, out_dir: Path) -> Rendered:
    """envoy.yaml with no admin listener and no hot-restart shared memory."""
    require_tcp(plan, "Envoy")
    binary = find_binary("envoy")
    config = out_dir / "envoy.yaml"
    start = [binary, "-c", str(config), "--disable-hot-restart", "--log-level", "warn"]
    lines = header(plan, "authctl forward auth for Envoy (ext_authz): standalone envoy.yaml.")
    lines += [
        f"# Start: {' '.join(start)}",
        "# No admin listener; add an admin: block bound to 127.0.0.1 if you want one.",
        "",
        *_static_resources(plan),
    ]
    return Rendered(
        files={"envoy.yaml": "\n".join(lines) + "\n"},
        start=start,
        check=[binary, "--mode", "validate", "-c", str(config), "--disable-hot-restart"],
    )
