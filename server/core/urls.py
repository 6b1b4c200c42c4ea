"""Target URLs and redirect safety: the only place where authctl parses a URL.

This module owns three decisions that every authorization answer depends on:

* **what was asked for**: ``parse_target`` (``X-Original-URL``, ``/api/verify``) and
  ``build_target`` (``X-Forwarded-Proto`` + ``-Host`` + ``-Uri``, Envoy's ``Host`` + sub-path)
  turn the proxy's description of a request into a :class:`Target`, and refuse with
  :class:`~server.core.errors.InvalidTargetError` anything they cannot read one way only;
* **which path the rules see**: ``normalise_path`` (SPEC §2.1);
* **where a browser may be sent**: ``safe_redirect`` (SPEC §3.5).

Everything is precompiled at import, and the common case
(a lowercase LDH host, a clean path, a plain query) is recognised by one regular expression;
the general route, which gives the same answer (a property test checks it), runs only for
the rest.

Targets (``parse_target``/``build_target``)
-------------------------------------------
* Anything malformed raises, so the caller answers 400/401/403 and never 200: Authelia's
  GHSA-68wm-pfjf-wqp6 / CVE-2021-32637 was a malformed URI on nginx ``auth_request`` that
  ended in a 200.
* The wire form must be printable ASCII with no backslash. Browsers send A-labels and
  percent-encoding; under WSGI a header's raw bytes arrive decoded as Latin-1, so a raw
  non-ASCII character is mojibake whose meaning we would have to guess. **Raw non-ASCII in a
  target (host, path or query) is refused**, not re-encoded.
* Schemes ``http``, ``https``, ``ws`` and ``wss`` parse (lowercased); the caller refuses all but
  ``https``/``wss`` with its own 400, so the log can say "plain HTTP refused" precisely.
  A default port (80 for http/ws, 443 for https/wss) becomes ``None``.
* Host: lowercase (GHSA-j748-h363-wqj8: case-sensitive rule matching let a mixed-case host
  fall to a weaker rule), letters/digits/hyphens in dot-separated labels of 1-63 characters,
  no trailing dot (one more spelling of the same host is one more way round a rule), no
  userinfo (``@``), no ``%``, a port of 1-65535 made of digits. **IP literals are refused**:
  bracketed IPv6, and any host whose last label is numeric (``127.0.0.1``, ``2130706433``,
  ``0x7f``), because WHATWG parsers read those as IPv4. A cookie domain is never an IP, so
  Authelia would answer 400 for them anyway.
* ``X-Forwarded-Proto`` must be exactly one scheme (a comma list such as ``https, http`` is
  refused). An empty ``X-Forwarded-Uri`` means ``/`` (Authelia); one that does not start with
  ``/`` (``admin``, ``https://evil.com/admin``) is refused. Path plus query is capped at
  :data:`MAX_URI_LENGTH` characters, which nginx's default request line limit (8 KiB)
  already implies.
* The query is kept raw (the rules' query criteria decode it themselves); the resource
  string the rules search is ``path`` + ``"?" + query`` when there is one (Authelia).
  oauth2-proxy GHSA-7rh7-c77v-6434 is the reminder that this string carries attacker text
  after ``?``: anchor resource regexes.
* Fragments: a browser never sends one, and ``#`` in a forwarded URI is where oauth2-proxy
  GHSA-pxq7-h93f-9jrg / CVE-2026-41059 broke (``/foo/secret#/bar`` matched ``^/foo/.*/bar$``
  while the backend served ``/foo/secret``). SPEC says the fragment is dropped, and it is, but
  only when it cannot mean anything to a backend that keeps the ``#`` as data (Go's
  ``ParseRequestURI`` does: ``/public/x#/../../admin`` would be ``/admin`` there, and
  ``/app#?debug`` would carry a ``debug`` query). A fragment made of unreserved characters
  only (``[A-Za-z0-9._~-]``, e.g. ``#top``, ``#L10``) is dropped; any other is refused.

Paths (``normalise_path``), our reading of SPEC §2.1
----------------------------------------------------
1. The fragment is handled as above, then the path must start with ``/``.
2. It is percent-decoded **once** as UTF-8 (ASVS 5.0 1.1.1). Invalid UTF-8 (including the
   overlong ``%C0%AE`` and encoded surrogates) is refused.
3. Refused when the decoded text holds NUL or any control character (C0, DEL, C1), a
   backslash (decoded ``%5C`` included: browsers read ``\\`` as ``/``), or **any ``%`` at
   all**. SPEC refuses "a percent-encoded ``/``, ``\\``, ``.`` or ``%`` (double encoding)"
   after the decode; a leftover ``%`` is exactly a ``%25`` in the input, so we refuse every
   double encoding (``%252f``, ``%252e``, ``%2541``...), a malformed escape (``%zz``), and a
   literal percent sign (``/100%25``). That is stricter than the four characters SPEC names:
   a backend that decodes twice must not see a different path for any character, and it is
   what makes the normaliser idempotent. A decoded ``#`` (``%23``) is refused for the same
   reason (it would be a fragment to a second pass); a decoded ``?`` (``%3F``) stays a literal
   character of the path.
4. **Any dot segment is refused** (SPEC §2.1): a decoded segment that is ``.`` or ``..`` or
   starts with ``.;`` or ``..;``, whether it was written plainly (``/admin/../public/``),
   encoded (``%2e%2e``, ``.%2E``), behind an encoded slash (``/public/..%2fadmin``) or with
   matrix params (``/..;/``, ``.%3B``, which Tomcat, Jetty and Spring read as ``..``). The
   proxy forwards the raw path, and an application that does not resolve dot segments
   serves ``/admin`` for ``/admin/../public/x`` while a resolver would judge ``/public/x``:
   refusing is the only reading under which the rules judge the path the application
   receives. Browsers resolve dot segments before sending, so no real page sends one.
5. Every other segment loses its ``;params`` (``/admin;x=1`` is ``/admin``, ``;jsessionid=...``
   disappears), because Tomcat, Jetty and Spring serve ``/admin`` for it and a literal
   reading would let it fall through to a weaker rule (security.md §2.B). SPEC only names
   ``;`` in dot segments; stripping is our addition (see the residual risk below).
6. Repeated slashes collapse and a trailing slash is kept. A ``%2F`` is an ordinary ``/``
   (``/admin%2f`` is ``/admin/``; GitLab's ``group%2Fproject`` keeps working). Matching stays
   case-sensitive (``/ADMIN`` is not ``/admin``), as in Authelia.

The result contains no ``//``, no dot segment, no ``%``, ``#``, ``;``, ``\\`` or control
character, so ``normalise_path(normalise_path(p)) == normalise_path(p)``. It may contain
decoded non-ASCII, spaces and ``?``; :meth:`Target.url` re-encodes them.

Residual risk, documented rather than hidden: stripping ``;params`` judges ``/admin`` for
``/admin;x=1``, which is what matrix-param servers serve; a backend that keeps ``;`` as part of
a file name serves another resource, which only a rule anchored at the end of the path
(``\\.css$``) can tell apart. Repeated slashes are collapsed as SPEC says, for the same
kind of reason (nginx merges them; a backend that does not usually answers 404).

Redirects (``safe_redirect``)
-----------------------------
One validator for every sink (login, 2FA, logout, portal ``?rd=``, legacy ``rd``): Authelia
GHSA-36f2-fcrx-fp4j / CVE-2021-29456 was the logout sink left unchecked, issue #290 the first
open redirect. A URL is followed only if, with no control, white-space or backslash character
anywhere (oauth2-proxy GHSA-qqxw-m5fj-f7gv ``/\\evil.com``, GHSA-j7px-6hwj-hpjg and
GHSA-5m6c-jp6f-2vcv: browsers read ``\\`` as ``/`` and drop tabs and newlines), it is an
absolute ``https`` URL (``wss`` is not a place to send a browser; no relative or
scheme-relative URL) with no userinfo and no ``%`` in the authority, a port of 1-65535, and
a host that equals a configured domain or ends with ``"." + domain``
(GHSA-4mf2-f3wh-gvf2: never a bare ``endswith``). Hosts may be Unicode here (a JSON
``targetURL`` is real text): they are IDNA-encoded with Python's codec and accepted only when
the A-labels decode back to the same text (only A-Z lowercased), so a spelling that IDNA
would *map* (``example。com``, fullwidth letters, a soft hyphen, ``ß``, the Kelvin sign) is
refused instead of guessed.
What is returned is rebuilt from the checked parts (lowercase scheme and host, no default
port, path/query/fragment with non-ASCII and unsafe ASCII percent-encoded), never the input.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote
from urllib.parse import unquote

from server.core.errors import InvalidTargetError

__all__ = [
    "MAX_URI_LENGTH",
    "MAX_URL_LENGTH",
    "TARGET_SCHEMES",
    "Target",
    "build_target",
    "canonical_host",
    "normalise_path",
    "parse_target",
    "safe_redirect",
]

#: Longest path + query accepted in a target (nginx's default request line limit is 8 KiB).
MAX_URI_LENGTH = 8192
#: Longest absolute URL accepted: the URI plus room for a scheme and a 253-character host.
MAX_URL_LENGTH = MAX_URI_LENGTH + 512
#: Schemes a target may parse with, and their default ports.
TARGET_SCHEMES: dict[str, int] = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# Anything but printable ASCII, or a backslash: never in the wire form of a target.
_WIRE_BAD = re.compile(r"[^\x21-\x7e]|\\")
# Controls (C0, DEL, C1), any Unicode white space, or a backslash: never in a redirect.
_REDIRECT_BAD = re.compile(r"[\x00-\x20\x7f-\x9f\\]|\s")
# scheme "://" authority rest; the authority ends at the first / ? or #.
_ABSOLUTE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.DOTALL)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}")
# A last label WHATWG parsers read as an IPv4 number.
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")
_PORT = re.compile(r"[0-9]{1,5}")
# A path that is already normal: segments of plain pchars, none of them "." or "..".
_CLEAN_PATH = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?")
# The common case, matched in one go: an LDH host whose last label starts with a letter (so
# never an IP) with an optional port; a clean path; a query of printable ASCII without "#"
# or "\\". Anything else takes the general route, which gives the same answer.
_FAST_HOST_RE = rf"((?:{_LABEL}\.)*[a-z](?:[a-z0-9-]{{0,61}}[a-z0-9])?)(?::([0-9]{{1,5}}))?"
_FAST_URI_RE = (
    r"((?:/(?!\.\.?(?:[/?]|$))[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?)"
    r"(?:\?([!\"$-\[\]-~]*))?"
)
_FAST_URL = re.compile(r"(https|wss|http|ws)://" + _FAST_HOST_RE + _FAST_URI_RE)
_FAST_HOST = re.compile(_FAST_HOST_RE)
_FAST_URI = re.compile(_FAST_URI_RE)
# A fragment that means nothing to a backend even if it keeps the "#" as data.
_INERT_FRAGMENT = re.compile(r"[A-Za-z0-9._~\-]*")
# Never in a decoded path: controls, backslash, a leftover "%" (double or malformed
# encoding), a decoded "#".
_DECODED_BAD = re.compile(r"[\x00-\x1f\x7f-\x9f\\%#]")
# Lowercases A-Z only: the one change a Unicode host may need to be in canonical form.
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
# Characters Target.url() leaves unencoded in a path (RFC 3986 pchar and "/").
_PATH_SAFE = "/!$&'()*+,;=:@"
# Characters safe_redirect leaves unencoded in path, query and fragment ("%" keeps escapes).
_REDIRECT_SAFE = "!#$%&'()*+,/:;=?@[]~"


@dataclass(frozen=True, slots=True)
class Target:
    """A request target as the rules see it: lowercase scheme, canonical host, port, path and
    raw query.

    ``host`` is lowercase ASCII (IDNA A-labels) without port or trailing dot; ``port`` is None
    when absent or the scheme's default; ``path`` is the output of :func:`normalise_path`
    (decoded); ``query`` is the raw query string ('' when absent). ``resource`` is what the
    rules' ``resources`` regexes search: ``path`` plus ``"?" + query`` when there is a query.
    """

    scheme: str
    host: str
    port: int | None
    path: str
    query: str = ""

    @property
    def resource(self) -> str:
        """The string the rules' ``resources`` regexes search: path, then ``?query`` if any."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def netloc(self) -> str:
        """``host`` or ``host:port``."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def url(self) -> str:
        """The target as a clean absolute URL (path re-encoded), e.g. for ``rd=``.

        ``parse_target(t.url()) == t`` for every target this module builds.
        """
        path = self.path if _CLEAN_PATH.fullmatch(self.path) else quote(self.path, _PATH_SAFE)
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{self.netloc}{path}{query}"


def canonical_host(text: str, *, allow_unicode: bool = False) -> str:
    """The lowercase ASCII form of a host name; raise InvalidTargetError when it is not one.

    Letters, digits and hyphens in labels of 1-63 characters (no leading or trailing hyphen),
    at most 253 characters, no trailing dot, not an IP address. With ``allow_unicode`` a
    Unicode name is IDNA-encoded, and refused unless its A-labels decode back to the same text
    (A-Z lowercased): a spelling IDNA would map (fullwidth letters, ``。``, a soft hyphen, the
    Kelvin sign, ``ß``, an upper-case non-ASCII letter) is refused rather than guessed.
    """
    if not text:
        raise InvalidTargetError("the host is missing")
    if text.endswith("."):
        raise InvalidTargetError("the host ends with a dot")
    if text.isascii():
        host = text.lower()
    elif not allow_unicode:
        raise InvalidTargetError("the host is not ASCII (send IDNA A-labels)")
    else:
        try:
            host = text.encode("idna").decode("ascii").lower()
            round_trip = host.encode("ascii").decode("idna")
        except UnicodeError:
            raise InvalidTargetError("the host is not a valid IDNA name") from None
        if round_trip != text.translate(_ASCII_LOWER):
            raise InvalidTargetError("the host is not in IDNA canonical form")
    if len(host) > 253 or not _HOSTNAME.fullmatch(host):
        raise InvalidTargetError("the host is not a valid DNS name")
    if _NUMERIC_LABEL.fullmatch(host.rpartition(".")[2]):
        raise InvalidTargetError("IP addresses are not accepted as hosts")
    return host


def _split_authority(
    authority: str, default_port: int, *, allow_unicode: bool = False
) -> tuple[str, int | None]:
    """``(host, port)`` from ``host[:port]``; the port is None when absent or the default."""
    if not authority:
        raise InvalidTargetError("the host is missing")
    if "@" in authority:
        raise InvalidTargetError("user information in the URL")
    if "%" in authority:
        raise InvalidTargetError("percent-encoding in the host")
    if "[" in authority or "]" in authority:
        raise InvalidTargetError("IP addresses are not accepted as hosts")
    host_text, colon, port_text = authority.partition(":")
    port: int | None = None
    if colon:
        if not _PORT.fullmatch(port_text):
            raise InvalidTargetError("the port is not a number")
        port = int(port_text)
        if not 0 < port <= 65535:
            raise InvalidTargetError("the port is out of range")
        if port == default_port:
            port = None
    return canonical_host(host_text, allow_unicode=allow_unicode), port


def _drop_fragment(text: str) -> str:
    """``text`` without its fragment; refuse a fragment that could read as path or query."""
    head, hash_sign, fragment = text.partition("#")
    if hash_sign and not _INERT_FRAGMENT.fullmatch(fragment):
        raise InvalidTargetError("a fragment that a backend could read as path or query")
    return head


def _decode(path: str) -> str:
    """``path`` percent-decoded once as UTF-8, refused when it still needs to be suspected."""
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise InvalidTargetError("percent-encoding that is not UTF-8") from None
    if _DECODED_BAD.search(decoded):
        raise InvalidTargetError(
            "control character, backslash, '#' or double percent-encoding in the path"
        )
    return decoded


def normalise_path(path: str) -> str:
    """The path the rules match: decoded once, cleaned, or InvalidTargetError (SPEC §2.1).

    See the module docstring for every step; the result is stable under a second call.
    """
    if path and _CLEAN_PATH.fullmatch(path):
        return path
    path = _drop_fragment(path)
    if not path.startswith("/"):
        raise InvalidTargetError("the path does not start with '/'")
    segments: list[str] = []
    trailing = False
    for segment in _decode(path).split("/")[1:]:
        if segment in (".", "..") or segment.startswith((".;", "..;")):
            raise InvalidTargetError(
                "a dot segment ('.' or '..', plain, encoded or with ';params') in the path"
            )
        if ";" in segment:
            segment = segment.partition(";")[0]
        trailing = not segment
        if not trailing:
            segments.append(segment)
    if not segments:
        return "/"
    return "/" + "/".join(segments) + ("/" if trailing else "")


def _target(scheme: str, authority: str, uri: str) -> Target:
    scheme = scheme.lower()
    default_port = TARGET_SCHEMES.get(scheme)
    if default_port is None:
        raise InvalidTargetError("the scheme is not http, https, ws or wss")
    host, port = _split_authority(authority, default_port)
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidTargetError("the URI is too long")
    path, _, query = _drop_fragment(uri).partition("?")
    return Target(scheme, host, port, normalise_path(path or "/"), query)


def _fast_target(
    scheme: str, host: str, port_text: str | None, path: str, query: str | None
) -> Target:
    """A Target from the groups of the fast patterns (already known to be well formed)."""
    if len(host) > 253:
        raise InvalidTargetError("the host is not a valid DNS name")
    port: int | None = None
    if port_text is not None:
        port = int(port_text)
        if port == TARGET_SCHEMES[scheme]:
            port = None
        elif not 0 < port <= 65535:
            raise InvalidTargetError("the port is out of range")
    if query is None:
        query = ""
        uri_length = len(path)
    else:
        uri_length = len(path) + 1 + len(query)
    if uri_length > MAX_URI_LENGTH:
        raise InvalidTargetError("the URI is too long")
    return Target(scheme, host, port, path or "/", query)


def parse_target(url: str) -> Target:
    """The target of an absolute URL (``X-Original-URL``); InvalidTargetError when malformed.

    Accepts the schemes http, https, ws and wss: the caller refuses the insecure ones itself.
    """
    if len(url) > MAX_URL_LENGTH:
        raise InvalidTargetError("the URL is too long")
    fast = _FAST_URL.fullmatch(url)
    if fast is not None:
        return _fast_target(*fast.groups())
    if _WIRE_BAD.search(url):
        raise InvalidTargetError("control, space, non-ASCII or backslash character in the URL")
    match = _ABSOLUTE.fullmatch(url)
    if match is None:
        raise InvalidTargetError("not an absolute URL")
    scheme, authority, rest = match.groups()
    return _target(scheme, authority, rest)


def build_target(proto: str, host: str, uri: str) -> Target:
    """The target described by ``X-Forwarded-Proto``, ``-Host`` (may carry a port) and
    ``-Uri`` (empty means ``/``); InvalidTargetError when any of them is malformed."""
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidTargetError("the URI is too long")
    if uri and not uri.startswith("/"):
        raise InvalidTargetError("the forwarded URI does not start with '/'")
    if proto in TARGET_SCHEMES:
        fast_host = _FAST_HOST.fullmatch(host)
        fast_uri = _FAST_URI.fullmatch(uri)
        if fast_host is not None and fast_uri is not None:
            return _fast_target(proto, *fast_host.groups(), *fast_uri.groups())
    if _WIRE_BAD.search(proto) or _WIRE_BAD.search(host) or _WIRE_BAD.search(uri):
        raise InvalidTargetError(
            "control, space, non-ASCII or backslash character in a forwarded header"
        )
    return _target(proto, host, uri)


def safe_redirect(url: str, domains: Sequence[str]) -> str | None:
    """``url`` rebuilt from its checked parts when it is a safe redirect into ``domains``.

    ``domains`` are lowercase IDNA cookie domains (a single string counts as one domain).
    Returns None for anything else: the caller falls back to its default (SPEC §3.5).
    """
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH or _REDIRECT_BAD.search(url):
        return None
    match = _ABSOLUTE.fullmatch(url)
    if match is None or match.group(1).lower() != "https":
        return None
    try:
        host, port = _split_authority(match.group(2), 443, allow_unicode=True)
    except InvalidTargetError:
        return None
    if isinstance(domains, str):
        domains = (domains,)
    if not any(d and (host == d or host.endswith("." + d)) for d in domains):
        return None
    rest, _, fragment = match.group(3).partition("#")
    path, _, query = rest.partition("?")
    out = [
        "https://",
        host,
        f":{port}" if port is not None else "",
        quote(path, _REDIRECT_SAFE) or "/",
    ]
    if query:
        out += ("?", quote(query, _REDIRECT_SAFE))
    if fragment:
        out += ("#", quote(fragment, _REDIRECT_SAFE))
    return "".join(out)
