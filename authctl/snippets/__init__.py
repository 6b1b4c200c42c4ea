"""Reverse-proxy configuration for authctl, rendered from the config (``authctl proxy-snippet``).

Each proxy asks authctl differently (``reference/proxies.md`` §1), and each has a way to get
it subtly wrong: a client-sent ``Remote-User`` reaching the app, the original method or URL
lost, a ``Content-Length`` that makes nginx's sub-request hang. So the snippets are generated
from one :class:`Plan` (authctl's address, the portal hosts, the protected hosts, the app, the
listen address and the TLS files) by one module per proxy, and every one of them:

- removes client-sent ``Remote-*`` headers (and their ``Remote_*`` spellings) on every site,
  protected, bypass and portal alike, before anything else sees the request;
- passes the original method and URL to the authz endpoint that suits the proxy, built only
  from what the proxy routed: a Host that is not ``host[:port]`` or names another host than the
  one routed is refused, ``Upgrade: h2c`` is refused, and the client's ``X-Original-*``,
  ``X-Forwarded-*`` and ``Forwarded`` never reach authctl (a second review sent raw requests
  with absolute-form targets and Hosts like ``app:8443/static/x?`` through every config);
- serves the portal host, proxied to authctl with ``X-Forwarded-Proto``/``-Host``.

Pure text generation on the standard library; no click, so it is cheap to import and test.
"""

from __future__ import annotations

import ipaddress
import shutil
import sys
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

from authctl._public_port import port_fix

if t.TYPE_CHECKING:
    from server.core.config import Config

PROXIES = ("traefik", "nginx", "caddy", "haproxy", "envoy")
#: The identity headers authctl answers with; nothing else may set them.
IDENTITY_HEADERS = ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email")
#: Underscore spellings: CGI-style servers map ``Remote_User`` and ``Remote-User`` to the
#: same ``HTTP_REMOTE_USER``, so a client could smuggle one past a proxy that strips the other.
UNDERSCORE_HEADERS = tuple(h.replace("-", "_") for h in IDENTITY_HEADERS)
STRIPPED_HEADERS = IDENTITY_HEADERS + UNDERSCORE_HEADERS

#: Headers that tell a forward-auth server which request to judge. A client's copies must
#: never reach authctl: what it judges is built by the proxy from what the proxy routed.
FORWARDING_HEADERS = (
    "X-Original-URL",
    "X-Original-URI",
    "X-Original-Method",
    "X-Original-Host",
    "X-Forwarded-Host",
    "X-Forwarded-Proto",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Forwarded-Prefix",
    "X-Forwarded-Port",
    "X-Forwarded-Server",
    "X-Forwarded-Ssl",
    "Forwarded",
)
#: A Host header a proxy may judge: a DNS name and an optional port, nothing else (no ``/``,
#: ``?``, ``#``, ``@``, comma or space that a URL parser would read as more than a host).
HOST_HEADER_RE = r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$"
#: ``Upgrade`` values (a regex, matched case-insensitively) that would open an HTTP/2 cleartext
#: tunnel to the app (h2c smuggling: the proxy asks authctl about the upgrade request only,
#: never about the requests that follow inside the tunnel).
H2C_UPGRADE_RE = "h2|http/2"

GENERATED_MARK = "authctl proxy-snippet"


class SnippetError(ValueError):
    """The config or the options cannot give a working snippet (the message says why)."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """A TCP endpoint (or a unix socket when ``unix`` is set)."""

    host: str
    port: int
    unix: str | None = None

    @property
    def is_ip(self) -> bool:
        """True when ``host`` is an IP address (Envoy wants STATIC clusters for those)."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def hostport(self) -> str:
        """``host:port`` with IPv6 addresses in brackets."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def http_url(self) -> str:
        """``http://host:port``."""
        return f"http://{self.hostport}"


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the proxy accepts TLS: an address (None: all) and a port."""

    address: str | None
    port: int

    @property
    def bracketed(self) -> str | None:
        """The address with IPv6 in brackets, or None for all addresses."""
        if self.address is None:
            return None
        return f"[{self.address}]" if ":" in self.address else self.address

    @property
    def hostport(self) -> str:
        """``addr:port``, or ``:port`` for all addresses."""
        return f"{self.bracketed or ''}:{self.port}"

    def host_with_port(self, host: str) -> str:
        """``host`` as browsers write it in URLs and Host headers on this port."""
        return host if self.port == 443 else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a proxy snippet is made of, resolved and checked."""

    config_path: Path
    authctl: HostPort
    portals: tuple[str, ...]
    hosts: tuple[str, ...]
    upstream: HostPort
    listen: Listen
    tls_cert: Path
    tls_key: Path
    warnings: tuple[str, ...] = field(default=())

    @property
    def exact_hosts(self) -> tuple[str, ...]:
        """Protected hosts named exactly."""
        return tuple(h for h in self.hosts if not h.startswith("*."))

    @property
    def wildcard_hosts(self) -> tuple[str, ...]:
        """Protected ``*.domain`` hosts."""
        return tuple(h for h in self.hosts if h.startswith("*."))


@dataclass(frozen=True, slots=True)
class Rendered:
    """A proxy's standalone configuration: files to write, how to start and check it."""

    files: dict[str, str | bytes]
    start: list[str]
    check: list[str] | None
    secret_files: tuple[str, ...] = ()
    folders: tuple[str, ...] = ()


def find_binary(name: str) -> str:
    """The proxy's executable: on PATH, beside this Python (the venv's caddy, traefik, envoy),
    or in ``/usr/sbin`` (Debian's nginx and haproxy when PATH lacks it); else the bare name."""
    found = shutil.which(name)
    if found:
        return found
    for folder in (Path(sys.executable).parent, Path("/usr/sbin")):
        candidate = folder / name
        if candidate.is_file():
            return str(candidate)
    return name


def binary_installed(name: str) -> bool:
    """True when :func:`find_binary` finds a real file."""
    return Path(find_binary(name)).is_file()


# --------------------------------------------------------------------------- the plan


def _parse_hostport(text: str, what: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SnippetError(f"{what} {text!r} is not ADDR:PORT (e.g. 127.0.0.1:8443)")
    return host.strip("[]"), int(port)


def parse_listen(text: str | None) -> Listen:
    """``--listen``: ``ADDR:PORT``, ``:PORT`` or ``PORT``; default all addresses, port 443.

    Raises:
        SnippetError: not an address and port.
    """
    if text is None:
        return Listen(None, 443)
    if text.isdigit():
        text = f":{text}"
    host, port = _parse_hostport(text, "--listen")
    if host in ("", "*"):
        return Listen(None, port)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise SnippetError(f"--listen {text!r}: the address must be an IP address") from None
    return Listen(host, port)


def parse_upstream(text: str | None) -> HostPort:
    """``--upstream``: the app behind the proxy, ``http://HOST:PORT`` (default 127.0.0.1:8080).

    Raises:
        SnippetError: not a plain ``http://host[:port]`` URL without a path.
    """
    if text is None:
        return HostPort("127.0.0.1", 8080)
    parts = urlsplit(text)
    if parts.scheme != "http" or not parts.hostname:
        raise SnippetError(
            f"--upstream {text!r}: give the app as http://HOST:PORT (the proxy terminates TLS; "
            "an https upstream needs per-proxy TLS settings this command does not write)"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise SnippetError(f"--upstream {text!r}: no path, query or user information, please")
    try:
        port = parts.port or 80
    except ValueError:
        raise SnippetError(f"--upstream {text!r} has an invalid port") from None
    return HostPort(parts.hostname, port)


def authctl_endpoint(config: Config) -> HostPort:
    """Where the proxy reaches authctl: ``server.address``, with a wildcard address replaced
    by loopback (a proxy cannot connect to 0.0.0.0)."""
    server = config.server
    if server.unix_socket is not None:
        return HostPort("localhost", 0, server.unix_socket)
    host = server.host
    if host in ("0.0.0.0", ""):  # noqa: S104 - we are replacing the wildcard, not binding it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return HostPort(host, server.port)


def _normalise_site(text: str) -> str:
    from server.core.certs import CertificateError
    from server.core.certs import normalise_host

    try:
        value = normalise_host(text)
    except CertificateError as exc:
        raise SnippetError(f"--host {exc}") from None
    if not isinstance(value, str):
        raise SnippetError(f"--host {text!r}: give a host name, not an IP address")
    return value


def build_plan(
    config: Config,
    *,
    hosts: t.Sequence[str] = (),
    upstream: str | None = None,
    listen: str | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> Plan:
    """Resolve the options against the config into a :class:`Plan`.

    Without ``hosts``, every subdomain of each cookie domain is protected (``*.example.com``).
    Without ``tls_cert``/``tls_key``, the certificate ``authctl init`` (or
    ``authctl cert generate``) wrote to ``certs/`` beside the config is used.

    Raises:
        SnippetError: a host outside every cookie domain (authctl would answer it 400), a bad
            option, or only one of ``tls_cert``/``tls_key``.
    """
    if (tls_cert is None) != (tls_key is None):
        raise SnippetError("give both --tls-cert and --tls-key, or neither")
    warnings: list[str] = []
    portals: list[str] = []
    listen_at = parse_listen(listen)
    for index, cookie in enumerate(config.session.cookies):
        parts = urlsplit(cookie.portal_url)
        portals.append(parts.hostname or "")  # the config loader checked the portal URL
        if (parts.port or 443) != listen_at.port:
            warnings.append(
                f"the portal URL {cookie.portal_url} names port {parts.port or 443} but the "
                f"proxy listens on {listen_at.port}: redirects would miss the proxy; "
                + port_fix(config, index, listen_at.port)
            )
        if parts.path not in ("", "/"):
            warnings.append(
                f"the portal URL {cookie.portal_url} has a path; the snippet proxies the whole "
                f"host {parts.hostname} to authctl"
            )
    chosen: list[str] = []
    for text in hosts or [f"*.{c.domain}" for c in config.session.cookies]:
        site = _normalise_site(text)
        inner = site[2:] if site.startswith("*.") else site
        if config.session.cookie_for(inner) is None:
            domains = ", ".join(c.domain for c in config.session.cookies)
            raise SnippetError(
                f"--host {text!r} is outside every cookie domain ({domains}); authctl would "
                "answer its requests 400. Add a [[session.cookies]] entry for it."
            )
        if site in portals:
            continue  # the portal is always served, proxied to authctl
        if site not in chosen:
            chosen.append(site)
    if not chosen:
        raise SnippetError("no host to protect besides the portal; add --host app.example.com")
    if tls_cert is None or tls_key is None:
        from server.core.certs import default_certificate_paths

        tls_cert, tls_key = default_certificate_paths(config.base_dir)
    return Plan(
        config_path=config.path.absolute(),
        authctl=authctl_endpoint(config),
        portals=tuple(dict.fromkeys(portals)),
        hosts=tuple(chosen),
        upstream=parse_upstream(upstream),
        listen=listen_at,
        tls_cert=tls_cert.expanduser().absolute(),
        tls_key=tls_key.expanduser().absolute(),
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------- rendering


def dropin(proxy: str, plan: Plan) -> str:
    """The piece that drops into an existing configuration of ``proxy``."""
    return _module(proxy).dropin(plan)


def standalone(proxy: str, plan: Plan, out_dir: Path) -> Rendered:
    """A complete, self-contained configuration of ``proxy`` whose runtime paths are in
    ``out_dir``, with the command that starts it and the one that checks it."""
    return _module(proxy).standalone(plan, out_dir.absolute())


class _Renderer(t.Protocol):
    """What each proxy module provides."""

    def dropin(self, plan: Plan) -> str: ...

    def standalone(self, plan: Plan, out_dir: Path) -> Rendered: ...


def _module(proxy: str) -> _Renderer:
    if proxy not in PROXIES:
        raise SnippetError(f"unknown proxy {proxy!r} (one of {', '.join(PROXIES)})")
    import importlib

    return t.cast(_Renderer, importlib.import_module(f"authctl.snippets.{proxy}"))


def header(plan: Plan, title: str, comment: str = "#") -> list[str]:
    """The opening comment every generated file carries (also the overwrite guard's mark)."""
    return [
        f"{comment} {title}",
        f"{comment} Generated by `{GENERATED_MARK}` from {plan.config_path}.",
        f"{comment} authctl at {_authctl_where(plan)}; portal: {', '.join(plan.portals)}; "
        f"app: {plan.upstream.http_url}.",
    ]


def _authctl_where(plan: Plan) -> str:
    return f"unix:{plan.authctl.unix}" if plan.authctl.unix else plan.authctl.http_url


def require_tcp(plan: Plan, proxy: str) -> None:
    """Refuse a unix-socket ``server.address`` for proxies that cannot reach one here.

    Raises:
        SnippetError: authctl listens on a unix socket.
    """
    if plan.authctl.unix is not None:
        raise SnippetError(
            f"server.address is a unix socket; the {proxy} snippet needs authctl on host:port "
            "(nginx and Caddy can use the socket)"
        )


def indent(text: str, prefix: str) -> str:
    """Indent every non-empty line of ``text``."""
    return "".join(prefix + line if line.strip() else line for line in text.splitlines(True))
