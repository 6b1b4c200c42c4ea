"""Personal access tokens at the portal (SPEC §7.6): the signed-in user's own tokens.

- ``GET /api/user/tokens``: the user's live tokens, oldest first, as ``{id, name,
  created_at, last_used_at, expires_at, expired, domains, two_factor, created_by}``
  (``server.core.tokens.describe``): never the token, never its digest.
- ``POST /api/user/tokens`` ``{name, expires?, domains?}``: make one, only while the session
  is elevated (the ``ELEVATED`` guard, as for TOTP enrolment: a stolen session cookie alone
  cannot mint a long-lived credential). ``expires`` is a duration (``"30d"``) or seconds;
  ``domains`` limit the token to those hosts and their subdomains, each inside a cookie
  domain. The answer holds the token, once (``data.token``). A portal token is always one
  factor: ``two_factor`` is refused here (only ``authctl token create --two-factor``).
- ``DELETE /api/user/tokens/<id>``: revoke one of the user's own tokens. Another user's id
  and an unknown one get the same 404. No elevation: revoking only takes access away.

The user comes from the session cookie (``SIGNED_IN``), never from the request; state
changes take same-origin JSON only (``SAME_ORIGIN``, ``JSON_BODY``: SPEC §3.4). Each change
is one audit event (``token_created``, ``token_revoked``); the log names the token's public
id, never the token.
"""

from __future__ import annotations

import logging
import typing as t

from server.core import audit
from server.core import endpoints
from server.core.durations import parse_duration
from server.core.tokens import MAX_PORTAL_TOKENS
from server.core.tokens import TokenError
from server.core.tokens import clean_domains
from server.core.tokens import clean_name
from server.core.tokens import describe
from server.web.errors import ApiError
from server.web.errors import ok
from server.web.routes import ELEVATED
from server.web.routes import JSON_BODY
from server.web.routes import SAME_ORIGIN
from server.web.routes import SIGNED_IN
from server.web.routes import Call
from server.web.routes import Route
from server.web.routes import last_segment

if t.TYPE_CHECKING:
    from webob import Response

    from server.core.config import Config
    from server.core.tokens import TokenService

log = logging.getLogger("authctl.tokens")

NOT_FOUND = "No such token."
#: The fields ``POST /api/user/tokens`` takes (anything else is refused, ``two_factor`` too).
CREATE_FIELDS = frozenset({"name", "expires", "domains"})


class TokensApi:
    """The three routes of the user's tokens, on the process's ``TokenService``."""

    def __init__(self, tokens: TokenService, config: Config) -> None:
        self.tokens = tokens
        self.cookie_domains = tuple(cookie.domain for cookie in config.session.cookies)

    def routes(self) -> list[Route]:
        """The routes and their guards (``server.web.routes``)."""
        return [
            Route("GET", endpoints.USER_TOKENS, self.list_tokens, (SAME_ORIGIN, SIGNED_IN)),
            Route(
                "POST",
                endpoints.USER_TOKENS,
                self.create,
                (SAME_ORIGIN, JSON_BODY, SIGNED_IN, ELEVATED),
            ),
            Route("DELETE", endpoints.USER_TOKEN, self.revoke, (SAME_ORIGIN, JSON_BODY, SIGNED_IN)),
        ]

    def list_tokens(self, call: Call) -> Response:
        """``GET /api/user/tokens``: the signed-in user's live tokens."""
        identity, _session = call.signed_in()
        now = self.tokens.now()
        return ok([describe(token, now) for token in self.tokens.tokens(identity.username)])

    def create(self, call: Call) -> Response:
        """``POST /api/user/tokens``: make a token; the answer shows it once."""
        identity, _session = call.signed_in()
        data = call.data
        unknown = sorted(set(data) - CREATE_FIELDS)
        if unknown:
            raise ApiError(400, f"Unknown field {unknown[0]}.")
        expires = data.get("expires")
        domains = data.get("domains")
        try:
            expires_in = None if expires is None else parse_duration(expires)
            if domains is not None and not isinstance(domains, list):
                raise TokenError("domains must be a list of host names")
            hosts = clean_domains(domains or (), self.cookie_domains)
            name = clean_name(data.get("name"))
        except ValueError as exc:  # TokenError too
            message = str(exc)
            raise ApiError(400, f"{message[:1].upper()}{message[1:]}.") from None
        if len(self.tokens.tokens(identity.username)) >= MAX_PORTAL_TOKENS:
            raise ApiError(409, f"You have {MAX_PORTAL_TOKENS} tokens; revoke one first.")
        try:
            token, record = self.tokens.create(
                identity.username,
                name,
                created_by="portal",
                expires_in=expires_in,
                domains=hosts,
            )
        except TokenError as exc:  # a zero expiry
            message = str(exc)
            raise ApiError(400, f"{message[:1].upper()}{message[1:]}.") from None
        ip = call.origin.client_ip
        log.info(
            "access token created by its user",
            extra={"fields": {"user": identity.username, "ip": ip, "token_id": record.id}},
        )
        audit.emit("token_created", user=identity.username, ip=ip, result="success", reason="user")
        return ok({"token": token, **describe(record, record.created_at)})

    def revoke(self, call: Call) -> Response:
        """``DELETE /api/user/tokens/<id>``: revoke one of the user's own tokens."""
        identity, _session = call.signed_in()
        token_id = last_segment(call.req)
        if self.tokens.revoke(token_id, identity.username) is None:
            raise ApiError(404, NOT_FOUND)
        ip = call.origin.client_ip
        log.info(
            "access token revoked by its user",
            extra={"fields": {"user": identity.username, "ip": ip, "token_id": token_id}},
        )
        audit.emit("token_revoked", user=identity.username, ip=ip, result="success", reason="user")
        return ok()
