"""Caddy: ``forward_auth`` to authctl's ``/api/authz/forward-auth``.

Caddy sends the original method and URI as ``X-Forwarded-Method``/``-Uri`` and sets
``X-Forwarded-Proto``/``-Host``/``-For`` itself (client values are ignored unless the client is
a configured trusted proxy). It appends the client's query to the auth URI; authctl ignores
its own query, so ``?rd=`` tricks go nowhere. On a 2xx, ``copy_headers`` copies the identity;
otherwise authctl's answer (302 to the portal, 401, 403) goes to the client as it is.

The directives sit in a ``route`` block because Caddy's default order runs ``request_header``
*after* ``forward_auth``: outside a route, deleting the client's ``Remote-User`` would also
delete the one authctl just set. Caddy 2.6.2 (Debian) leaks a literal placeholder into
``Remote-User`` when the auth answer lacks the header; authctl always sends all four, and the
deletions keep the client's copy out either way (proxies.md §3). Use Caddy ≥ 2.7.

forward_auth passes every other client header to authctl, ``X-Original-URL`` included, so the
route deletes the client's forwarding headers first; and it refuses an ``Upgrade: h2c``
(reverse_proxy would tunnel it to the app, and nothing inside the tunnel is ever judged).
Caddy routes and judges by the same Host (a site address matches it exactly).
"""

from __future__ import annotations

from pathlib import Path

from authctl.snippets import FORWARDING_HEADERS
from authctl.snippets import H2C_UPGRADE_RE
from authctl.snippets import IDENTITY_HEADERS
from authctl.snippets import STRIPPED_HEADERS
from authctl.snippets import Plan
from authctl.snippets import Rendered
from authctl.snippets import find_binary
from authctl.snippets import header
from server.core.endpoints import FORWARD_AUTH


def _address(plan: Plan, host: str) -> str:
    return "https://" + plan.listen.host_with_port(host)


def _authctl(plan: Plan) -> str:
    if plan.authctl.unix is not None:
        return f"unix/{plan.authctl.unix}"
    return plan.authctl.hostport


def _site_head(plan: Plan, hosts: tuple[str, ...]) -> list[str]:
    lines = [", ".join(_address(plan, h) for h in hosts) + " {"]
    if plan.listen.address is not None:
        lines.append(f"\tbind {plan.listen.address}")
    lines.append(f"\ttls {plan.tls_cert} {plan.tls_key}")
    lines += [
        "\t# h2c upgrade: reverse_proxy would open a tunnel to the app whose requests authctl",
        "\t# never sees (every Upgrade line is matched; an h2c upgrade carries HTTP2-Settings).",
        f'\t@authctl_h2c header_regexp Upgrade "(?i)({H2C_UPGRADE_RE})"',
        "\t@authctl_h2c_settings header HTTP2-Settings *",
    ]
    return lines


def _strip() -> list[str]:
    return [
        "\t\trespond @authctl_h2c 400",
        "\t\trespond @authctl_h2c_settings 400",
        "\t\t# identity headers come from authctl only: drop what the client sent (both spellings)",
        *(f"\t\trequest_header -{name}" for name in STRIPPED_HEADERS),
        "\t\t# Which request authctl judges is Caddy's word only (X-Forwarded-* set by",
        "\t\t# forward_auth and reverse_proxy from what it routed): drop the client's copies,",
        "\t\t# which forward_auth would pass on (X-Original-URL decides on /api/verify).",
        *(f"\t\trequest_header -{name}" for name in FORWARDING_HEADERS),
    ]


def dropin(plan: Plan) -> str:
    """The portal and protected site blocks, for a Caddyfile."""
    lines = header(plan, "authctl forward auth for Caddy (forward_auth).")
    lines += [
        "# Add these site blocks to your Caddyfile. Needs Caddy >= 2.7.",
        "",
        "# ---- The portal, served by authctl itself ----",
        *_site_head(plan, plan.portals),
        "\troute {",
        *_strip(),
        f"\t\treverse_proxy {_authctl(plan)}",
        "\t}",
        "}",
        "",
        "# ---- Protected sites: every request asks authctl first ----",
        *_site_head(plan, plan.hosts),
        "\t# `route` keeps this order; Caddy's default order would run request_header last.",
        "\troute {",
        *_strip(),
        "\t\t# Ask authctl (a GET with X-Forwarded-Method/-Uri, the client's cookie and",
        "\t\t# Authorization). 2xx: go on with the identity copied in; anything else (302 to the",
        "\t\t# portal, 401, 403) is sent to the client as it is.",
        f"\t\tforward_auth {_authctl(plan)} {{",
        f"\t\t\turi {FORWARD_AUTH}",
        f"\t\t\tcopy_headers {' '.join(IDENTITY_HEADERS)}",
        "\t\t}",
        f"\t\treverse_proxy {plan.upstream.hostport}",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def standalone(plan: Plan, out_dir: Path) -> Rendered:
    """A Caddyfile with the admin API off and storage in DIR, for ``caddy run``."""
    binary = find_binary("caddy")
    config = out_dir / "Caddyfile"
    start = [binary, "run", "--config", str(config), "--adapter", "caddyfile"]
    lines = header(plan, "authctl forward auth for Caddy (forward_auth): standalone Caddyfile.")
    lines += [
        f"# Start: {' '.join(start)}",
        "",
        "{",
        "\tadmin off",
        "\tpersist_config off",
        "\t# the certificate is given below: no ACME, no HTTP->HTTPS redirect listener on :80",
        "\tauto_https disable_redirects",
        "\tskip_install_trust",
        f"\tstorage file_system {out_dir / 'caddy'}",
        "\tlog {",
        f"\t\toutput file {out_dir / 'logs' / 'caddy.log'}",
        "\t\tlevel WARN",
        "\t}",
        "}",
        "",
        dropin(plan).rstrip("\n"),
    ]
    return Rendered(
        files={"Caddyfile": "\n".join(lines) + "\n"},
        start=start,
        check=[binary, "validate", "--config", str(config), "--adapter", "caddyfile"],
        folders=("caddy", "logs"),
    )
