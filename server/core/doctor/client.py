"""Play the client against a protected ``--url`` reached through the real proxy.

Three questions, each judged from the answers alone (pure functions below):

- an anonymous request is sent to the portal (or refused for a ``deny`` site), never let
  through to the app;
- a client-forged ``Remote-User`` (and the other identity headers) never reaches the app as an
  identity. A forged header is proved harmless when the forged request is sent to sign in, or
  when the app echoes its request headers (detected by a header of our own coming back) and the
  forged value is not among them; an app that does not echo is "not checkable", a warning and
  never a made-up "ok";
- the proxy's forwarded headers are trusted and right: the portal redirect's ``rd`` names
  exactly the URL asked (scheme, host, port, path, query). A refusal (400/403) of an anonymous
  request to a site that needs sign-in is what authctl answers a proxy outside
  ``server.trusted_proxies``.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import parse_qs
from urllib.parse import urlsplit

from server.core.doctor.check import Check
from server.core.doctor.check import fail
from server.core.doctor.check import ok
from server.core.doctor.check import warn
from server.core.doctor.net import Answer
from server.core.policy import Policy

#: The identity headers a client must never be able to hand to the app.
IDENTITY_HEADERS = ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email")
#: A header of our own: when it comes back in the body, the app echoes what it received.
ECHO_HEADER = "X-Authctl-Doctor"
REDIRECTS = frozenset({301, 302, 303, 307, 308})

SNIPPET_FIX = (
    "let the proxy overwrite Remote-User, Remote-Groups, Remote-Name and Remote-Email with "
    "authctl's answer on every request of the site (nginx: auth_request plus "
    "proxy_set_header Remote-User $authctl_remote_user; Traefik: forwardAuth with "
    "authResponseHeaders); `authctl proxy-snippet PROXY --host HOST` writes it"
)
ASK_FIX = (
    "make the proxy ask authctl before every request of the site (nginx: auth_request "
    "/internal/authctl/authz in each location; Traefik: the forwardAuth middleware on the "
    "router; Caddy: forward_auth); `authctl proxy-snippet PROXY --host HOST` writes it"
)
TRUST_FIX = (
    "add the proxy's address as authctl sees it to server.trusted_proxies (authctl's log "
    "names the refused peer), and make the proxy send the forwarded headers of the request "
    "(`authctl proxy-snippet PROXY` shows them)"
)


@dataclass(frozen=True, slots=True)
class Probe:
    """The markers of one run: a random value for the forged headers and for the echo."""

    nonce: str = field(default_factory=lambda: secrets.token_hex(6))

    @property
    def forged(self) -> str:
        """The forged user name (random, so it cannot be confused with anything else)."""
        return f"forged-{self.nonce}"

    @property
    def echo(self) -> str:
        return f"echo-{self.nonce}"

    def headers(self, cookie: str | None = None) -> list[tuple[str, str]]:
        """A browser-like GET carrying the forged identity headers and the echo marker."""
        pairs = [
            ("Accept", "text/html,application/xhtml+xml"),
            ("User-Agent", "authctl-doctor"),
            (ECHO_HEADER, self.echo),
            ("Remote-User", self.forged),
            ("Remote-Groups", f"admins,{self.forged}"),
            ("Remote-Name", self.forged),
            ("Remote-Email", f"{self.forged}@invalid"),
        ]
        if cookie:
            pairs.append(("Cookie", cookie))
        return pairs

    def echoed(self, answer: Answer) -> bool:
        """True when the app showed the request headers it received."""
        return self.echo.encode() in answer.body

    def forged_seen(self, answer: Answer) -> bool:
        """True when the forged identity reached the app (it echoed it)."""
        return self.forged.encode() in answer.body


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, (parts.hostname or "").lower(), port


def portal_redirect(answer: Answer, portals: Sequence[str]) -> str | None:
    """The ``Location`` when ``answer`` sends the client to one of the ``portals``."""
    location = answer.header("location")
    if location is None or answer.status not in REDIRECTS | {401}:
        return None
    try:
        where = _origin(location)
    except ValueError:
        return None
    return location if any(_origin(p) == where for p in portals) else None


def expects_sign_in(policy: Policy, has_subject: bool) -> bool:
    """Whether an anonymous request must be sent to the portal."""
    return has_subject or policy in (Policy.ONE_FACTOR, Policy.TWO_FACTOR)


def judge_anonymous(
    url: str, answer: Answer, policy: Policy, has_subject: bool, portals: Sequence[str]
) -> Check:
    """An anonymous request is sent to the portal (or refused on a ``deny`` site)."""
    name = f"{url}: anonymous request"
    status = answer.status
    location = portal_redirect(answer, portals)
    if not expects_sign_in(policy, has_subject):
        if policy is Policy.BYPASS:
            return ok(name, f"the site's policy is bypass (public); it answered {status}")
        if status == 403:
            return ok(name, "the site's policy is deny, and the request was refused (403)")
        return fail(name, f"the site's policy is deny, yet it answered {status}",
                    ASK_FIX)  # fmt: skip
    if location is not None:
        return ok(name, f"sent to sign in ({status}) at {location.split('?', 1)[0]}")
    if status == 401:
        return fail(
            name,
            "answered 401 without a Location to the portal: browsers show an error instead "
            "of the sign-in page",
            "let the proxy turn authctl's 401 + Location into a redirect (nginx: auth_request_set "
            "$authctl_redirect $upstream_http_location; error_page 401 = @authctl_401; and the "
            "location @authctl_401 that `authctl proxy-snippet nginx` writes)",
        )
    if status in (400, 403):
        return fail(
            name,
            f"refused ({status}) instead of being sent to sign in: authctl refuses the "
            "proxy's question (a proxy outside server.trusted_proxies, or malformed "
            "forwarded headers)",
            TRUST_FIX,
        )
    if status >= 500:
        return fail(
            name,
            f"answered {status}: the proxy cannot reach authctl or cannot use its answer",
            "check that authctl runs and that the proxy calls its authz endpoint (nginx: "
            "/api/authz/auth-request, which answers 401; Traefik/Caddy: "
            "/api/authz/forward-auth); see the proxy's error log",
        )
    where = f" (Location: {answer.header('location')})" if answer.header("location") else ""
    return fail(
        name,
        f"the app answered {status}{where} to a request without sign-in: the proxy does "
        "not ask authctl for this site",
        ASK_FIX,
    )


def judge_forged(url: str, probe: Probe, answer: Answer, portals: Sequence[str]) -> Check:
    """The client's forged ``Remote-User`` did not reach the app as an identity (anonymous)."""
    name = f"{url}: forged Remote-User"
    if probe.forged_seen(answer):
        return fail(
            name,
            f"the app received the client's Remote-User: {probe.forged}: any client can "
            "claim to be anyone",
            SNIPPET_FIX,
        )
    if portal_redirect(answer, portals) is not None or answer.status in (400, 401, 403):
        return ok(
            name,
            f"a request carrying Remote-User: {probe.forged} was not let through "
            f"({answer.status}): the forged header did not authenticate",
        )
    if probe.echoed(answer):
        return ok(name, "the app echoes its request headers, and the forged Remote-User "
                  "was not among them")  # fmt: skip
    return warn(
        name,
        f"not checkable: the app answered {answer.status} without echoing its request "
        "headers, so what it received cannot be seen",
        "point --url at a path of the app that echoes request headers, or read the proxy "
        "config: it must set every Remote-* header from authctl's answer",
    )


def judge_signed_in(url: str, probe: Probe, answer: Answer, user: str | None,
                    portals: Sequence[str]) -> Check:  # fmt: skip
    """Signed in: the app sees authctl's identity, never the forged one."""
    name = f"{url}: forged Remote-User, signed in"
    if probe.forged_seen(answer):
        return fail(
            name,
            f"signed in, the app still received the client's Remote-User: {probe.forged}",
            SNIPPET_FIX,
        )
    if portal_redirect(answer, portals) is not None:
        return warn(
            name,
            "not checkable: even with the session the request was sent to sign in (a "
            "two_factor site needs a session with both factors)",
            "pass --cookie NAME=VALUE of a session that may see the site",
        )
    if answer.status >= 300:
        return warn(name, f"not checkable: signed in, the site answered {answer.status}",
                    "use a user the site allows, or another --url")  # fmt: skip
    if not probe.echoed(answer):
        return warn(
            name,
            "not checkable: the app does not echo its request headers",
            "point --url at a path of the app that echoes request headers",
        )
    seen = f" and shows {user!r} from authctl" if user and user.encode() in answer.body else ""
    return ok(name, f"the app echoes its request headers{seen}; the forged value never arrived")


def judge_forwarded(
    url: str, answer: Answer, policy: Policy, has_subject: bool, portals: Sequence[str]
) -> Check:
    """authctl believed the proxy and judged the very URL asked (``rd`` of the redirect)."""
    name = f"{url}: forwarded headers"
    location = portal_redirect(answer, portals)
    if location is None:
        if expects_sign_in(policy, has_subject) and answer.status in (400, 403):
            return fail(
                name,
                f"authctl refused the proxy's question ({answer.status}): it does not trust "
                "the proxy's forwarded headers",
                TRUST_FIX,
            )
        if expects_sign_in(policy, has_subject):
            return warn(
                name,
                f"not checkable: no redirect to the portal to read (answered {answer.status})",
                "fix the anonymous request first (see its check)",
            )
        return warn(
            name,
            f"not checkable: the site's policy is {policy.value}, so nothing is sent to sign in",
            "give a --url whose policy needs sign-in",
        )
    rd = parse_qs(urlsplit(location).query).get("rd", [""])[0]
    if not rd:
        return warn(name, "the portal redirect carries no rd: where authctl judged is unknown",
                    "use authctl's authz endpoints as `authctl proxy-snippet` does")  # fmt: skip
    if same_url(rd, url):
        return ok(name, f"authctl judged {rd}, the URL asked: the proxy forwards scheme, "
                  "host and path, from a trusted address")  # fmt: skip
    return fail(
        name,
        f"authctl judged {rd} but the URL asked was {url}: the proxy forwards a wrong "
        "scheme, host or path (X-Forwarded-Proto/-Host/-Uri, X-Original-URL), so rules "
        "match the wrong site",
        "forward the request's own scheme, Host and URI (`authctl proxy-snippet PROXY` "
        "shows them); do not let clients set them",
    )


def same_url(a: str, b: str) -> bool:
    """Equal scheme, host, port (default ports dropped), path and query."""
    pa, pb = urlsplit(a), urlsplit(b)
    try:
        same_origin = _origin(a) == _origin(b)
    except ValueError:
        return False
    return same_origin and (pa.path or "/") == (pb.path or "/") and pa.query == pb.query


def session_cookie(answer: Answer, name: str) -> str | None:
    """``name=value`` of the session cookie a sign-in answer sets, or None."""
    for header in answer.headers_named("set-cookie"):
        pair = header.split(";", 1)[0].strip()
        if pair.partition("=")[0] == name and pair.partition("=")[2]:
            return pair
    return None
