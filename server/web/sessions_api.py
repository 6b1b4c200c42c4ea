"""Sessions you can see and end (SPEC §7.6): the signed-in user's own sessions, by handle.

- ``GET /api/user/sessions``: the user's live sessions, newest activity first, as
  ``{handle, created_at, last_seen_at, ip, user_agent, current, authentication_level}``
  (``server.core.sessions.describe``; times RFC 3339 UTC; fields a record written before
  this feature lacks are null).
- ``DELETE /api/user/sessions/<handle>``: end one of them. A handle of another user's session
  and an unknown one get the same 404; a session id is never a handle (it has another shape,
  and handles are only ever compared with handles). Ending the session that asks also
  expires its cookie, as logout does.
- ``DELETE /api/user/sessions``: end every other session of the user.

Only the user's own sessions are ever read or ended: the user comes from the session cookie
(the ``SIGNED_IN`` guard), never from the request. State changes take same-origin JSON only
(``SAME_ORIGIN``, ``JSON_BODY``: SPEC §3.4); the list is same-origin too. No elevation is
asked: ending a session only ever takes access away, and a user who has just seen a stranger's
session must be able to end it at once. Each ending is one ``session_revoked`` audit event;
other hosts stop honouring it within the store's invalidation bound (SPEC §7.2).
"""

from __future__ import annotations

import logging
import typing as t

from server.core import audit
from server.core import endpoints
from server.core.sessions import describe
from server.core.sessions import store_key
from server.web.errors import ApiError
from server.web.errors import ok
from server.web.routes import JSON_BODY
from server.web.routes import SAME_ORIGIN
from server.web.routes import SIGNED_IN
from server.web.routes import Call
from server.web.routes import Route
from server.web.routes import last_segment

if t.TYPE_CHECKING:
    from webob import Response

    from server.core.sessions import SessionManager

log = logging.getLogger("authctl.sessions")

NOT_FOUND = "No such session."


class SessionsApi:
    """The three routes of the user's sessions, on the process's ``SessionManager``."""

    def __init__(self, sessions: SessionManager) -> None:
        self.sessions = sessions

    def routes(self) -> list[Route]:
        """The routes and their guards (``server.web.routes``)."""
        change = (SAME_ORIGIN, JSON_BODY, SIGNED_IN)
        return [
            Route("GET", endpoints.USER_SESSIONS, self.list_sessions, (SAME_ORIGIN, SIGNED_IN)),
            Route("DELETE", endpoints.USER_SESSIONS, self.revoke_others, change),
            Route("DELETE", endpoints.USER_SESSION, self.revoke, change),
        ]

    def list_sessions(self, call: Call) -> Response:
        """``GET /api/user/sessions``: the signed-in user's sessions, this one marked."""
        identity, session = call.signed_in()
        current = store_key(session.id)
        found = self.sessions.list_sessions(identity.username)
        # a session made under an older password is refused at its next request (its
        # stamp differs from this live one's): not shown as if it could still be used
        stamp = session.user_stamp
        return ok([describe(s, current) for s in found if s.session.user_stamp == stamp])

    def revoke(self, call: Call) -> Response:
        """``DELETE /api/user/sessions/<handle>``: end one of the user's own sessions."""
        identity, session = call.signed_in()
        handle = last_segment(call.req)
        if not self.sessions.revoke(identity.username, handle):
            raise ApiError(404, NOT_FOUND)
        self._ended(call, identity.username, 1)
        resp = ok()
        if handle == session.handle:
            resp.headerlist.append(
                ("Set-Cookie", self.sessions.expired_cookie_header_value(call.cookie.domain))
            )
        return resp

    def revoke_others(self, call: Call) -> Response:
        """``DELETE /api/user/sessions``: end every session of the user but this one."""
        identity, session = call.signed_in()
        ended = self.sessions.revoke_others(identity.username, session)
        self._ended(call, identity.username, ended)
        return ok({"revoked": ended})

    @staticmethod
    def _ended(call: Call, username: str, count: int) -> None:
        ip = call.origin.client_ip
        log.info(
            "sessions ended by their user",
            extra={"fields": {"user": username, "ip": ip, "sessions_ended": count}},
        )
        for _ in range(count):
            audit.emit("session_revoked", user=username, ip=ip, result="success", reason="user")
