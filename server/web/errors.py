"""The portal API's error vocabulary: the envelopes, ``ApiError`` and the one table that turns a
core failure into an HTTP answer.

Every API handler answers through here, so the same failure gets the same status, message and
``Retry-After`` from every endpoint that can meet it (a store outage is the same 503 from
``/api/firstfactor`` as from ``/api/user/session/elevation``). Handlers raise; only
``server.web.app`` (the dispatcher) calls :func:`answer`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from webob import Response

from server.core.errors import StoreUnavailable
from server.core.hashcap import Busy
from server.core.notifier import NotifierError
from server.core.notifier import OutboxFull
from server.core.ratelimit import retry_after_header

log = logging.getLogger("authctl.api")

TOO_MANY = "Too many requests. Wait a few minutes and try again."
MAIL_QUEUE_FULL = "The mail queue is full. Try again shortly."
#: ``Retry-After`` (seconds) sent with :data:`MAIL_QUEUE_FULL`.
MAIL_QUEUE_RETRY = 30
MAIL_FAILED = "The email could not be sent. Try again later."
BUSY = "The server is busy. Try again in a moment."
#: ``Retry-After`` (seconds) sent with a store outage.
STORE_RETRY = 5
INTERNAL = "Internal error."


class ApiError(Exception):
    """An API failure with its HTTP status and the message the client may see.

    ``data`` (optional) goes into the envelope too, e.g. ``{"elevation": True}``: Authelia's
    way of telling the portal what it must do first (sign in, second factor, identity check).
    ``headers`` are added to the answer (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        data: dict[str, object] | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.data = data
        self.headers = headers

    def response(self) -> Response:
        """The KO envelope of this error."""
        resp = ko(self.status, self.message, self.data)
        for name, value in self.headers:
            resp.headers[name] = value
        return resp


class RateLimited(ApiError):
    """429 with ``Retry-After`` (``wait`` seconds, rounded up)."""

    def __init__(self, wait: float) -> None:
        super().__init__(429, TOO_MANY, headers=(("Retry-After", retry_after_header(wait)),))
        self.wait = wait


def ok(data: object = None, status: int = 200) -> Response:
    """The success envelope."""
    body: dict[str, object] = {"status": "OK"}
    if data is not None:
        body["data"] = data
    return Response(json_body=body, status=status, charset="utf-8")


def ko(status: int, message: str, data: dict[str, object] | None = None) -> Response:
    """The failure envelope (with ``data`` when given)."""
    body: dict[str, object] = {"status": "KO", "message": message}
    if data is not None:
        body["data"] = data
    return Response(json_body=body, status=status, charset="utf-8")


def _store_unavailable(exc: BaseException) -> ApiError:
    # the store logged the outage (once); its details may name hosts and paths
    part = exc.part if isinstance(exc, StoreUnavailable) else "store"
    return ApiError(
        503,
        f"The {part} is unavailable; try again in a moment.",
        headers=(("Retry-After", str(STORE_RETRY)),),
    )


def _outbox_full(exc: BaseException) -> ApiError:
    log.warning("%s; refused a request that sends mail", exc)
    return ApiError(503, MAIL_QUEUE_FULL, headers=(("Retry-After", str(MAIL_QUEUE_RETRY)),))


def _mail_failed(exc: BaseException) -> ApiError:
    log.error("a notification could not be sent", exc_info=exc)
    return ApiError(503, MAIL_FAILED)


def _busy(exc: BaseException) -> ApiError:
    return ApiError(503, BUSY)


@dataclass(frozen=True, slots=True)
class Translation:
    """One row of :data:`TABLE`: core errors of ``kind`` become the ``ApiError`` it builds."""

    kind: type[BaseException]
    build: Callable[[BaseException], ApiError]


#: Core exception -> HTTP answer, first match wins (a subclass comes before its base; a test
#: checks that no row is shadowed). Anything not here is a bug: 500 "Internal error.", logged.
TABLE: tuple[Translation, ...] = (
    Translation(StoreUnavailable, _store_unavailable),
    Translation(OutboxFull, _outbox_full),
    Translation(NotifierError, _mail_failed),
    Translation(Busy, _busy),
)


def translate(exc: BaseException) -> ApiError | None:
    """The ``ApiError`` ``exc`` is answered with; None when it is not an expected failure."""
    if isinstance(exc, ApiError):
        return exc
    for row in TABLE:
        if isinstance(exc, row.kind):
            return row.build(exc)
    return None


def internal_error() -> Response:
    """The answer to an unexpected exception (the caller logs it)."""
    return ko(500, INTERNAL)
