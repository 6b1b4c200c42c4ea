"""Every check of ``authctl doctor`` in order: the config first (nothing else runs without
it), then its files, the running server, each portal, the clock, the stores, and the
``--url`` probes."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from urllib.parse import urlsplit

from server.core.config import Config
from server.core.config import CookieConfig
from server.core.doctor import client as probes
from server.core.doctor import files
from server.core.doctor import health
from server.core.doctor import stores
from server.core.doctor import tls
from server.core.doctor.check import Check
from server.core.doctor.check import Status
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.clock import clock_check
from server.core.doctor.net import TIMEOUT
from server.core.doctor.net import Answer
from server.core.doctor.net import Client
from server.core.doctor.net import Resolver
from server.core.endpoints import FIRST_FACTOR


@dataclass(frozen=True, slots=True)
class Options:
    """What the command line adds to the config."""

    urls: tuple[str, ...] = ()
    resolver: Resolver = field(default_factory=Resolver)
    ca_file: str | None = None
    cookie: str | None = None
    user: str | None = None
    password: str | None = None
    timeout: float = TIMEOUT
    now: Callable[[], float] = time.time


def run(config_path: Path, options: Options) -> list[Check]:
    """Run every check; the config's failure ends the run (nothing else can be known)."""
    first, config = files.config_check(config_path)
    if config is None:
        return [first]
    context = ssl.create_default_context(cafile=options.ca_file)
    client = Client(options.resolver, context, options.timeout)
    checks = [first, *_file_checks(config)]
    dates: list[tuple[str, str]] = []  # (who answered, its Date header), for the clock
    checks.append(_health(config, client, options, dates))
    for cookie in config.session.cookies:
        checks += _portal(config, cookie, client, options, dates)
    if dates:
        source, date = dates[0]
        checks.append(clock_check("clock", source, date, options.now()))
    checks.append(stores.storage_check(config))
    checks.append(stores.session_store_check(config))
    for url in options.urls:
        checks += _url(config, url, client, options)
    return checks


def _file_checks(config: Config) -> list[Check]:
    out = []
    users_ok = False
    for named in files.named_files(config):
        check = files.judge_file(named, files.inspect(named.path))
        out.append(check)
        if named.key == "users.file":
            users_ok = check.status is not Status.FAIL
    folder = files.storage_folder_check(config)
    if folder is not None:
        out.append(folder)
    if users_ok:
        out.append(files.users_check(config))
    return out


def _health(
    config: Config, client: Client, options: Options, dates: list[tuple[str, str]]
) -> Check:
    where = health.health_url(config.server)
    try:
        if where.startswith("unix:"):
            answer = client.unix_request(where[len("unix:") :], "/api/health")
        else:
            answer = client.request(where, headers=[("Accept", "application/json")])
    except (OSError, http.client.HTTPException) as exc:
        return health.judge_health(where, None, _why(exc))
    date = answer.header("date")
    if date:
        dates.append(("the authctl server", date))
    return health.judge_health(where, answer)


def _portal(
    config: Config,
    cookie: CookieConfig,
    client: Client,
    options: Options,
    dates: list[tuple[str, str]],
) -> list[Check]:
    """The portal's certificate (trust, names, dates) and that it answers over HTTPS."""
    url = cookie.portal_url
    name = f"portal {url}"
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or 443
    try:
        der, error = client.peer_certificate(host, port)
    except OSError as exc:
        return [
            fail(
                name,
                f"cannot open TLS to {host}:{port}: {_why(exc)}",
                "check that the proxy listens there and that the name resolves to it "
                "(--resolve NAME:ADDRESS to test before DNS)",
            )
        ]
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der) if der is not None else None
    out = [tls.trust_check(f"{name}: TLS trust", host, error, options.ca_file)]
    if cert is not None:
        others = [h for h in _hosts(config, cookie, options) if h != host]
        out += tls.names_check(f"{name}: certificate names", cert, host, others)
        now = dt.datetime.fromtimestamp(options.now(), dt.UTC)
        out.append(tls.expiry_check(f"{name}: certificate dates", cert, now))
    # the page itself; past a certificate problem (reported above) without verification
    page = client if error is None else Client(client.resolver, _unverified(), client.timeout)
    try:
        answer = page.request(url, headers=[("Accept", "text/html")])
    except (OSError, http.client.HTTPException) as exc:
        out.append(fail(f"{name}: answers", f"no answer: {_why(exc)}",
                        "check the proxy's site for the portal host"))  # fmt: skip
        return out
    date = answer.header("date")
    if date:
        dates.append((f"the portal {url}", date))
    if answer.status == 200:
        out.append(ok(f"{name}: answers", "answers 200 over HTTPS"))
    else:
        out.append(
            fail(
                f"{name}: answers",
                f"answers {answer.status}",
                "route the portal host to authctl in the proxy (`authctl proxy-snippet` "
                "serves it), and check that authctl runs",
            )
        )
    return out


def _hosts(config: Config, cookie: CookieConfig, options: Options) -> list[str]:
    """Hosts of the cookie domain this run knows of: default_redirect_url and --url."""
    hosts = []
    for url in (cookie.default_redirect_url, *options.urls):
        host = (urlsplit(url).hostname or "") if url else ""
        if host and cookie.covers(host):
            hosts.append(host)
    return hosts


def _unverified() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return str(exc.verify_message or exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- --url


def _url(config: Config, url: str, client: Client, options: Options) -> list[Check]:
    from server.core.errors import InvalidTargetError
    from server.core.rules import AccessControl
    from server.core.rules import AccessRequest
    from server.core.urls import parse_target

    name = f"{url}: anonymous request"
    try:
        target = parse_target(url)
        if target.scheme != "https":
            raise InvalidTargetError("authctl protects https:// URLs only")
        cookie = config.session.cookie_for(target.host)
        if cookie is None:
            raise InvalidTargetError(
                f"{target.host} is outside every [[session.cookies]] domain, so authctl "
                "answers 400 for it"
            )
        decision = AccessControl(config.access_control).evaluate(
            AccessRequest(host=target.host, path=target.path, query=target.query)
        )
    except InvalidTargetError as exc:
        return [fail(name, f"not a URL authctl can protect: {exc}",
                     "give an https:// URL inside a cookie domain")]  # fmt: skip
    portals = [c.portal_url for c in config.session.cookies]
    probe = probes.Probe()
    try:
        answer = client.request(url, headers=probe.headers())
    except (OSError, http.client.HTTPException) as exc:
        return [fail(name, f"no answer: {_why(exc)}",
                     "check the URL, the proxy, and --resolve/--ca")]  # fmt: skip
    policy, subject = decision.policy, decision.has_subject
    out = [
        probes.judge_anonymous(url, answer, policy, subject, portals),
        probes.judge_forged(url, probe, answer, portals),
        probes.judge_forwarded(url, answer, policy, subject, portals),
    ]
    cookie_pair, sign_in = _session(config, cookie, url, client, options)
    if sign_in is not None:
        out.append(sign_in)
    if cookie_pair is not None:
        try:
            signed = client.request(url, headers=probe.headers(cookie_pair))
        except (OSError, http.client.HTTPException) as exc:
            out.append(fail(f"{url}: forged Remote-User, signed in", f"no answer: {_why(exc)}",
                            "check the proxy"))  # fmt: skip
        else:
            out.append(probes.judge_signed_in(url, probe, signed, options.user, portals))
    return out


def _session(
    config: Config, cookie: CookieConfig, url: str, client: Client, options: Options
) -> tuple[str | None, Check | None]:
    """The session cookie: ``--cookie``, or one from signing in through the portal API."""
    if options.cookie:
        return options.cookie, None
    if not options.user:
        return None, None
    name = f"{url}: sign in as {options.user}"
    portal = cookie.portal_url.rstrip("/")
    body = json.dumps(
        {"username": options.user, "password": options.password or "",
         "keepMeLoggedIn": False, "targetURL": url}
    ).encode()  # fmt: skip
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(portal))
    try:
        answer = client.request(
            portal + FIRST_FACTOR,
            method="POST",
            headers=[("Content-Type", "application/json"), ("Accept", "application/json"),
                     ("Origin", origin)],
            body=body,
        )  # fmt: skip
    except (OSError, http.client.HTTPException) as exc:
        return None, fail(name, f"no answer from {portal}: {_why(exc)}", "check the portal")
    pair = probes.session_cookie(answer, config.session.name)
    if answer.status != 200 or pair is None:
        return None, fail(
            name,
            f"the portal answered {answer.status}{_message(answer)}",
            "check the user name and password (and bans: `authctl bans list`)",
        )
    return pair, ok(name, f"signed in through {portal}{FIRST_FACTOR}")


def _message(answer: Answer) -> str:
    try:
        data = json.loads(answer.body)
    except ValueError:
        return ""
    return f": {data.get('message')}" if isinstance(data, dict) and data.get("message") else ""
