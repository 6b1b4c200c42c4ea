"""Targets and path normalisation (``server.core.urls``): SPEC §2.1 and security.md §2.B."""

from __future__ import annotations

import re

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import strategies as st

from server.core import urls
from server.core.errors import InvalidTargetError
from server.core.urls import MAX_URI_LENGTH
from server.core.urls import Target
from server.core.urls import build_target
from server.core.urls import canonical_host
from server.core.urls import normalise_path
from server.core.urls import parse_target

# --------------------------------------------------------------------------- normalise_path

#: (raw path, normal form): every one must be accepted.
NORMAL = [
    ("/", "/"),
    ("/admin", "/admin"),
    ("/admin/", "/admin/"),
    ("//admin", "/admin"),
    ("///admin", "/admin"),
    ("/%61dmin", "/admin"),
    ("/%61%64%6D%69%6E", "/admin"),
    ("/ADMIN", "/ADMIN"),
    ("/Admin", "/Admin"),
    ("/admin%2f", "/admin/"),
    ("/admin%2F", "/admin/"),
    ("/group%2Fproject/issues", "/group/project/issues"),
    ("/a%2f%2fb", "/a/b"),
    ("/admin;x=1", "/admin"),
    ("/app/page;jsessionid=ABC123", "/app/page"),
    ("/a;x/b;y/", "/a/b/"),
    ("/a/;x", "/a/"),
    ("/;x/admin", "/admin"),
    ("/...;x/a", "/.../a"),
    ("/admin#frag", "/admin"),
    ("/admin#", "/admin"),
    ("/admin#L10-12.x~y_", "/admin"),
    ("/a//b//", "/a/b/"),
    ("/.hidden/..x/...", "/.hidden/..x/..."),
    ("/a%3Fb", "/a?b"),
    ("/caf%C3%A9", "/caf\u00e9"),
    ("/caf\u00e9", "/caf\u00e9"),
    ("/a%20b", "/a b"),
    ("/a b", "/a b"),
    ("/%E2%82%AC/x", "/\u20ac/x"),
    ("/a|b^c", "/a|b^c"),
    ("/~user/a-b_c.d", "/~user/a-b_c.d"),
    ("/!$&'()*+,=:@", "/!$&'()*+,=:@"),
]

#: Raw paths that must be refused outright.
REFUSED = [
    # any dot segment (SPEC §2.1): the proxy forwards the raw path, so resolving it would
    # judge another path than an app that does not resolve dot segments serves
    "/admin/../admin",
    "/./admin",
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/a/b/..",
    "/a/b/.",
    "/a/.",
    "/..",
    "/../../..",
    "/../..//a",
    "/a/../../b",
    "/a/./b/./c",
    "/a%3fb/..",
    "/%2e",
    "/%2E%2e/",
    "/a/.%2E",
    "/public/.%3b/admin",
    "/a/..;x=1/b",
    "/a/.;x",
    "",
    "admin",
    "#/admin",
    "/public/..%2fadmin",
    "/public/..%2Fadmin",
    "/public%2f..%2fadmin",
    "/admin/..%2f..%2fpublic/",
    "/a/..%2f/t",
    "/a/%2F%2e%2e%2Ft",
    "/.%2fadmin",
    "/%2e%2e%2f",
    "/public/..%5cadmin",
    "/public/..%5Cadmin",
    "/a\\b",
    "/public/..\\admin",
    "/public/..;/admin",
    "/public/.;/admin",
    "/..;",
    "/.;x",
    "/public/..%3b/admin",
    "/public/..%3B/admin",
    "/public/.%3bx/admin",
    "/public/%252e%252e/admin",
    "/public/%252E%252E/admin",
    "/admin%252f",
    "/admin%255c",
    "/admin%2525",
    "/%2561dmin",
    "/100%25",
    "/50%25off",
    "/%zz",
    "/%4",
    "/a%",
    "/a%23b",
    "/admin%00",
    "/admin\x00",
    "/admin%0a",
    "/admin%0D%0Ax",
    "/admin%09",
    "/admin\t",
    "/admin%7f",
    "/admin%C2%85",
    "/admin%C2%9F",
    "/admin\x85",
    "/a%C0%AE",
    "/a%C0%AE%C0%AE/admin",
    "/a%ED%A0%80",
    "/a%FF",
    "/a%C3",
    "/public/x#/../../admin",
    "/admin#/public/",
    "/app#?debug",
    "/app#%2f",
    "/app#a&b=c",
    "/app#a;b",
    "/app#frag#more",
]


@pytest.mark.parametrize(("raw", "expected"), NORMAL, ids=[r for r, _ in NORMAL])
def test_normalise_path_accepts(raw: str, expected: str) -> None:
    """Each accepted path has exactly the normal form SPEC §2.1 gives it."""
    assert normalise_path(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), NORMAL, ids=[r for r, _ in NORMAL])
def test_normalise_path_is_stable_on_the_table(raw: str, expected: str) -> None:
    """Normalising a normal form changes nothing."""
    assert normalise_path(normalise_path(raw)) == expected


@pytest.mark.parametrize("raw", REFUSED, ids=[repr(r) for r in REFUSED])
def test_normalise_path_refuses(raw: str) -> None:
    """Each malformed, ambiguous or double-encoded path is refused, never cleaned."""
    with pytest.raises(InvalidTargetError):
        normalise_path(raw)


def test_refusal_never_echoes_the_input() -> None:
    """The refusal reason is a fixed sentence, so a secret in the path never reaches a log."""
    with pytest.raises(InvalidTargetError) as info:
        normalise_path("/secret-token-abc%00")
    assert "secret-token-abc" not in str(info.value)


# --------------------------------------------------------------------------- §2.B variants

ADMIN_RULE = re.compile(r"^/admin([/?].*)?$")
PUBLIC_RULE = re.compile(r"^/public/")

#: security.md §2.B: each must reach the /admin rule or be refused, never the /public/ bypass.
ADMIN_VARIANTS = [
    "/admin",
    "//admin",
    "///admin",
    "/./admin",
    "/public/../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/..%2fadmin",
    "/public%2f..%2fadmin",
    "/public/..%5cadmin",
    "/public/..;/admin",
    "/admin;x=1",
    "/admin%2f",
    "/admin/",
    "/%61dmin",
    "/public/%252e%252e/admin",
    "/public/x#/../../admin",
    "/admin#/public/",
    "/admin?/public/",
    "/admin?x=/public/",
    "/admin%00",
    "/public/%2e%2e%2fadmin",
    "/public/.%2e/admin",
    "/public/x/../../admin",
    "/public/x/%2e%2e/%2e%2e/admin",
    "/public/%2e./admin",
    "/public/..%3b/admin",
    "/public;/../admin",
]


@pytest.mark.parametrize("uri", ADMIN_VARIANTS, ids=ADMIN_VARIANTS)
def test_admin_variants_reach_the_admin_rule_or_are_refused(uri: str) -> None:
    """No spelling of /admin slips past the admin rule into the /public/ bypass."""
    try:
        target = build_target("https", "app.example.com", uri)
    except InvalidTargetError:
        return
    assert ADMIN_RULE.search(target.resource)
    assert not PUBLIC_RULE.search(target.resource)


@pytest.mark.parametrize("uri", ["/ADMIN", "/Admin", "/aDMIN/x"])
def test_path_case_is_kept(uri: str) -> None:
    """Matching is case-sensitive as in Authelia, so the path keeps its case."""
    assert build_target("https", "app.example.com", uri).path == uri


# --------------------------------------------------------------------------- canonical_host

HOSTS_OK = [
    ("example.com", "example.com"),
    ("APP.Example.COM", "app.example.com"),
    ("a-b.c0.example.com", "a-b.c0.example.com"),
    ("localhost", "localhost"),
    ("xn--bcher-kva.example.com", "xn--bcher-kva.example.com"),
    ("a" * 63 + ".com", "a" * 63 + ".com"),
    (".".join(["a" * 49] * 5) + ".abc", ".".join(["a" * 49] * 5) + ".abc"),
    ("1.example.com", "1.example.com"),
    ("example.c0m", "example.c0m"),
    ("example.0xg", "example.0xg"),
]

HOSTS_BAD = [
    "",
    "example.com.",
    ".",
    ".example.com",
    "a..b",
    "-a.example.com",
    "a-.example.com",
    "a_b.example.com",
    "a" * 64 + ".com",
    ".".join(["a" * 50] * 5) + ".abc",
    "127.0.0.1",
    "10.0.0.5",
    "2130706433",
    "0x7f000001",
    "a.0x7f",
    "example.0x",
    "exa mple.com",
    "example.com:443",
    "evil.com/x",
    "evil.com#x",
    "b\u00fccher.example.com",
]


@pytest.mark.parametrize(("text", "expected"), HOSTS_OK, ids=[h for h, _ in HOSTS_OK])
def test_canonical_host_accepts(text: str, expected: str) -> None:
    """A DNS name is lowercased and otherwise kept."""
    assert canonical_host(text) == expected


@pytest.mark.parametrize("text", HOSTS_BAD, ids=[repr(h) for h in HOSTS_BAD])
def test_canonical_host_refuses(text: str) -> None:
    """Empty names, trailing dots, bad labels, IP addresses and raw Unicode are refused."""
    with pytest.raises(InvalidTargetError):
        canonical_host(text)


UNICODE_HOSTS_OK = [
    ("b\u00fccher.example.com", "xn--bcher-kva.example.com"),
    ("B\u00fccher.Example.COM", "xn--bcher-kva.example.com"),
]

UNICODE_HOSTS_BAD = [
    "example\u3002com",
    "example\uff0ecom",
    "\uff45xample.com",
    "app.exam\u00adple.com",
    "stra\u00dfe.de",
    "\u212aelvin.example.com",
    "B\u00dcCHER.example.com",
    "a\u200bb.example.com",
    "\u0000.com",
    "x" * 70 + "\u00e9.com",
    "\u00e9.127",
]


@pytest.mark.parametrize(
    ("text", "expected"), UNICODE_HOSTS_OK, ids=[h for h, _ in UNICODE_HOSTS_OK]
)
def test_canonical_host_encodes_canonical_unicode(text: str, expected: str) -> None:
    """With allow_unicode a name already in IDNA canonical form is encoded to A-labels."""
    assert canonical_host(text, allow_unicode=True) == expected


@pytest.mark.parametrize("text", UNICODE_HOSTS_BAD, ids=[ascii(h) for h in UNICODE_HOSTS_BAD])
def test_canonical_host_refuses_mapped_unicode(text: str) -> None:
    """A spelling IDNA would map (fullwidth, ideographic dot, soft hyphen, sharp s) is refused."""
    with pytest.raises(InvalidTargetError):
        canonical_host(text, allow_unicode=True)


# --------------------------------------------------------------------------- parse_target

#: (URL, scheme, host, port, path, query)
PARSED = [
    ("https://app.example.com/", "https", "app.example.com", None, "/", ""),
    ("https://app.example.com", "https", "app.example.com", None, "/", ""),
    ("https://app.example.com?x=1", "https", "app.example.com", None, "/", "x=1"),
    ("https://app.example.com/?", "https", "app.example.com", None, "/", ""),
    ("HTTPS://APP.Example.COM/Admin", "https", "app.example.com", None, "/Admin", ""),
    ("https://app.example.com:443/", "https", "app.example.com", None, "/", ""),
    ("https://app.example.com:8443/x", "https", "app.example.com", 8443, "/x", ""),
    ("https://app.example.com:08443/x", "https", "app.example.com", 8443, "/x", ""),
    ("https://app.example.com:65535/", "https", "app.example.com", 65535, "/", ""),
    ("https://app.example.com:1/", "https", "app.example.com", 1, "/", ""),
    ("http://app.example.com/", "http", "app.example.com", None, "/", ""),
    ("http://app.example.com:80/", "http", "app.example.com", None, "/", ""),
    ("http://app.example.com:443/", "http", "app.example.com", 443, "/", ""),
    ("ws://app.example.com:80/s", "ws", "app.example.com", None, "/s", ""),
    ("wss://app.example.com:443/s", "wss", "app.example.com", None, "/s", ""),
    ("WsS://app.example.com/s", "wss", "app.example.com", None, "/s", ""),
    ("https://app.example.com/a/b?c=d&e=%2F", "https", "app.example.com", None, "/a/b",
     "c=d&e=%2F"),
    ("https://app.example.com/a?b?c", "https", "app.example.com", None, "/a", "b?c"),
    ("https://app.example.com/a?x=/public/", "https", "app.example.com", None, "/a", "x=/public/"),
    ("https://app.example.com//admin", "https", "app.example.com", None, "/admin", ""),
    ("https://app.example.com/%61dmin?q", "https", "app.example.com", None, "/admin", "q"),
    ("https://app.example.com/a#frag", "https", "app.example.com", None, "/a", ""),
    ("https://app.example.com/a?x=1#frag", "https", "app.example.com", None, "/a", "x=1"),
    ("https://app.example.com#top", "https", "app.example.com", None, "/", ""),
    ("https://app.example.com/a?%00", "https", "app.example.com", None, "/a", "%00"),
    ("https://app.example.com/a|b?c|d", "https", "app.example.com", None, "/a|b", "c|d"),
    ("https://app.example.com/a/b?.", "https", "app.example.com", None, "/a/b", "."),
    ("https://localhost/", "https", "localhost", None, "/", ""),
    ("https://1.example.com/", "https", "1.example.com", None, "/", ""),
]  # fmt: skip

#: Absolute URLs that must be refused.
UNPARSABLE = [
    "",
    "/admin",
    "//app.example.com/",
    "app.example.com/",
    "https:app.example.com",
    "https:/app.example.com",
    "https:///app.example.com",
    "https://",
    "https://?x",
    "ftp://app.example.com/",
    "javascript://app.example.com/",
    "file:///etc/passwd",
    "https://user@app.example.com/",
    "https://user:pw@app.example.com/",
    "https://@app.example.com/",
    "https://app.example.com:443@evil.com/",
    "https://app%2eexample.com/",
    "https://app.example.com%2f@evil.com/",
    "https://app.example.com./",
    "https://APP.EXAMPLE.COM./",
    "https://app..example.com/",
    "https://-app.example.com/",
    "https://app_x.example.com/",
    "https://127.0.0.1/",
    "https://127.0.0.1:8443/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://[::1]/",
    "https://[::1]:443/",
    "https://app.example.com:0/",
    "https://app.example.com:65536/",
    "https://app.example.com:99999/",
    "https://app.example.com:/",
    "https://app.example.com:+443/",
    "https://app.example.com:44 3/",
    "https://app.example.com:443:443/",
    "https://app.example.com:https/",
    "https://exa\tmple.com/",
    "https://app.example.com/a b",
    " https://app.example.com/",
    "https://app.example.com/\n",
    "https://app.example.com/a\x00",
    "https://app.example.com/a\x7f",
    "https://app.example.com/a?b c",
    "https://app.example.com/a?b\tc",
    "https://app.example.com/a?b\\c",
    "https://app.example.com\\@evil.com/",
    "https://app.example.com/\\evil.com",
    "https://b\u00fccher.example.com/",
    "https://app.example.com/caf\u00e9",
    "https://app.example.com/?q=\u00e9",
    "https://app.example.com/\u00c3\u00a9",
    "https://app.example.com/public/..%2fadmin",
    "https://app.example.com/public/%252e%252e/admin",
    "https://app.example.com/public/x#/../../admin",
    "https://app.example.com/app#?debug",
    "https://app.example.com/a?x=1#/../admin",
    "https://app.example.com/admin%00",
    "https://app.example.com/" + "a" * (MAX_URI_LENGTH + 1),
    "https://app.example.com/a?" + "b" * MAX_URI_LENGTH,
    "https://app.example.com/a%20?" + "b" * (MAX_URI_LENGTH - 4),
    "https://app.example.com/" + "a" * (urls.MAX_URL_LENGTH + 1),
    "https://" + ".".join(["a" * 50] * 5) + ".abc/",
    "https://" + ".".join(["a" * 50] * 5) + ".abc:8443/%61",
]


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "path", "query"), PARSED, ids=[p[0] for p in PARSED]
)
def test_parse_target_accepts(
    url: str, scheme: str, host: str, port: int | None, path: str, query: str
) -> None:
    """Each well-formed absolute URL parses into its canonical parts."""
    assert parse_target(url) == Target(scheme, host, port, path, query)


@pytest.mark.parametrize("url", UNPARSABLE, ids=[ascii(u)[:60] for u in UNPARSABLE])
def test_parse_target_refuses(url: str) -> None:
    """Each malformed, ambiguous or non-web URL is refused with InvalidTargetError."""
    with pytest.raises(InvalidTargetError):
        parse_target(url)


def test_invalid_target_error_is_a_value_error() -> None:
    """Callers that only know ValueError still catch every refusal."""
    with pytest.raises(ValueError, match="user information"):
        parse_target("https://alice:hunter2@app.example.com/")


def test_refusal_does_not_echo_userinfo() -> None:
    """A password in the userinfo never appears in the refusal message."""
    with pytest.raises(InvalidTargetError) as info:
        parse_target("https://alice:hunter2@app.example.com/")
    assert "hunter2" not in str(info.value)


def test_uri_length_limit_is_inclusive() -> None:
    """A path plus query of exactly MAX_URI_LENGTH characters is still accepted."""
    path = "/" + "a" * (MAX_URI_LENGTH - 1)
    assert parse_target("https://app.example.com" + path).path == path
    assert build_target("https", "app.example.com", path).path == path
    slow = "/%61" + "a" * (MAX_URI_LENGTH - 4)
    assert parse_target("https://app.example.com" + slow).path == "/a" + "a" * (MAX_URI_LENGTH - 4)


# --------------------------------------------------------------------------- build_target

#: (proto, host, uri, scheme, host, port, path, query)
BUILT = [
    ("https", "app.example.com", "/", "https", "app.example.com", None, "/", ""),
    ("https", "app.example.com", "", "https", "app.example.com", None, "/", ""),
    ("https", "app.example.com", "/?", "https", "app.example.com", None, "/", ""),
    ("HTTPS", "App.Example.com", "/x", "https", "app.example.com", None, "/x", ""),
    ("https", "app.example.com:443", "/x", "https", "app.example.com", None, "/x", ""),
    ("https", "app.example.com:8443", "/x?y", "https", "app.example.com", 8443, "/x", "y"),
    ("http", "app.example.com", "/", "http", "app.example.com", None, "/", ""),
    ("wss", "app.example.com", "/socket", "wss", "app.example.com", None, "/socket", ""),
    ("https", "app.example.com", "//admin", "https", "app.example.com", None, "/admin", ""),
    ("https", "app.example.com", "/a//b?c=/d", "https", "app.example.com", None, "/a/b", "c=/d"),
    ("https", "app.example.com", "/a#top", "https", "app.example.com", None, "/a", ""),
    ("https", "app.example.com", "/%61?%62", "https", "app.example.com", None, "/a", "%62"),
    ("https", "app.example.com", "/admin;x=1?y", "https", "app.example.com", None, "/admin", "y"),
]  # fmt: skip

#: (proto, host, uri) triples that must be refused.
UNBUILDABLE = [
    ("", "app.example.com", "/"),
    ("ftp", "app.example.com", "/"),
    ("https, http", "app.example.com", "/"),
    ("https ", "app.example.com", "/"),
    ("https://", "app.example.com", "/"),
    ("https", "", "/"),
    ("https", "app.example.com.", "/"),
    ("https", "app.example.com, evil.com", "/"),
    ("https", "app.example.com,evil.com", "/"),
    ("https", "evil.com/app.example.com", "/"),
    ("https", "evil.com?app.example.com", "/"),
    ("https", "evil.com#app.example.com", "/"),
    ("https", "user@app.example.com", "/"),
    ("https", "app.example.com:0", "/"),
    ("https", "app.example.com:65536", "/"),
    ("https", "app.example.com:", "/"),
    ("https", "127.0.0.1", "/"),
    ("https", "[::1]:443", "/"),
    ("https", "app%2eexample.com", "/"),
    ("https", "app.example.com\t", "/"),
    ("https", "b\u00fccher.example.com", "/"),
    ("https", "app.example.com", "admin"),
    ("https", "app.example.com", "?x=1"),
    ("https", "app.example.com", "#x"),
    ("https", "app.example.com", "https://evil.com/admin"),
    ("https", "app.example.com", "/a b"),
    ("https", "app.example.com", "/a\\b"),
    ("https", "app.example.com", "/a\r\nX-Injected: 1"),
    ("https", "app.example.com", "/caf\u00e9"),
    ("https", "app.example.com", "/public/..%2fadmin"),
    ("https", "app.example.com", "/public/x#/../../admin"),
    ("https", "app.example.com", "/" + "a" * MAX_URI_LENGTH),
    ("https", "app.example.com", "/a?" + "b" * (16 * 1024)),
    ("https", "a" * 254, "/"),
]


@pytest.mark.parametrize(
    ("proto", "host", "uri", "scheme", "canon_host", "port", "path", "query"),
    BUILT,
    ids=[f"{b[0]}|{b[1]}|{b[2]}" for b in BUILT],
)
def test_build_target_accepts(
    proto: str,
    host: str,
    uri: str,
    scheme: str,
    canon_host: str,
    port: int | None,
    path: str,
    query: str,
) -> None:
    """Well-formed forwarded headers build the canonical target."""
    assert build_target(proto, host, uri) == Target(scheme, canon_host, port, path, query)


@pytest.mark.parametrize(
    ("proto", "host", "uri"), UNBUILDABLE, ids=[ascii(b)[:70] for b in UNBUILDABLE]
)
def test_build_target_refuses(proto: str, host: str, uri: str) -> None:
    """Malformed forwarded headers are refused, never guessed at."""
    with pytest.raises(InvalidTargetError):
        build_target(proto, host, uri)


# --------------------------------------------------------------------------- Target


def test_resource_without_query_is_the_path() -> None:
    """Without a query the resource is the path alone, with no dangling '?'."""
    assert Target("https", "a.example.com", None, "/x", "").resource == "/x"


def test_resource_with_query() -> None:
    """With a query the resource is path + '?' + raw query."""
    assert Target("https", "a.example.com", None, "/x", "a=%2F").resource == "/x?a=%2F"


def test_target_is_frozen() -> None:
    """A Target cannot be changed after it is built."""
    target = parse_target("https://a.example.com/")
    with pytest.raises(AttributeError):
        target.path = "/admin"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("target", "url"),
    [
        (Target("https", "a.example.com", None, "/", ""), "https://a.example.com/"),
        (Target("https", "a.example.com", 8443, "/x", "y=1"), "https://a.example.com:8443/x?y=1"),
        (Target("wss", "a.example.com", None, "/s", ""), "wss://a.example.com/s"),
        (Target("https", "a.example.com", None, "/a b?/\u00e9", "q"),
         "https://a.example.com/a%20b%3F/%C3%A9?q"),
        (Target("https", "a.example.com", None, "/a|b\"<>{}`^", ""),
         "https://a.example.com/a%7Cb%22%3C%3E%7B%7D%60%5E"),
        (Target("https", "a.example.com", None, "/!$&'()*+,=:@~", ""),
         "https://a.example.com/!$&'()*+,=:@~"),
    ],
    ids=["root", "port-query", "wss", "encoded", "unsafe-ascii", "sub-delims"],
)  # fmt: skip
def test_url_reserialises(target: Target, url: str) -> None:
    """url() rebuilds a clean absolute URL, re-encoding what the path may not carry raw."""
    assert target.url() == url
    assert parse_target(url) == target


def test_netloc() -> None:
    """netloc carries the port only when it is not the default."""
    assert Target("https", "a.example.com", None, "/", "").netloc == "a.example.com"
    assert Target("https", "a.example.com", 8443, "/", "").netloc == "a.example.com:8443"


# --------------------------------------------------------------------------- properties

#: Pieces of dangerous paths (security.md §2.B and §4).
PATH_PIECES = [
    "/", "//", ".", "..", "...", "%2e", "%2E", "%2e%2e", "%2f", "%2F", "%5c", "%5C", "\\",
    "%25", "%252f", "%00", "\x00", "%0a", "\t", ";", ";x=1", "..;", ".;", "#", "#frag",
    "#/..", "?", "%3f", "%23", "admin", "public", "a", "A", "\u00e9", "%C3%A9", "%C3",
    "%C0%AE", "~", " ", "%20", "%61", "%", "%zz", "|", "\u2028", "\x85",
]  # fmt: skip

dangerous_paths = st.one_of(
    st.lists(st.sampled_from(PATH_PIECES), max_size=12).map(lambda xs: "/" + "".join(xs)),
    st.text(max_size=40).map(lambda text: "/" + text),
    st.text(max_size=40),
)


def _normal_or_none(path: str) -> str | None:
    try:
        return normalise_path(path)
    except InvalidTargetError:
        return None


@given(dangerous_paths)
@example("/a/b/..")
@example("/a%3fb/..%2f")
@example("/%2e%2e;x")
def test_normalise_path_is_idempotent(raw: str) -> None:
    """A normal form normalises to itself."""
    normal = _normal_or_none(raw)
    if normal is not None:
        assert normalise_path(normal) == normal


@given(dangerous_paths)
def test_normal_paths_are_clean(raw: str) -> None:
    """A normal form has no empty or dot segment and none of the refused characters."""
    normal = _normal_or_none(raw)
    if normal is None:
        return
    assert normal.startswith("/")
    assert "//" not in normal
    assert "/./" not in normal
    assert not normal.endswith("/.")
    assert "/../" not in normal
    assert not normal.endswith("/..")
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\\%#;]", normal)


#: Protected paths for the metamorphic test, and the transforms that must not change them.
PROTECTED = ["/admin", "/admin/", "/admin/users/42", "/api/v1/secret", "/a/b/c/"]
TRANSFORMS = [
    "double_slash",
    "insert_x_dotdot",
    "insert_dot",
    "encode_unreserved",
    "upper_hex",
    "append_fragment",
    "append_params",
    "slash_to_encoded",
]


def _apply(uri: str, transform: str, position: int) -> str:
    """One equivalence transform of security.md §4 at a position chosen by Hypothesis."""
    slashes = [i for i, ch in enumerate(uri) if ch == "/"]
    slash = slashes[position % len(slashes)] if slashes else len(uri)
    if transform == "double_slash":
        return uri[:slash] + "/" + uri[slash:]
    if transform == "insert_x_dotdot":
        return uri[:slash] + "/x/.." + uri[slash:]
    if transform == "insert_dot":
        return uri[:slash] + "/." + uri[slash:]
    if transform == "encode_unreserved":
        plain = [i for i, ch in enumerate(uri) if ch.isalnum() or ch in "-._~"]
        if not plain:
            return uri
        i = plain[position % len(plain)]
        return f"{uri[:i]}%{ord(uri[i]):02x}{uri[i + 1 :]}"
    if transform == "upper_hex":
        return re.sub(r"%[0-9a-fA-F]{2}", lambda m: m.group(0).upper(), uri)
    if transform == "append_fragment":
        return uri + "#frag"
    if transform == "append_params":
        return uri[:slash] + ";a=b" + uri[slash:]
    return uri[:slash] + "%2f" + uri[slash + 1 :]


@given(
    st.sampled_from(PROTECTED),
    st.lists(st.tuples(st.sampled_from(TRANSFORMS), st.integers(0, 50)), max_size=6),
)
@example("/admin", [("insert_x_dotdot", 0)])
@example("/admin", [("append_params", 1)])
@example("/admin/users/42", [("slash_to_encoded", 2), ("insert_x_dotdot", 2)])
def test_equivalent_spellings_give_the_same_path_or_a_refusal(
    path: str, transforms: list[tuple[str, int]]
) -> None:
    """Equivalence transforms of a protected path never yield a different normalised path."""
    uri = path
    for transform, position in transforms:
        uri = _apply(uri, transform, position)
    try:
        target = build_target("https", "app.example.com", uri)
    except InvalidTargetError:
        return
    assert target.path == path


#: Pieces of target URLs for the parser properties.
URL_SCHEMES = ["https://", "HTTPS://", "http://", "wss://", "ws://", "ftp://", "https:", "//"]
URL_HOSTS = [
    "app.example.com", "APP.Example.COM", "a.example.com:8443", "a.example.com:443",
    "a.example.com:80", "a.example.com:0", "a.example.com:99999", "a.example.com.",
    "127.0.0.1", "[::1]", "u@a.example.com", "a%2eb.com", "xn--bcher-kva.example.com",
    "", "a b.com", "1.example.com", "localhost", "a.0x1",
]  # fmt: skip
URL_URIS = [
    "", "/", "/admin", "//admin", "/a/../b", "/%61", "/%2e%2e/x", "/..%2f", "/a;b", "/a?b",
    "/a?b#c", "/a#c", "/a#/..", "?x", "#x", "/a b", "/a\\b", "/\u00e9", "/%C3%A9", "/a?%zz",
    "/.", "/x/.?y", "/..?y", "/a|b", "/%00", "/a?x=1&y=/z",
]  # fmt: skip

urls_from_pieces = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(URL_SCHEMES),
    st.sampled_from(URL_HOSTS),
    st.sampled_from(URL_URIS),
    st.sampled_from(URL_URIS),
)


def _slow_parse(url: str) -> Target | None:
    """The general route of parse_target, bypassing its fast path."""
    try:
        if urls._WIRE_BAD.search(url):
            return None
        match = urls._ABSOLUTE.fullmatch(url)
        return None if match is None else urls._target(*match.groups())
    except InvalidTargetError:
        return None


def _parse_or_none(url: str) -> Target | None:
    try:
        return parse_target(url)
    except InvalidTargetError:
        return None


@given(urls_from_pieces | st.text(max_size=60))
@example("https://a.example.com/.?x")
@example("https://a.example.com/x/..?y")
@example("https://a.0x1/")
def test_fast_path_agrees_with_the_general_route(url: str) -> None:
    """The one-regex fast path accepts and builds exactly what the general parser does."""
    assert _parse_or_none(url) == _slow_parse(url)


@given(urls_from_pieces)
def test_target_url_round_trips(url: str) -> None:
    """Re-parsing Target.url() gives back the same target."""
    target = _parse_or_none(url)
    if target is not None:
        assert parse_target(target.url()) == target


@given(
    st.sampled_from(["https", "HTTPS", "http", "wss", "ftp", ""]),
    st.sampled_from(URL_HOSTS),
    st.sampled_from(URL_URIS),
)
def test_build_target_agrees_with_parse_target(proto: str, host: str, uri: str) -> None:
    """Forwarded headers and the equivalent absolute URL describe the same target."""
    try:
        built: Target | None = build_target(proto, host, uri)
    except InvalidTargetError:
        built = None
    if uri and not uri.startswith("/"):
        assert built is None
    else:
        assert built == _parse_or_none(f"{proto}://{host}{uri}")
