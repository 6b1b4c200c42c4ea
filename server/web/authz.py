"""The authorization decision for the four authz endpoints (SPEC §3.1), on a bare WSGI environ.

This is the hot path: every request to every protected site comes through here, so it reads
the environ directly instead of building webob objects. It never answers 200 unless a rule
allowed a well-formed request: every parse error, untrusted peer or exception becomes the
endpoint's "bad request" status (CVE-2021-32637: verify returned 200 on a malformed URI).
"""

from __future__ import annotations

import enum
import html
import logging
import typing as t
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import parse_qs
from urllib.parse import quote

from server.core import endpoints
from server.core.basic import BasicCredentials
from server.core.basic import CredentialCache
from server.core.basic import MalformedCredentials
from server.core.basic import parse_basic
from server.core.cookies import session_ids
from server.core.errors import InvalidTargetError
from server.core.errors import StoreUnavailable
from server.core.forwarded import METHOD_MAX
from server.core.forwarded import TrustedProxies
from server.core.forwarded import valid_method
from server.core.identity import Identity
from server.core.identity import IdentityResolver
from server.core.identity import stamp_of
from server.core.outage import Throttled
from server.core.rules import AccessRequest
from server.core.rules import Decision
from server.core.tokens import NO_USER
from server.core.tokens import OUT_OF_DOMAIN
from server.core.tokens import TokenService
from server.core.tokens import bearer_token
from server.core.urls import Target
from server.core.urls import build_target
from server.core.urls import parse_target
from server.core.urls import safe_redirect

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.config import CookieConfig
    from server.core.rules import AccessControl

log = logging.getLogger("authctl.authz")
#: Basic credentials that could not be checked because a store is down (logged once a minute).
_basic_outage = Throttled(log)

ANONYMOUS_HEADERS: tuple[tuple[str, str], ...] = (
    ("Remote-User", ""),
    ("Remote-Groups", ""),
    ("Remote-Name", ""),
    ("Remote-Email", ""),
)
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_NO_STORE = ("Cache-Control", "no-store")
_REALM = 'Basic realm="authctl"'
#: A refused personal access token (RFC 6750 §3.1), and a valid one too weak for the rule
#: (RFC 9470: only a ``--two-factor`` token passes a two_factor rule).
_BAD_TOKEN = ("WWW-Authenticate", 'Bearer realm="authctl", error="invalid_token"')
_WEAK_TOKEN = (
    "WWW-Authenticate",
    'Bearer realm="authctl", error="insufficient_user_authentication"',
)
#: Entries kept by each of the authorizer's memo tables (targets, cookie domains); a table
#: that fills up is emptied, so a flood of distinct URLs costs a recomputation, never memory.
MEMO_SIZE = 4096
#: Longest URL or forwarded URI the target memo tables keep: real pages repeat short URLs,
#: and with this cap a full table holds a few MiB however long the URLs of a flood are.
MEMO_KEY_MAX = 512
#: Longest path the decision log writes; a longer one is cut and says how long it was.
LOG_PATH_MAX = 256
#: Where a method was read from, for the refusal's log line.
_FORWARDED_METHOD = "X-Forwarded-Method"
_ORIGINAL_METHOD = "X-Original-Method"
_REQUEST_LINE = "request method"
#: Methods as proxies send them, already valid: skips the checks of ``_method``.
_PLAIN_METHODS = {
    m: m for m in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE")
}


class Endpoint(enum.Enum):
    """The four authz endpoints; each reads the target and answers differently."""

    FORWARD_AUTH = "forward-auth"
    AUTH_REQUEST = "auth-request"
    EXT_AUTHZ = "ext-authz"
    LEGACY = "legacy"

    @property
    def bad_request_status(self) -> int:
        """Malformed input: 400, but 401 on the legacy endpoint (Authelia) and 403 on
        auth-request, because nginx turns anything but 200/401/403 into a 500."""
        if self is Endpoint.LEGACY:
            return 401
        if self is Endpoint.AUTH_REQUEST:
            return 403
        return 400


STATUS_LINES = {
    200: "200 OK",
    302: "302 Found",
    303: "303 See Other",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    405: "405 Method Not Allowed",
}


@dataclass(slots=True)
class Answer:
    """An authz answer: status, headers and body, plus fields for the decision log."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    log: dict[str, object] = field(default_factory=dict)


#: An answer as sent: status line, headers (with Content-Length) and body.
Reply = tuple[str, list[tuple[str, str]], bytes]


class BadRequest(Exception):
    """Input the endpoint refuses outright (never a redirect, never an allow)."""


def _header(environ: t.Mapping[str, t.Any], name: str) -> str | None:
    value = environ.get(name)
    return value if isinstance(value, str) else None


def _method(raw: object, source: str) -> str:
    """The method read from ``source`` (a header name, or the request line), exactly as
    sent: it must match ``^[A-Z]+$`` (SPEC §7.5), else the request is malformed."""
    plain = _PLAIN_METHODS.get(raw) if type(raw) is str else None
    if plain is not None:
        return plain
    if not raw:
        raise BadRequest(f"missing {source}")
    if not valid_method(raw):
        shown = repr(raw[:40]) + ("..." if len(raw) > 40 else "") if type(raw) is str else "?"
        raise BadRequest(f"invalid {source} {shown}: a method is 1-{METHOD_MAX} of A-Z")
    return t.cast(str, raw)


def _legacy_method(environ: t.Mapping[str, t.Any]) -> str:
    """``/api/verify``: the first non-empty of X-Forwarded-Method, X-Original-Method and the
    request line; it must be valid itself (a valid later one never stands in for it)."""
    for key, source in (
        ("HTTP_X_FORWARDED_METHOD", _FORWARDED_METHOD),
        ("HTTP_X_ORIGINAL_METHOD", _ORIGINAL_METHOD),
    ):
        value = _header(environ, key)
        if value:
            return _method(value, source)
    return _method(environ.get("REQUEST_METHOD"), _REQUEST_LINE)


def _latin1(value: str) -> str:
    """WSGI header values are latin-1 strings; send UTF-8 bytes as Authelia does."""
    if value.isascii():
        return value
    return value.encode("utf-8").decode("latin-1")


def _log_path(path: str) -> str:
    """``path`` for the log, cut to LOG_PATH_MAX characters (8 KiB paths fill disks)."""
    if len(path) <= LOG_PATH_MAX:
        return path
    return f"{path[:LOG_PATH_MAX]}...({len(path)} chars)"


def _fields(
    method: str, target: Target, identity: Identity | None, decision: Decision
) -> dict[str, object]:
    """The decision log's fields (no session id, no credentials, a bounded path)."""
    return {
        "method": method,
        "host": target.host,
        "path": _log_path(target.path),
        "user": identity.username if identity else None,
        "rule": decision.rule,
        "policy": decision.policy,
    }


class Authorizer:
    """Answers authz sub-requests from the session cookie, Basic credentials or a personal
    access token, and the rules."""

    def __init__(
        self,
        config: Config,
        access: AccessControl,
        identities: IdentityResolver,
        basic_cache: CredentialCache | None = None,
        tokens: TokenService | None = None,
    ) -> None:
        #: Personal access tokens (``server.core.tokens``); None: bearer values are ignored.
        self.tokens = tokens
        self._config = config
        self._access = access
        self._identities = identities
        self._proxies = TrustedProxies(config.server.trusted_proxies)
        self._cookie_name = config.session.name
        self._basic_cache = basic_cache if basic_cache is not None else CredentialCache()
        # Memo tables for pure functions of the request (Target and CookieConfig are
        # immutable): a proxy asks about the same few URLs over and over.
        self._targets: dict[tuple[str, str, str], Target] = {}
        self._urls: dict[str, Target] = {}
        self._cookies: dict[str, CookieConfig | None] = {}

    # ------------------------------------------------------------------ entry point

    def __call__(self, endpoint: Endpoint, environ: t.Mapping[str, t.Any]) -> Answer:
        """Decide; any exception ends in the endpoint's refusal status, never in 200."""
        try:
            return self._decide(endpoint, environ)
        except BadRequest as exc:
            return self._bad_request(endpoint, str(exc))
        except InvalidTargetError as exc:
            return self._bad_request(endpoint, f"invalid target: {exc}")
        except Exception:
            log.exception("authz failed; refusing the request")
            return self._bad_request(endpoint, "internal error")

    def decide_inline(self, endpoint: Endpoint, environ: t.Mapping[str, t.Any]) -> Answer | None:
        """The answer when memory alone gives it, else None.

        For waitress's I/O thread (``server.serve.inline``), inside
        ``server.core.blocking.forbidden``: a session missing from this process's cache, a due
        activity write, a Basic password to hash or a due users-file check raise ``WouldBlock``
        before anything changed. Any exception gives None, and a pool thread then decides the
        request afresh, behind the error boundary of ``__call__`` and with its log line.
        """
        try:
            return self._decide(endpoint, environ)
        except Exception:
            return None

    def _bad_request(self, endpoint: Endpoint, reason: str) -> Answer:
        status = endpoint.bad_request_status
        return Answer(
            status,
            [_TEXT, _NO_STORE],
            STATUS_LINES[status].encode(),
            {"decision": "bad_request", "reason": reason},
        )

    # ------------------------------------------------------------------ the decision

    def _decide(self, endpoint: Endpoint, environ: t.Mapping[str, t.Any]) -> Answer:
        peer = environ.get("REMOTE_ADDR", "")
        if peer not in self._proxies:
            raise BadRequest(f"peer {peer!r} is not in server.trusted_proxies")
        method, target = self._target(endpoint, environ)
        if target.scheme not in ("https", "wss"):
            raise BadRequest("plain HTTP target refused")
        cookie = self._cookie_for(target.host)
        if cookie is None:
            raise BadRequest(f"host {target.host!r} is outside every cookie domain")
        # only the legacy endpoint reads its own query string (rd, auth); parse it once
        legacy_query = (
            parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
            if endpoint is Endpoint.LEGACY
            else None
        )
        portal = (
            cookie.portal_url if legacy_query is None else self._legacy_portal(legacy_query, cookie)
        )
        client_ip = self._proxies.client_ip(peer, _header(environ, "HTTP_X_FORWARDED_FOR"))

        identity: Identity | None = None
        # a personal access token decides alone: valid, or 401 whatever the rules say
        token = self._bearer(environ) if self.tokens is not None else None
        if token is not None:
            identity, refused = self._token_identity(token, target.host)
            if identity is None:
                return self._token_refused(refused, method, target)
        basic_failed = False
        legacy_basic = legacy_query is not None and legacy_query.get("auth", [""])[0] == "basic"
        basic_header = self._basic_header(legacy_query is not None, legacy_basic, environ)
        if token is None and (basic_header is not None or legacy_basic):
            try:
                creds = parse_basic(basic_header)
            except MalformedCredentials:
                creds = None
            identity = (
                self._basic_identity(creds, str(client_ip) if client_ip else None)
                if creds is not None
                else None
            )
            basic_failed = identity is None
        session = None
        if identity is None and not basic_failed and token is None:
            identity, session = self._cookie_identity(environ, cookie)

        request = AccessRequest(
            host=target.host,
            path=target.path,
            query=target.query,
            method=method,
            ip=client_ip,
            user=identity.username if identity else None,
            groups=identity.groups if identity else (),
        )
        decision = self._access.evaluate(request)
        if session is not None:
            self._identities.touch(session)

        policy = decision.policy
        if policy == "bypass" or (
            policy != "deny"
            and identity is not None
            and identity.level >= (2 if policy == "two_factor" else 1)
        ):
            # the common answer; its log fields are built only when DEBUG is on
            if log.isEnabledFor(logging.DEBUG):
                return self._allow(identity, _fields(method, target, identity, decision))
            return self._allow(identity, {"decision": "allow"})
        fields = _fields(method, target, identity, decision)
        if basic_failed:
            fields["decision"] = "basic_failed"
            return Answer(
                401,
                [_TEXT, _NO_STORE, ("WWW-Authenticate", _REALM)],
                b"401 Unauthorized",
                fields,
            )
        if decision.policy == "deny" and (identity is not None or not decision.has_subject):
            fields["decision"] = "deny"
            return Answer(403, [_TEXT, _NO_STORE], b"403 Forbidden", fields)
        if token is not None:
            # a script wants a status, not the portal: its token is one factor too few
            fields["decision"] = "token_level"
            return Answer(401, [_TEXT, _NO_STORE, _WEAK_TOKEN], b"401 Unauthorized", fields)
        # one_factor or two_factor, and not (yet) enough factors (allowed above otherwise)
        return self._login(endpoint, environ, method, target, portal, fields)

    # ------------------------------------------------------------------ inputs

    def _target(self, endpoint: Endpoint, environ: t.Mapping[str, t.Any]) -> tuple[str, Target]:
        if endpoint is Endpoint.AUTH_REQUEST:
            url = _header(environ, "HTTP_X_ORIGINAL_URL")
            if not url:
                raise BadRequest("missing X-Original-URL")
            method = _method(_header(environ, "HTTP_X_ORIGINAL_METHOD"), _ORIGINAL_METHOD)
            return method, self._parse_target(url)
        if endpoint is Endpoint.FORWARD_AUTH:
            method = _method(_header(environ, "HTTP_X_FORWARDED_METHOD"), _FORWARDED_METHOD)
            return method, self._forwarded(environ, _header(environ, "HTTP_X_FORWARDED_HOST"), None)
        if endpoint is Endpoint.EXT_AUTHZ:
            return _method(environ.get("REQUEST_METHOD"), _REQUEST_LINE), self._forwarded(
                environ, _header(environ, "HTTP_HOST"), self._ext_authz_uri(environ)
            )
        return self._legacy_target(environ)

    def _legacy_target(self, environ: t.Mapping[str, t.Any]) -> tuple[str, Target]:
        """``/api/verify`` (SPEC §3.1): the forwarded triple when the proxy sent it, else
        ``X-Original-URL``; the method from ``X-Forwarded-Method``, else
        ``X-Original-Method``, else the request's.

        Proxies pass client headers on to the sub-request, so either description may come
        from the client: when both are there and name different targets, the request is
        refused rather than judged on one of them.
        """
        method = _legacy_method(environ)
        url = _header(environ, "HTTP_X_ORIGINAL_URL")
        host = _header(environ, "HTTP_X_FORWARDED_HOST") or _header(environ, "HTTP_HOST")
        forwarded = _header(environ, "HTTP_X_FORWARDED_PROTO") and _header(
            environ, "HTTP_X_FORWARDED_URI"
        )
        if not url or forwarded:
            target = self._forwarded(environ, host, None)  # raises on a missing header
            if url and self._parse_target(url) != target:
                raise BadRequest("X-Original-URL and X-Forwarded-* name different targets")
            return method, target
        return method, self._parse_target(url)

    def _forwarded(
        self, environ: t.Mapping[str, t.Any], host: str | None, uri: str | None
    ) -> Target:
        proto = _header(environ, "HTTP_X_FORWARDED_PROTO")
        if not proto:
            raise BadRequest("missing X-Forwarded-Proto")
        if not host:
            raise BadRequest("missing X-Forwarded-Host")
        if uri is None:
            uri = _header(environ, "HTTP_X_FORWARDED_URI")
            if not uri:
                raise BadRequest("missing X-Forwarded-Uri")
        key = (proto, host, uri)
        target = self._targets.get(key)
        if target is None:
            target = build_target(proto, host, uri)  # raises on malformed input: not kept
            if len(uri) <= MEMO_KEY_MAX and len(host) <= MEMO_KEY_MAX:
                if len(self._targets) >= MEMO_SIZE:
                    self._targets.clear()
                self._targets[key] = target
        return target

    def _parse_target(self, url: str) -> Target:
        target = self._urls.get(url)
        if target is None:
            target = parse_target(url)
            if len(url) <= MEMO_KEY_MAX:
                if len(self._urls) >= MEMO_SIZE:
                    self._urls.clear()
                self._urls[url] = target
        return target

    def _cookie_for(self, host: str) -> CookieConfig | None:
        try:
            return self._cookies[host]
        except KeyError:
            pass
        cookie = self._config.session.cookie_for(host)
        if len(self._cookies) >= MEMO_SIZE:
            self._cookies.clear()
        self._cookies[host] = cookie
        return cookie

    @staticmethod
    def _ext_authz_uri(environ: t.Mapping[str, t.Any]) -> str:
        raw = environ.get("REQUEST_URI")
        if not isinstance(raw, str) or not raw:
            path = environ.get("PATH_INFO", "")
            query = environ.get("QUERY_STRING", "")
            # no '%' in safe: PATH_INFO is decoded once already, a '%' in it is data
            raw = quote(path.encode("latin-1"), safe="/;:@!$&'()*+,=~-._") + (
                f"?{query}" if query else ""
            )
        prefix = endpoints.EXT_AUTHZ
        if not raw.startswith(prefix):
            raise BadRequest("not an ext-authz path")
        rest = raw[len(prefix) :]
        if rest.startswith("?"):
            rest = "/" + rest
        return rest or "/"

    @staticmethod
    def _legacy_portal(query: dict[str, list[str]], cookie: CookieConfig) -> str | None:
        """The legacy endpoint's portal: ``rd``, which must itself be an https URL inside the
        same cookie domain; without ``rd`` there is none (plain 401)."""
        rd = query.get("rd")
        if not rd:
            return None
        portal = safe_redirect(rd[0], [cookie.domain])
        if portal is None:
            raise BadRequest("rd is not an https URL inside the cookie domain")
        return portal.rstrip("/")

    @staticmethod
    def _basic_header(
        legacy: bool, legacy_basic: bool, environ: t.Mapping[str, t.Any]
    ) -> str | None:
        """The Basic credentials header to check: on the legacy endpoint ``Authorization``
        only with ``?auth=basic``; elsewhere ``Authorization`` or ``Proxy-Authorization``
        when it carries the Basic scheme (other schemes are the app's business)."""
        if legacy:
            return _header(environ, "HTTP_AUTHORIZATION") if legacy_basic else None
        value = _header(environ, "HTTP_AUTHORIZATION")
        if value and value.lstrip()[:6].lower() == "basic ":
            return value
        proxy_value = _header(environ, "HTTP_PROXY_AUTHORIZATION")
        if proxy_value and proxy_value.lstrip()[:6].lower() == "basic ":
            return proxy_value
        return None

    @staticmethod
    def _bearer(environ: t.Mapping[str, t.Any]) -> str | None:
        """A personal access token in ``Authorization`` or ``Proxy-Authorization`` (on every
        endpoint); bearer values without the ``authctl_`` prefix are the app's own."""
        return bearer_token(_header(environ, "HTTP_AUTHORIZATION")) or bearer_token(
            _header(environ, "HTTP_PROXY_AUTHORIZATION")
        )

    # ------------------------------------------------------------------ identities

    def _token_identity(self, token: str, host: str) -> tuple[Identity | None, str]:
        """The token's user at its level, on its domains, if the user is still enabled (the
        users file as it is now, as for sessions); else None and why."""
        assert self.tokens is not None  # noqa: S101 - only called with tokens
        grant, refused = self.tokens.check(token)
        if grant is None:
            return None, refused
        if not grant.covers(host):
            return None, OUT_OF_DOMAIN
        user = self._identities.lookup(grant.username)
        identity = (
            self._identities.current(user.name, stamp_of(user.password), grant.level)
            if user is not None
            else None
        )
        return identity, NO_USER if identity is None else ""

    @staticmethod
    def _token_refused(reason: str, method: str, target: Target) -> Answer:
        """401 + ``WWW-Authenticate: Bearer`` on every endpoint (never a redirect)."""
        fields: dict[str, object] = {
            "decision": "token_refused",
            "reason": reason,
            "method": method,
            "host": target.host,
            "path": _log_path(target.path),
        }
        return Answer(401, [_TEXT, _NO_STORE, _BAD_TOKEN], b"401 Unauthorized", fields)

    def _basic_identity(self, creds: BasicCredentials, ip: str | None) -> Identity | None:
        cached = self._basic_cache.get(creds)
        if cached is not None:
            identity = self._identities.current(cached[0], cached[1], level=1)
            if identity is not None:
                return identity
        try:
            result = self._identities.check_password(
                creds.username, creds.password, ip=ip, kind="BASIC"
            )
        except StoreUnavailable as exc:
            # a script gets 401 + WWW-Authenticate as for any failure (fail closed); the log
            # says why, once a minute rather than once per request
            _basic_outage.hit(logging.ERROR, "Basic credentials not checked: %s", exc)
            return None
        if result is None:
            return None
        identity, stamp = result
        self._basic_cache.put(creds, identity.username, stamp)
        return identity

    def _cookie_identity(
        self, environ: t.Mapping[str, t.Any], cookie: CookieConfig
    ) -> tuple[Identity | None, t.Any]:
        for session_id in session_ids(_header(environ, "HTTP_COOKIE"), self._cookie_name):
            found = self._identities.from_session(session_id, cookie.domain)
            if found is not None:
                return found
        return None, None

    # ------------------------------------------------------------------ answers

    def _allow(self, identity: Identity | None, fields: dict[str, object]) -> Answer:
        """200 with the four ``Remote-*`` headers (empty for anonymous bypass) and no body."""
        fields["decision"] = "allow"
        if identity is None:
            headers = [_NO_STORE, *ANONYMOUS_HEADERS]
        else:
            headers = [
                _NO_STORE,
                ("Remote-User", identity.username),
                ("Remote-Groups", _latin1(",".join(identity.groups))),
                ("Remote-Name", _latin1(identity.displayname)),
                ("Remote-Email", _latin1(identity.email)),
            ]
        return Answer(200, headers, b"", fields)

    def _login(
        self,
        endpoint: Endpoint,
        environ: t.Mapping[str, t.Any],
        method: str,
        target: Target,
        portal: str | None,
        fields: dict[str, object],
    ) -> Answer:
        fields["decision"] = "login"
        if portal is None:
            return Answer(401, [_TEXT, _NO_STORE], b"401 Unauthorized", fields)
        location = f"{portal}/?rd={quote(target.url(), safe='')}&rm={method}"
        headers = [_NO_STORE, ("Location", location)]
        if endpoint is Endpoint.AUTH_REQUEST or self._wants_401(environ):
            return Answer(401, [_TEXT, *headers], b"401 Unauthorized", fields)
        status = 302 if method in ("GET", "HEAD", "OPTIONS") else 303
        body = b""
        if environ.get("REQUEST_METHOD") != "HEAD":
            escaped = html.escape(location, quote=True)
            body = f'<a href="{escaped}">{STATUS_LINES[status]}</a>'.encode()
        return Answer(
            status, [("Content-Type", "text/html; charset=utf-8"), *headers], body, fields
        )

    @staticmethod
    def _wants_401(environ: t.Mapping[str, t.Any]) -> bool:
        """XHR, or an Accept header without text/html, gets 401 + Location (Authelia)."""
        if (_header(environ, "HTTP_X_REQUESTED_WITH") or "").lower() == "xmlhttprequest":
            return True
        accept = _header(environ, "HTTP_ACCEPT") or ""
        for i, item in enumerate(accept.split(",")):
            mime = item.split(";", 1)[0].strip()
            if mime == "text/html" or (i == 0 and mime == "*/*"):
                return False
        return True
