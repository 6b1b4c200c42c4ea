"""The portal API's route table: each endpoint with the guards it needs, applied by one
dispatcher before the handler runs (Authelia's handler table, ``handlers.go``).

A guard is declared, not coded in the handler, so a test can read the table and check that
every state-changing route takes only same-origin JSON (login CSRF and cross-site form posts,
security.md §2.I) and that no ``(method, path)`` is defined twice. Guards run in the order the
route lists them; the first that refuses answers. What they found (the origin, the JSON body,
the signed-in identity) reaches the handler in a :class:`Call`.
"""

from __future__ import annotations

import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field

from webob import Request
from webob import Response

from server.core import jsonstrict
from server.core.cookies import session_ids
from server.core.forwarded import TrustedProxies
from server.core.ratelimit import RateLimiter
from server.web.errors import ApiError
from server.web.errors import RateLimited

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.config import CookieConfig
    from server.core.identity import Identity
    from server.core.identity import IdentityResolver
    from server.core.sessions import Session
    from server.core.sessions import SessionManager

MAX_BODY = 64 * 1024
CROSS_ORIGIN = "Cross-origin request refused."
#: Methods that change nothing (SPEC §3.4: "GET changes nothing").
SAFE_METHODS = frozenset({"GET", "HEAD"})


# ---------------------------------------------------------------------- guards


@dataclass(frozen=True)
class Guard:
    """A check the dispatcher makes before the handler runs."""

    name: str


#: ``https`` on a configured cookie domain, and an ``Origin``/``Sec-Fetch-Site`` (when sent)
#: naming this origin: 400 or 403 otherwise.
SAME_ORIGIN = Guard("same_origin")
#: An ``application/json`` object body (415, 413 or 400 otherwise), parsed into ``Call.data``.
JSON_BODY = Guard("json_body")
#: As :data:`JSON_BODY` when a body is sent; no body reads as ``{}`` (``/api/logout``).
OPTIONAL_JSON_BODY = Guard("optional_json_body")
#: An elevated session, at level 2 when the user has a TOTP secret (self-service changes).
ELEVATED = Guard("elevated")


@dataclass(frozen=True)
class SignedIn(Guard):
    """A signed-in session (level >= 1), else this answer; it fills ``Call.identity``."""

    status: int = 401
    message: str = "Sign in first."
    first_factor: bool = True

    def refusal(self) -> ApiError:
        data: dict[str, object] | None = {"first_factor": True} if self.first_factor else None
        return ApiError(self.status, self.message, data)


#: Self-service: 401 with ``data.first_factor`` (the portal shows its sign-in view).
SIGNED_IN = SignedIn("signed_in")
#: ``/api/secondfactor/totp``: the code needs a password session first.
SIGNED_IN_FOR_CODE = SignedIn(
    "signed_in", 401, "Sign in with your password first.", first_factor=False
)
#: Read-only account endpoints: Authelia's 403.
SIGNED_IN_FOR_INFO = SignedIn("signed_in", 403, "Unauthorized.", first_factor=False)

USER = "user"
IP = "ip"


@dataclass(frozen=True)
class RateLimit(Guard):
    """Hit every named limiter at once, keyed by the signed-in user or the client IP; 429 with
    ``Retry-After`` when one refuses (nothing recorded then). A missing key is skipped. The hits
    are counted in storage (one transaction per request); a storage failure raises, and the
    request gets the outage's 503 (fail closed)."""

    limits: tuple[tuple[str, str], ...] = ()


def rate_limit(*limits: tuple[str, str]) -> RateLimit:
    """A :class:`RateLimit` guard over ``(limiter name, USER or IP)`` pairs."""
    return RateLimit("rate_limit", limits)


# ---------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class Origin:
    """Where the portal request came from, as the trusted proxy tells it."""

    scheme: str
    host: str
    hostport: str
    cookie: CookieConfig | None
    client_ip: str | None


@dataclass(slots=True)
class Call:
    """One API request and what its route's guards established."""

    req: Request
    origin: Origin
    data: dict[str, t.Any] = dataclass_field(default_factory=dict)
    identity: Identity | None = None
    session: Session | None = None

    @property
    def cookie(self) -> CookieConfig:
        """The cookie domain of the request (routes guarded by :data:`SAME_ORIGIN`)."""
        cookie = self.origin.cookie
        if cookie is None:  # pragma: no cover - the guard refused the request already
            raise AssertionError("route without the same-origin guard needs a cookie")
        return cookie

    def signed_in(self) -> tuple[Identity, Session]:
        """The identity and session (routes guarded by a :class:`SignedIn`)."""
        if self.identity is None or self.session is None:  # pragma: no cover - guarded
            raise AssertionError("route without a signed-in guard needs a session")
        return self.identity, self.session


Handler = Callable[[Call], Response]


def field(data: Mapping[str, t.Any], name: str, kind: type, *, required: bool = False) -> t.Any:
    """A strictly typed field (``"false"`` is not a boolean; ``["alice"]`` not a name)."""
    if name not in data or data[name] is None:
        if required:
            raise ApiError(400, f"Missing field {name}.")
        return None
    value = data[name]
    if type(value) is not kind:
        raise ApiError(400, f"Field {name} has the wrong type.")
    return value


def json_body(req: Request) -> dict[str, t.Any]:
    """The request's JSON object; 415 for other types, 413 when too large, 400 if bad."""
    if req.content_type != "application/json":
        raise ApiError(415, "Send the request as application/json.")
    length = req.content_length
    if length is not None and length > MAX_BODY:
        raise ApiError(413, "Request body too large.")
    raw = req.body_file.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, "Request body too large.")
    try:
        data = jsonstrict.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):
        raise ApiError(400, "Malformed JSON body.") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The body must be a JSON object.")
    return data


def last_segment(req: Request) -> str:
    """The value of a ``/{name}`` route's last segment (see ``RouteTable``)."""
    return str(req.path_info).rpartition("/")[2]


def set_session_cookie(
    resp: Response, sessions: SessionManager, session: Session, cookie: CookieConfig
) -> None:
    """Give the browser ``session``'s id for ``cookie``'s domain."""
    resp.headerlist.append(("Set-Cookie", sessions.cookie_header_value(session, cookie.domain)))


class Gate:
    """Reads a portal request: its origin (believed only from trusted proxies) and session."""

    def __init__(self, config: Config, identities: IdentityResolver) -> None:
        self.config = config
        self.identities = identities
        self.proxies = TrustedProxies(config.server.trusted_proxies)

    def origin(self, req: Request) -> Origin:
        """The scheme and host the browser used, believed only from trusted proxies."""
        peer = req.environ.get("REMOTE_ADDR", "")
        trusted = peer in self.proxies
        if trusted and req.headers.get("X-Forwarded-Proto"):
            scheme = req.headers["X-Forwarded-Proto"].strip().lower()
            hostport = (req.headers.get("X-Forwarded-Host") or req.host or "").strip().lower()
        else:
            scheme = req.scheme
            hostport = (req.host or "").strip().lower()
        host = hostport
        if host.startswith("["):
            host = host.partition("]")[0] + "]"
        elif ":" in host:
            host = host.rpartition(":")[0]
        cookie = self.config.session.cookie_for(host) if scheme == "https" else None
        client = self.proxies.client_ip(peer, req.headers.get("X-Forwarded-For"))
        return Origin(scheme, host, hostport, cookie, str(client) if client else None)

    @staticmethod
    def same_origin(req: Request, origin: Origin) -> None:
        """Refuse plain HTTP, unknown hosts and cross-site requests for state changes."""
        if origin.cookie is None:
            raise ApiError(
                400, "The portal must be reached over HTTPS on a configured cookie domain."
            )
        sent_origin = req.headers.get("Origin")
        if sent_origin is not None and sent_origin.lower() != f"https://{origin.hostport}":
            raise ApiError(403, CROSS_ORIGIN)
        fetch_site = req.headers.get("Sec-Fetch-Site")
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            raise ApiError(403, CROSS_ORIGIN)

    def session(self, req: Request, origin: Origin) -> tuple[Identity, Session] | None:
        """The signed-in identity for this request, if any."""
        if origin.cookie is None:
            return None
        for value in session_ids(req.headers.get("Cookie"), self.config.session.name):
            found = self.identities.from_session(value, origin.cookie.domain)
            if found is not None:
                return found
        return None


# ---------------------------------------------------------------------- table


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: ``method path`` answered by ``handler`` once every guard passed."""

    method: str
    path: str
    handler: Handler
    guards: tuple[Guard, ...] = ()

    @property
    def changes_state(self) -> bool:
        return self.method not in SAFE_METHODS


def is_pattern(path: str) -> bool:
    """True for a path whose last segment is a ``{name}`` (one segment, any value)."""
    last = path.rpartition("/")[2]
    return last.startswith("{") and last.endswith("}")


class RouteTable:
    """Path -> method -> route; refuses a ``(method, path)`` defined twice.

    A path ending in ``/{name}`` (``/api/user/sessions/{handle}``) serves every path with one
    more non-empty segment there; the handler reads it (``last_segment``). An exact path
    wins over a pattern.
    """

    def __init__(self, routes: Iterable[Route]) -> None:
        self._paths: dict[str, dict[str, Route]] = {}
        self._patterns: dict[str, dict[str, Route]] = {}
        for route in routes:
            methods = self._paths.setdefault(route.path, {})
            if route.method in methods:
                raise ValueError(f"{route.method} {route.path} is defined twice")
            methods[route.method] = route
            if is_pattern(route.path):
                self._patterns[route.path.rpartition("/")[0]] = methods

    def methods(self, path: str) -> Mapping[str, Route] | None:
        """The routes of ``path`` by method; None for an unknown path."""
        found = self._paths.get(path)
        if found is None and self._patterns:
            head, _, last = path.rpartition("/")
            if last:
                found = self._patterns.get(head)
        return found

    def __iter__(self) -> Iterator[Route]:
        for methods in self._paths.values():
            yield from methods.values()


class Dispatcher:
    """Applies a route's guards in order and calls its handler with the :class:`Call`.

    ``elevation`` checks an :data:`ELEVATED` route (self-service's rule); ``limiters`` are the
    rate limiters :class:`RateLimit` guards name.
    """

    def __init__(
        self,
        gate: Gate,
        *,
        elevation: Callable[[Identity, Session], None] | None = None,
        limiters: Mapping[str, RateLimiter] | None = None,
    ) -> None:
        self.gate = gate
        self.elevation = elevation
        self.limiters: Mapping[str, RateLimiter] = limiters or {}

    def __call__(self, route: Route, req: Request) -> Response:
        call = Call(req, self.gate.origin(req))
        for guard in route.guards:
            self._check(guard, call)
        return route.handler(call)

    def _check(self, guard: Guard, call: Call) -> None:
        if guard is SAME_ORIGIN:
            self.gate.same_origin(call.req, call.origin)
        elif guard is JSON_BODY:
            call.data = json_body(call.req)
        elif guard is OPTIONAL_JSON_BODY:
            call.data = json_body(call.req) if call.req.body else {}
        elif isinstance(guard, SignedIn):
            found = self.gate.session(call.req, call.origin)
            if found is None:
                raise guard.refusal()
            call.identity, call.session = found
        elif guard is ELEVATED:
            if self.elevation is None:  # pragma: no cover - a wiring bug, fail closed
                raise ApiError(403, "This change is not available.")
            self.elevation(*call.signed_in())
        elif isinstance(guard, RateLimit):
            self._limit(guard, call)
        else:  # pragma: no cover - an unknown guard is a wiring bug: fail closed
            raise AssertionError(f"unknown guard {guard.name}")

    def _limit(self, guard: RateLimit, call: Call) -> None:
        pairs = []
        for name, by in guard.limits:
            key = call.signed_in()[0].username if by == USER else call.origin.client_ip
            if key:
                pairs.append((self.limiters[name], key))
        wait = RateLimiter.hit_all(pairs)
        if wait > 0:
            raise RateLimited(wait)
