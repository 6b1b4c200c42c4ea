"""The WSGI application: routing, security headers and the error boundary.

The authz endpoints run on the bare environ (``server.web.authz``), because they are the hot
path, and ``App.decide_inline`` lets ``server.serve.inline`` answer them in waitress's I/O thread
when memory alone decides; the portal API and pages go through webob. This is the only
module that wires the core together; ``make_app`` takes its collaborators as arguments so
tests pass fakes (a clock, a memory store) instead of patching.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from webob import Request
from webob import Response

from server.core import audit
from server.core import endpoints
from server.core.errors import StoreUnavailable
from server.core.identity import IdentityResolver
from server.core.rules import AccessControl
from server.web.assets import Asset
from server.web.assets import brand
from server.web.assets import load_assets
from server.web.authz import STATUS_LINES
from server.web.authz import Answer
from server.web.authz import Authorizer
from server.web.authz import Endpoint
from server.web.authz import Reply
from server.web.errors import internal_error
from server.web.errors import ko
from server.web.errors import ok
from server.web.errors import translate
from server.web.oidc_api import OidcApi
from server.web.portal import PortalApi
from server.web.routes import Call
from server.web.routes import Dispatcher
from server.web.routes import Route
from server.web.routes import RouteTable
from server.web.sessions_api import SessionsApi
from server.web.tokens_api import TokensApi

if t.TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse
    from _typeshed.wsgi import WSGIEnvironment

    from server.core.config import Config
    from server.core.config import PortalConfig
    from server.core.hashcap import HashGate
    from server.core.notifier import Notifier
    from server.core.passwords import PasswordHasher
    from server.core.session_store import SessionStore
    from server.core.storage import Storage
    from server.core.tokens import TokenService
    from server.core.users import UsersSource
    from server.web.selfservice import SelfServiceApi

log = logging.getLogger("authctl.app")
decisions = logging.getLogger("authctl.authz")

#: The portal loads nothing from anywhere else and runs no inline script (SPEC §3.2).
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
COMMON_HEADERS: tuple[tuple[str, str], ...] = (
    ("X-Frame-Options", "DENY"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Strict-Transport-Security", "max-age=31536000"),
)
API_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"),
    ("Cache-Control", "no-store"),
    ("Pragma", "no-cache"),
    *COMMON_HEADERS,
)
PAGE_HEADERS: tuple[tuple[str, str], ...] = (
    ("Content-Security-Policy", PAGE_CSP),
    *COMMON_HEADERS,
)

_AUTHZ_ROUTES: dict[str, tuple[Endpoint, frozenset[str] | None]] = {
    endpoints.FORWARD_AUTH: (Endpoint.FORWARD_AUTH, frozenset({"GET", "HEAD"})),
    endpoints.AUTH_REQUEST: (Endpoint.AUTH_REQUEST, frozenset({"GET", "HEAD"})),
    endpoints.EXT_AUTHZ: (Endpoint.EXT_AUTHZ, None),
    endpoints.LEGACY_VERIFY: (Endpoint.LEGACY, None),
}

#: Builds the OpenID Provider's API for a config (None when it is off), at start and reload.
OidcFactory = Callable[["Config", PortalApi], "OidcApi | None"]

#: What ``/api/health`` runs: the names of the failing parts with why, empty when healthy.
HealthCheck = Callable[[], list[str]]


def _authz_route(path: str) -> tuple[Endpoint, frozenset[str] | None] | None:
    """The authz endpoint and allowed methods (None: any) of ``path``; None for the portal."""
    route = _AUTHZ_ROUTES.get(path)
    if route is None and path.startswith(f"{endpoints.EXT_AUTHZ}/"):
        route = _AUTHZ_ROUTES[endpoints.EXT_AUTHZ]
    return route


def _reply(answer: Answer, environ: WSGIEnvironment) -> Reply:
    """What to send for ``answer``: no body for HEAD, and always a Content-Length."""
    body = b"" if environ.get("REQUEST_METHOD") == "HEAD" else answer.body
    answer.headers.append(("Content-Length", str(len(body))))
    return STATUS_LINES[answer.status], answer.headers, body


def _log_level(answer: Answer) -> int | None:
    """The level the decision log records ``answer`` at, or None when it is not logged."""
    if not answer.log:
        return None
    level = logging.DEBUG if answer.log.get("decision") == "allow" else logging.INFO
    return level if decisions.isEnabledFor(level) else None


#: What ``App.reload`` builds from a new config: the authorizer, portal API and self-service
#: API, wired to the collaborators a reload keeps (stores, users file, hasher) and to the
#: Wiring in force (whose notifier and outbox are reused when ``[notifier]`` is the same).
Rebuild = Callable[["Config", "Wiring"], "tuple[Authorizer, PortalApi, SelfServiceApi | None]"]


@dataclass(frozen=True, slots=True)
class Wiring:
    """Everything a request reads that a config reload changes, built from one config.

    ``App`` holds one Wiring and a reload replaces it with a single assignment, so a request
    that reads ``app.live`` once sees one config throughout, never a mix of two.
    """

    config: Config
    authorizer: Authorizer
    portal: PortalApi
    selfservice: SelfServiceApi | None
    routes: RouteTable
    dispatch: Dispatcher
    oidc: OidcApi | None = None

    @classmethod
    def of(
        cls,
        config: Config,
        authorizer: Authorizer,
        portal: PortalApi,
        selfservice: SelfServiceApi | None,
        health: Callable[[Call], Response],
        oidc: OidcApi | None = None,
    ) -> Wiring:
        """Build the route table and guards; a (method, path) defined twice raises."""
        routes = RouteTable(
            [
                Route("GET", endpoints.HEALTH, health),
                Route("HEAD", endpoints.HEALTH, health),
                *portal.routes(),
                *(selfservice.routes() if selfservice is not None else ()),
                *SessionsApi(portal.sessions).routes(),
                *(TokensApi(authorizer.tokens, config).routes() if authorizer.tokens else ()),
                *(oidc.routes() if oidc is not None else ()),
            ]
        )
        dispatch = Dispatcher(
            portal.gate,
            elevation=selfservice.require_change_rights if selfservice is not None else None,
            limiters=selfservice.limiters if selfservice is not None else None,
        )
        return cls(config, authorizer, portal, selfservice, routes, dispatch, oidc)


class App:
    """authctl's WSGI callable."""

    def __init__(
        self,
        config: Config,
        authorizer: Authorizer,
        portal: PortalApi,
        assets: dict[str, Asset],
        selfservice: SelfServiceApi | None = None,
        *,
        inline_authz: bool = False,
        health: HealthCheck | None = None,
        rebuild: Rebuild | None = None,
        oidc: OidcFactory | None = None,
    ) -> None:
        self._health = health
        self._rebuild = rebuild
        self._oidc = oidc or (lambda _config, _portal: None)
        self._reload_lock = threading.Lock()
        #: Whether ``decide_inline`` may answer (the session store reads from memory).
        self.inline_authz = inline_authz
        #: The files as read (pages unbranded) and, rendered from them, the ones served.
        self.raw_assets = assets
        self.assets = brand(assets, config.portal)
        #: The config in force and what was built from it (one reference: ``reload``).
        self.live = Wiring.of(
            config, authorizer, portal, selfservice, self.health, self._oidc(config, portal)
        )

    # The parts of the Wiring in force, for callers outside a request (tests, shutdown).
    @property
    def config(self) -> Config:
        return self.live.config

    @property
    def authorizer(self) -> Authorizer:
        return self.live.authorizer

    @property
    def portal(self) -> PortalApi:
        return self.live.portal

    @property
    def selfservice(self) -> SelfServiceApi | None:
        return self.live.selfservice

    @property
    def routes(self) -> RouteTable:
        return self.live.routes

    @property
    def dispatch(self) -> Dispatcher:
        return self.live.dispatch

    def reload(self, config: Config) -> None:
        """Put a validated ``config`` in force for the next request (``server.core.reload``
        keeps its restart-only keys at their running values).

        The new authorizer, portal and self-service APIs are built whole first (sessions,
        storage and the users file are kept, no connection is reopened), then the branded
        pages, then ``live`` is replaced in one assignment: a request in flight finishes on
        the Wiring it read, the next one reads the new one, and none sees half of each.

        Raises:
            RuntimeError: this App was built without a ``rebuild`` (tests' bare apps).
            Exception: whatever building raised; nothing was changed.
        """
        if self._rebuild is None:
            raise RuntimeError("this app cannot reload (built without make_app)")
        with self._reload_lock:
            old = self.live
            authorizer, portal, selfservice = self._rebuild(config, old)
            new = Wiring.of(
                config, authorizer, portal, selfservice, self.health, self._oidc(config, portal)
            )
            self.rebrand(config.portal)
            self.live = new
        if old.selfservice is not None and (
            selfservice is None or selfservice.outbox is not old.selfservice.outbox
        ):
            old.selfservice.close()  # a new notifier: send what the old outbox still holds

    def rebrand(self, portal: PortalConfig) -> None:
        """Render the pages for a newly loaded ``[portal]`` (a reload). The served set is
        swapped whole, so a request sees either the old branding or the new one.

        Raises:
            server.web.assets.BrandingError: a page lacks a place branding fills in (the old
                set keeps being served).
        """
        self.assets = brand(self.raw_assets, portal)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        route = _authz_route(environ.get("PATH_INFO", ""))
        if route is not None:
            return self.authz(route[0], route[1], environ, start_response)
        try:
            resp = self.portal_request(Request(environ))
        except Exception:
            log.exception("portal request failed")
            resp = internal_error()
            resp.headerlist.extend(API_HEADERS)
        return resp(environ, start_response)

    # ------------------------------------------------------------------ authz (hot path)

    def authz(
        self,
        endpoint: Endpoint,
        methods: frozenset[str] | None,
        environ: WSGIEnvironment,
        start_response: StartResponse,
    ) -> Iterable[bytes]:
        if methods is not None and environ.get("REQUEST_METHOD") not in methods:
            answer = Answer(405, [("Allow", "GET, HEAD")], b"405 Method Not Allowed")
        else:
            answer = self.live.authorizer(endpoint, environ)
        level = _log_level(answer)
        if level is not None:
            fields = {
                "request_id": secrets.token_hex(8),
                "endpoint": endpoint.value,
                "status": answer.status,
                **answer.log,
            }
            decisions.log(level, "authz decision", extra={"fields": fields})
        status, headers, body = _reply(answer, environ)
        start_response(status, headers)
        return [body]

    def decide_inline(self, environ: WSGIEnvironment) -> Reply | None:
        """The response to an authz request when memory alone gives it, for waitress's I/O
        thread (``server.serve.inline``): the status line, headers and body ``authz`` would send.

        None sends the request to the thread pool as usual: not an authz request (or not an
        allowed method), a session store without in-memory reads (Redis without its cache),
        anything that would block (``Authorizer.decide_inline``), or an answer to be logged
        (a log handler may block).
        """
        if not self.inline_authz:
            return None
        route = _authz_route(environ.get("PATH_INFO", ""))
        if route is None:
            return None
        endpoint, methods = route
        if methods is not None and environ.get("REQUEST_METHOD") not in methods:
            return None
        answer = self.live.authorizer.decide_inline(endpoint, environ)
        if answer is None or _log_level(answer) is not None:
            return None
        return _reply(answer, environ)

    # ------------------------------------------------------------------ portal

    def portal_request(self, req: Request) -> Response:
        path = req.path_info
        if path.startswith(endpoints.API_PREFIX):
            resp = self.api_request(req, path)
            resp.headerlist.extend(API_HEADERS)
            return resp
        oidc = self.live.oidc
        if oidc is not None and path in oidc.pages:
            resp = oidc.page(req, path)
            resp.headerlist.extend(API_HEADERS[:1] + API_HEADERS[3:])
            return resp
        asset = self.assets.get(path)
        headers = PAGE_HEADERS
        if asset is None or req.method not in ("GET", "HEAD"):
            status = 405 if asset is not None else 404
            resp = Response(
                f"{status} {'Method Not Allowed' if status == 405 else 'Not Found'}",
                status=status,
                content_type="text/plain",
                charset="utf-8",
            )
            if status == 405:
                resp.headers["Allow"] = "GET, HEAD"
        else:
            resp = Response(body=asset.body, content_type=None)
            resp.headers["Content-Type"] = asset.content_type
            resp.headers["ETag"] = f'"{asset.etag}"'
            resp.headers["Cache-Control"] = (
                "no-cache" if not path.startswith("/static/") else "public, max-age=300"
            )
            if req.if_none_match and asset.etag in req.if_none_match:
                resp = Response(status=304)
            if asset.csp is not None:
                headers = (("Content-Security-Policy", asset.csp), *COMMON_HEADERS)
        resp.headerlist.extend(headers)
        return resp

    def api_request(self, req: Request, path: str) -> Response:
        """Route ``req``, apply its guards, and answer any failure through the one table of
        ``server.web.errors``; an unexpected exception reaches ``__call__`` (500)."""
        live = self.live  # read once: routes and guards of one config
        routes = live.routes.methods(path)
        if routes is None:
            return ko(404, "Not found.")
        route = routes.get(req.method)
        if route is None:
            resp = ko(405, "Method not allowed.")
            resp.headers["Allow"] = ", ".join(sorted(routes))
            return resp
        request_id = secrets.token_hex(8)
        req.environ["authctl.request_id"] = request_id
        try:
            resp = live.dispatch(route, req)
        except Exception as exc:
            error = translate(exc)
            if error is None:
                raise
            resp = error.response()
        resp.headers["X-Request-Id"] = request_id
        return resp

    def health(self, call: Call) -> Response:
        """``/api/health``: 200 ``{"status":"OK"}``, or 503 naming every part that cannot be
        used now (session store, storage, users file), so a load balancer takes this host
        out instead of sending it users it cannot sign in."""
        problems = self._health() if self._health is not None else []
        if problems:
            return ko(503, "; ".join(problems))
        return ok()


def health_check(store: SessionStore, storage: Storage, users: UsersSource) -> HealthCheck:
    """The ``/api/health`` check of the three things every sign-in needs."""

    def check() -> list[str]:
        problems = []
        for part in (store, storage):
            try:
                part.check()
            except StoreUnavailable as exc:
                problems.append(exc.public)
        if users.problem is not None:
            problems.append(
                "users file unusable: its last change cannot be read or is invalid "
                "(the last good copy is in use; see the log)"
            )
        return problems

    return check


def make_session_store(config: Config) -> SessionStore:
    """The store named by ``session.store``. SQLite and Redis records are sealed with a key
    derived from ``storage.encryption_key_file`` (the same file on every host).

    Raises:
        ValueError: the key file or ``session.redis_password_file`` is missing or invalid
            (the message says how to fix it).
        SessionStoreError: the SQLite store cannot be opened.
    """
    from server.core.crypto import read_key_file
    from server.core.session_store import MemoryStore
    from server.core.session_store import SQLiteStore
    from server.core.session_store import session_db_path

    if config.session.store == "memory":
        return MemoryStore()
    if config.session.store == "sqlite":
        key = read_key_file(Path(config.storage.encryption_key_file))
        return SQLiteStore(session_db_path(config), key=key)
    if config.session.store == "redis":
        from server.core.redis_store import RedisStore

        key = read_key_file(Path(config.storage.encryption_key_file))
        return RedisStore.from_config(config.session, key=key)
    raise ValueError(f"unknown session.store {config.session.store!r}")


def make_app(
    config: Config,
    *,
    now: Callable[[], float] = time.time,
    store: SessionStore | None = None,
    users: UsersSource | None = None,
    hasher: PasswordHasher | None = None,
    storage: Storage | None = None,
    notifier: Notifier | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> App:
    """Build the app from a validated config; collaborators may be passed in by tests.

    Raises:
        ValueError: a collaborator cannot start (unsupported store); the message says why.
        server.core.storage.StorageError: the storage database or its key is unusable.
        server.core.errors.UserStoreError: the users file is missing or invalid.
        server.core.audit.AuditError: ``log.audit_file`` cannot be opened.
    """
    from server.core.hashcap import HashGate
    from server.core.hashcap import default_max_concurrent
    from server.core.passwords import PasswordHasher
    from server.core.regulation import Regulator
    from server.core.storage import Storage
    from server.core.users import UsersSource

    audit.configure(config.log.audit_file)  # refuses to start when it cannot be opened
    if users is None:
        users = UsersSource(config.users.file, watch=config.users.watch)
    if hasher is None:
        hasher = PasswordHasher(config.users.password_hash)
    if store is None:
        store = make_session_store(config)
    if storage is None:
        storage = Storage(config.storage, now=now)
    Regulator(config.regulation, storage, now=now).purge()
    tokens = _token_service(config, storage, now)
    # wait_seconds=0: a login that finds every hashing slot taken is refused at once
    gate = HashGate(default_max_concurrent(config.server.threads), wait_seconds=0)
    kept = _Kept(store, storage, users, hasher, gate, now, sleep, tokens)
    authorizer, portal, selfservice = _build(config, kept, notifier)

    def rebuild(new: Config, old: Wiring) -> tuple[Authorizer, PortalApi, SelfServiceApi | None]:
        same = old.selfservice is not None and new.notifier == old.config.notifier
        built = _build(new, kept, old.selfservice.notifier if same and old.selfservice else None)
        if same and old.selfservice is not None and built[2] is not None:
            built[2].outbox = old.selfservice.outbox  # its thread and queued mail go on
        return built

    return App(
        config,
        authorizer,
        portal,
        load_assets(),
        selfservice,
        inline_authz=store.inline_reads,
        health=health_check(store, storage, users),
        rebuild=rebuild,
        oidc=lambda c, p: OidcApi.build(c, p.gate, p.sessions, storage, users.current, now),
    )


@dataclass(frozen=True, slots=True)
class _Kept:
    """What a config reload keeps: the stores and their connections, the users file and
    the hashing limits (their keys need a restart, ``server.core.reload.RESTART_ONLY``)."""

    store: SessionStore
    storage: Storage
    users: UsersSource
    hasher: PasswordHasher
    gate: HashGate
    now: Callable[[], float]
    sleep: Callable[[float], None]
    #: Personal access tokens: one per process, so its cache survives reloads.
    tokens: TokenService


def _token_service(config: Config, storage: Storage, now: Callable[[], float]) -> TokenService:
    """Tokens on ``storage``, their digests keyed from the storage key file.

    Raises:
        ValueError: the storage key file cannot be read.
    """
    from server.core.crypto import read_key_file
    from server.core.tokens import TokenService

    return TokenService(storage, read_key_file(Path(config.storage.encryption_key_file)), now=now)


def _build(
    config: Config, kept: _Kept, notifier: Notifier | None
) -> tuple[Authorizer, PortalApi, SelfServiceApi]:
    """The per-config collaborators, for ``make_app`` and each reload.

    Raises:
        ValueError: the notifier or the storage key file cannot be used.
    """
    from server.core.regulation import Regulator
    from server.core.sessions import SessionManager
    from server.core.totp import TotpService
    from server.web.selfservice import SelfServiceApi
    from server.web.webauthn_api import build_service

    now = kept.now
    regulator = Regulator(config.regulation, kept.storage, now=now)
    totp = TotpService(kept.storage, config.totp, regulator=regulator, now=now)
    sessions = SessionManager(config.session, kept.store, now=now)
    identities = IdentityResolver(
        kept.users, sessions, kept.hasher, regulator=regulator, gate=kept.gate
    )
    access = AccessControl(config.access_control)
    authorizer = Authorizer(config, access, identities, tokens=kept.tokens)
    webauthn = build_service(config, kept.storage, regulator, now)
    portal = PortalApi(config, access, identities, totp, webauthn)
    selfservice = SelfServiceApi.build(
        config, identities, totp, kept.storage, notifier=notifier, now=now, sleep=kept.sleep
    )
    return authorizer, portal, selfservice
