"""Policy tests: the request ``rules check --explain`` and ``rules test`` evaluate, and the
case files of ``rules test`` (SPEC §4).

Both commands describe a request by a URL, a method, a user with groups and a client
address; :func:`build_request` turns that description into the :class:`AccessRequest` the
server would evaluate, refusing exactly what the server refuses. :func:`load_cases` reads a
``CASES.toml`` with the shared TOML reader, so a bad case file lists every problem with its
line and fix (like the config) instead of stopping at the first. :func:`refusals` says why
the server answers 400 before any rule runs, so explain can print the real answer.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t
from dataclasses import dataclass
from pathlib import Path

from server.core.endpoints import LEGACY_VERIFY
from server.core.errors import FileProblemError
from server.core.errors import InvalidTargetError
from server.core.names import check_group
from server.core.names import check_username
from server.core.policy import POLICIES
from server.core.policy import Policy
from server.core.rules import AccessRequest
from server.core.tomlpos import locate
from server.core.tomlread import ProblemReader
from server.core.tomlread import read_toml
from server.core.urls import Target
from server.core.urls import parse_target

if t.TYPE_CHECKING:
    from server.core.config import Config
    from server.core.users import UserDatabase

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
V = t.TypeVar("V")

#: The keys of one ``[[cases]]`` table.
CASE_KEYS = ("url", "method", "user", "groups", "ip", "expect", "name")
#: What a request the server refuses before any rule runs gets, by endpoint.
REFUSED = f"400 Bad Request (auth-request 403, {LEGACY_VERIFY} 401)"

_METHOD = re.compile(r"[A-Za-z]{1,32}")
_CREATE = "write [[cases]] tables with url and expect (see `authctl rules test --help`)"


class CasesError(FileProblemError):
    """A ``rules test`` case file cannot be read or is invalid; carries every problem."""


class RequestError(ValueError):
    """A bad value for one field of a request description (an option or a case key)."""

    def __init__(self, field: str, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.message = message
        self.fix = fix


class UnknownUserError(RequestError):
    """The request names a user the users file does not have (and gives no groups)."""


@dataclass(frozen=True, slots=True)
class Fields:
    """Where each part of a request description came from, for messages."""

    url: str = "--explain"
    method: str = "--method"
    user: str = "--user"
    groups: str = "--groups"
    ip: str = "--ip"

    @classmethod
    def of_case(cls, key: str) -> Fields:
        """The key paths of case ``key`` (``cases[2]``)."""
        return cls(*(f"{key}.{name}" for name in ("url", "method", "user", "groups", "ip")))


class Users:
    """The users file, read once and only if some request names a user without groups."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: UserDatabase | None = None

    def groups(self, name: str) -> tuple[str, ...] | None:
        """The groups of user ``name``; None when the file has no such user.

        Raises:
            UserStoreError: the users file cannot be read.
        """
        if self._db is None:
            from server.core.users import load_users

            self._db = load_users(self.path)
        found = self._db.get(name)
        return None if found is None else found.groups


def parse_user(value: str, field: str) -> str:
    """The canonical user name, or RequestError."""
    try:
        return check_username(value)
    except ValueError as exc:
        raise RequestError(field, str(exc), "give the name as the users file has it") from None


def parse_groups(values: t.Iterable[str], field: str) -> tuple[str, ...]:
    """Valid group names without duplicates, or RequestError."""
    try:
        return tuple(dict.fromkeys(check_group(g) for g in values))
    except ValueError as exc:
        raise RequestError(field, str(exc), "fix the group name") from None


def parse_ip(value: str, field: str) -> IPAddress:
    """A client address (brackets allowed around IPv6), or RequestError."""
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        raise RequestError(
            field, f"{value!r} is not an IP address", 'write "10.0.0.8" or "2001:db8::1"'
        ) from None


def parse_url(url: str, field: str) -> Target:
    """The target the server would read from ``url``, or RequestError."""
    try:
        return parse_target(url)
    except InvalidTargetError as exc:
        raise RequestError(
            field,
            f"{url!r} is not a target URL the server accepts: {exc}",
            'write an absolute URL such as "https://app.example.com/path"',
        ) from None


def parse_method(method: str, field: str) -> str:
    """The method in upper case, or RequestError."""
    if not _METHOD.fullmatch(method):
        raise RequestError(field, f"{method!r} is not an HTTP method", 'write "GET" or "POST"')
    return method.upper()


def build_request(
    url: str,
    method: str,
    user: str | None,
    groups: tuple[str, ...] | None,
    ip: IPAddress | None,
    users: Users,
    fields: Fields = Fields(),
) -> AccessRequest:
    """The AccessRequest the server would evaluate for this URL and identity.

    ``groups`` None means the users file's groups of ``user``.

    Raises:
        RequestError: the URL or method is not one the server accepts.
        UnknownUserError: ``user`` without ``groups`` is not in the users file.
        UserStoreError: the users file cannot be read.
    """
    target = parse_url(url, fields.url)
    method = parse_method(method, fields.method)
    if user is not None and groups is None:
        groups = users.groups(user)
        if groups is None:
            raise UnknownUserError(
                fields.user,
                f"user {user!r} is not in the users file {str(users.path)!r}",
                "give the groups to test with (--groups a,b, or groups = […] in a case) for "
                "a user that does not exist yet",
            )
    return AccessRequest(
        host=target.host,
        path=target.path,
        query=target.query,
        method=method,
        ip=ip,
        user=user,
        groups=groups or (),
    )


def refusals(config: Config, url: str, host: str) -> list[str]:
    """Why the server answers 400 for ``url`` before any rule runs (empty: it does not)."""
    out = []
    if config.session.cookie_for(host) is None:
        roots = ", ".join(c.domain for c in config.session.cookies)
        out.append(
            f"host {host!r} is outside every cookie domain ({roots}): the server would "
            "answer 400 before any rule runs"
        )
    scheme = url.partition(":")[0].lower()
    if scheme in ("http", "ws"):
        out.append(f"the server refuses plain {scheme}:// targets (400); only https is protected")
    return out


# --------------------------------------------------------------------------- case files


@dataclass(frozen=True, slots=True)
class PolicyCase:
    """One ``[[cases]]`` table: the request and the policy explain must report for it."""

    index: int
    line: int | None
    url: str
    request: AccessRequest
    expect: Policy
    name: str


def load_cases(path: Path, users: Users) -> list[PolicyCase]:
    """Read and check ``CASES.toml``.

    Raises:
        CasesError: the file cannot be read or has problems; every problem is listed with
            its line and fix.
        UserStoreError: a case needs the users file and it cannot be read.
    """
    text, data = read_toml(path, CasesError, create=_CREATE)
    r = ProblemReader(path, text)
    r.table(data, "", ("cases",))
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        r.error("", "no [[cases]]: write at least one [[cases]] table with url and expect", _CREATE)
        raw_cases = []
    out = []
    for index, raw in enumerate(raw_cases):
        case = _case(r, index, raw, users)
        if case is not None:
            out.append(case)
    r.check(CasesError)
    return out


def _case(r: ProblemReader, index: int, raw: object, users: Users) -> PolicyCase | None:
    key = f"cases[{index}]"
    tbl = r.table(raw, key, CASE_KEYS)
    if not isinstance(raw, dict):
        return None
    before = len(r.problems)
    for name, example in (("url", '"https://app.example.com/"'), ("expect", '"one_factor"')):
        if name not in tbl:
            r.error(key, f"{name} is required", f"add {name} = {example}")
    url = r.value(tbl, key, "url", str, None)
    method = r.value(tbl, key, "method", str, "GET")
    user_text = r.value(tbl, key, "user", str, None)
    ip_text = r.value(tbl, key, "ip", str, None)
    title = r.value(tbl, key, "name", str, "")
    expect = r.choice(tbl, key, "expect", POLICIES, "") if "expect" in tbl else None
    group_texts = r.string_list(tbl, key, "groups", allow_string=False) if "groups" in tbl else None
    fields = Fields.of_case(key)
    if group_texts is not None and "user" not in tbl:
        r.error(
            fields.groups,
            "groups needs user (an anonymous request has no groups)",
            'add user = "NAME"',
        )
    _parsed(r, parse_url, url, fields.url)
    _parsed(r, parse_method, method, fields.method)
    user = _parsed(r, parse_user, user_text, fields.user)
    groups = _parsed(r, parse_groups, group_texts, fields.groups)
    ip = _parsed(r, parse_ip, ip_text, fields.ip)
    if len(r.problems) != before or url is None or not expect:
        return None
    try:
        request = build_request(url, method or "GET", user, groups, ip, users, fields)
    except RequestError as exc:
        r.error(exc.field, exc.message, exc.fix)
        return None
    return PolicyCase(index, locate(r.text, key), url, request, Policy(expect), title or "")


def _parsed(
    r: ProblemReader, parse: t.Callable[[t.Any, str], V], raw: object, field: str
) -> V | None:
    """``parse(raw, field)``; a RequestError becomes a problem of the file (None)."""
    if raw is None:
        return None
    try:
        return parse(raw, field)
    except RequestError as exc:
        r.error(exc.field, exc.message, exc.fix)
        return None
