"""Redirect safety (``server.core.urls.safe_redirect``): SPEC §3.5 and security.md §2.A."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote
from urllib.parse import urlsplit

import pytest
from hypothesis import example
from hypothesis import given
from hypothesis import strategies as st

from server.core.urls import MAX_URL_LENGTH
from server.core.urls import safe_redirect

DOMAINS = ["example.com"]

#: (URL, rebuilt URL): redirects that must be followed, in their canonical form.
ACCEPTED = [
    ("https://app.example.com/x?y=1#z", "https://app.example.com/x?y=1#z"),
    ("HTTPS://APP.Example.COM/", "https://app.example.com/"),
    ("hTtPs://app.example.com/A?B#C", "https://app.example.com/A?B#C"),
    ("https://example.com/", "https://example.com/"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com?x=1", "https://example.com/?x=1"),
    ("https://example.com#top", "https://example.com/#top"),
    ("https://a.b.c.example.com/", "https://a.b.c.example.com/"),
    ("https://app.example.com:443/p", "https://app.example.com/p"),
    ("https://app.example.com:8443/p", "https://app.example.com:8443/p"),
    ("https://app.example.com:1/", "https://app.example.com:1/"),
    ("https://app.example.com:65535/", "https://app.example.com:65535/"),
    ("https://secure.example.com:8080/secret.html", "https://secure.example.com:8080/secret.html"),
    ("https://app.example.com/?", "https://app.example.com/"),
    ("https://app.example.com/#", "https://app.example.com/"),
    ("https://app.example.com/#/dashboard?tab=1", "https://app.example.com/#/dashboard?tab=1"),
    ("https://app.example.com/a%2Fb%5c%00", "https://app.example.com/a%2Fb%5c%00"),
    ("https://app.example.com//evil.com", "https://app.example.com//evil.com"),
    ("https://app.example.com/x#@evil.com", "https://app.example.com/x#@evil.com"),
    ("https://app.example.com/x?next=https://evil.com", "https://app.example.com/x?next=https://evil.com"),
    ("https://app.example.com/caf\u00e9?q=\u00e9#\u00fc",
     "https://app.example.com/caf%C3%A9?q=%C3%A9#%C3%BC"),
    ("https://app.example.com/a\"<>`{}|^", "https://app.example.com/a%22%3C%3E%60%7B%7D%7C%5E"),
    ("https://app.example.com/a\u200bb", "https://app.example.com/a%E2%80%8Bb"),
    ("https://b\u00fccher.example.com/", "https://xn--bcher-kva.example.com/"),
    ("https://xn--bcher-kva.example.com/", "https://xn--bcher-kva.example.com/"),
    ("https://app.example.com/[x]:@!$&'()*+,;=~", "https://app.example.com/[x]:@!$&'()*+,;=~"),
]  # fmt: skip

#: Redirects that must be refused (security.md §2.A, oauth2-proxy and Authelia advisories).
REJECTED = [
    "",
    "/",
    "/app",
    "app.example.com",
    "//example.com",
    "//app.example.com/",
    "///app.example.com/",
    "/\\evil.com",
    "/\t/evil.com",
    "/%09/evil.com",
    "/./\\evil.com",
    "/./../../\\evil.com",
    "https:example.com",
    "https:/example.com",
    "https:/\\example.com",
    "https:\\\\evil.com",
    "https:\\\\example.com",
    "https:///example.com",
    "https://evil.com\\@example.com",
    "https://evil.com\\@example.com/",
    "https://example.com\\@evil.com",
    "https://evil.com",
    "https://evil.com/",
    "https://evil.com/.example.com",
    "https://evil.com?.example.com",
    "https://evil.com#.example.com",
    "https://evil.com%23.example.com",
    "https://evil.com%2f.example.com",
    "https://evil.comexample.com",
    "https://notexample.com/",
    "https://example.com.evil.com",
    "https://example.com.evil.com/",
    "https://example.com@evil.com",
    "https://example.com:443@evil.com",
    "https://example.com:@evil.com",
    "https://user:pw@app.example.com/",
    "https://@app.example.com/",
    "https://a.example.com%2f@evil.com",
    "https://app.example.com./",
    "https://app.example.com.",
    "https://example.com./",
    "https://app..example.com/",
    "https://.example.com/",
    "https://-x.example.com/",
    "https://x_y.example.com/",
    "https://app.example.com:0/",
    "https://app.example.com:65536/",
    "https://app.example.com:99999/",
    "https://app.example.com:/",
    "https://app.example.com:-1/",
    "https://app.example.com:80 /",
    "https://app.example.com:443:443/",
    "https://app.example.com:\uff10/",
    "https://[::1]/",
    "https://[::1]:443/",
    "https://127.0.0.1/",
    "https://2130706433/",
    "https://0x7f000001/",
    "http://app.example.com/",
    "http://example.com/",
    "HTTP://APP.EXAMPLE.COM/",
    "wss://app.example.com/",
    "ws://app.example.com/",
    "ftp://app.example.com/",
    "javascript:alert(1)//.example.com",
    "javascript://app.example.com/%0aalert(1)",
    "JaVaScRiPt:alert(1)",
    "java%09script:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "data:text/html;base64,PHNjcmlwdD4=",
    "vbscript:msgbox(1)",
    " https://app.example.com/",
    "https://app.example.com/ ",
    "\thttps://app.example.com/",
    "https://exa\tmple.com",
    "https://exa\nmple.com",
    "https://app.example.com/\r\nSet-Cookie: x=1",
    "https://app.example.com/\x00",
    "https://app.example.com/\x7f",
    "https://app.example.com/\x85",
    "https://app.example.com/\u00a0",
    "https://app.example.com/\u2028",
    "https://app.example.com/\u3000",
    "https://app.example.com/a b",
    "https://app.example.com/a\\b",
    "https://app.example.com/?a\\b",
    "https://app.example.com/#a\\b",
    "https://example\u3002com/",
    "https://app.example\u3002com/",
    "https://app.example\uff0ecom/",
    "https://app.example\uff61com/",
    "https://\uff41pp.example.com/",
    "https://ex\u0430mple.com/",
    "https://app.exam\u00adple.com/",
    "https://app.\u212aexample.com/",
    "https://app.example.com\u2044evil.com/",
    "https://app.example.com\uff0fevil.com/",
    "https://evil.com\uff03.example.com/",
    "https://evil.com\uff20example.com/",
    "https://xn--zz.evil.com/",
    "https://app.example.com/" + "a" * MAX_URL_LENGTH,
]

#: Payloads rejected by oauth2-proxy's corpus test are often written percent-encoded.
ENCODED_ATTACKS = [
    "%2F%2Fevil.com",
    "%2f%2fexample.com",
    "%5C%5Cevil.com",
    "https%3A%2F%2Fevil.com",
    "https%3A%2F%2Fapp.example.com",
    "%68ttps://app.example.com/",
    "https://%61pp.example.com/",
    "https://app%2Eexample.com/",
    "https%3A//app.example.com/",
    "%252F%252Fevil.com",
]


@pytest.mark.parametrize(("url", "rebuilt"), ACCEPTED, ids=[ascii(a)[:70] for a, _ in ACCEPTED])
def test_safe_redirect_accepts(url: str, rebuilt: str) -> None:
    """A clean https URL inside the cookie domain comes back rebuilt in canonical form."""
    assert safe_redirect(url, DOMAINS) == rebuilt


@pytest.mark.parametrize(("url", "rebuilt"), ACCEPTED, ids=[ascii(a)[:70] for a, _ in ACCEPTED])
def test_safe_redirect_is_idempotent_on_the_table(url: str, rebuilt: str) -> None:
    """Checking an accepted redirect again changes nothing."""
    assert safe_redirect(rebuilt, DOMAINS) == rebuilt


@pytest.mark.parametrize("url", REJECTED, ids=[ascii(u)[:70] for u in REJECTED])
def test_safe_redirect_rejects(url: str) -> None:
    """Every open-redirect trick is refused, so the caller falls back to its default."""
    assert safe_redirect(url, DOMAINS) is None


@pytest.mark.parametrize("url", REJECTED, ids=[ascii(u)[:70] for u in REJECTED])
def test_encoded_attacks_stay_inert(url: str) -> None:
    """Once or twice percent-encoded, a rejected payload is still refused after one decode."""
    once = quote(url, safe="")
    assert safe_redirect(once, DOMAINS) is None
    assert safe_redirect(quote(once, safe=""), DOMAINS) is None


@pytest.mark.parametrize("url", ENCODED_ATTACKS, ids=ENCODED_ATTACKS)
def test_percent_encoded_forms_are_refused(url: str) -> None:
    """A URL whose scheme, separators or host are percent-encoded is not a URL we follow."""
    assert safe_redirect(url, DOMAINS) is None


@pytest.mark.parametrize(
    ("url", "domains", "rebuilt"),
    [
        ("https://app.other.org/", ["example.com", "other.org"], "https://app.other.org/"),
        ("https://example.com/", "example.com", "https://example.com/"),
        ("https://example.com/", ("", "example.com"), "https://example.com/"),
        ("https://sub.app.example.com/", ["app.example.com"], "https://sub.app.example.com/"),
    ],
    ids=["second-domain", "domain-as-string", "empty-domain-skipped", "nested-domain"],
)
def test_domains(url: str, domains: Sequence[str], rebuilt: str) -> None:
    """Any configured domain admits its own host and subdomains."""
    assert safe_redirect(url, domains) == rebuilt


@pytest.mark.parametrize(
    ("url", "domains"),
    [
        ("https://app.example.com/", []),
        ("https://app.example.com/", [""]),
        ("https://example.com/", ["app.example.com"]),
        ("https://x.m/", "example.com"),
        ("https://app.example.com/", ["EXAMPLE.COM"]),
        ("https://myexample.com/", ["example.com"]),
    ],
    ids=[
        "no-domains",
        "empty-domain",
        "parent-domain",
        "string-not-chars",
        "domain-not-lower",
        "no-dot",
    ],
)
def test_domains_refuse(url: str, domains: Sequence[str]) -> None:
    """Only a dot-boundary suffix of a configured (lowercase) domain counts."""
    assert safe_redirect(url, domains) is None


@pytest.mark.parametrize("value", [None, 123, b"https://example.com/", ["https://example.com/"]])
def test_non_strings_are_refused(value: object) -> None:
    """A JSON targetURL of the wrong type is refused, never an exception."""
    assert safe_redirect(value, DOMAINS) is None  # type: ignore[arg-type]


# --------------------------------------------------------------------------- properties

#: The grammar of dangerous pieces from security.md §4, with this test's domain in it.
PIECES = [
    "https:", "http:", "HTTPS:", "wss:", "javascript:", "//", "/", "\\", "@", ":", ":443",
    ":8443", ":0", "?", "#", ".", "%2f", "%5c", "%40", "%09", "%23", "%2e", "\t", "\n", " ",
    "example.com", "app.example.com", "evil.com", "\u3002", "\uff41", "\u0430", "xn--",
    "[::1]", "127.0.0.1", "\u00e9", "\u00df", "\u00ad", "%", "x", "-", "EXAMPLE.COM",
]  # fmt: skip

#: Near misses: a plausible URL with one or more parts swapped for a trick.
near_misses = st.builds(
    "{}{}{}{}{}".format,
    st.sampled_from(["https://", "HTTPS://", "https:/", "https:", "//", "http://", "wss://"]),
    st.sampled_from(["", "app.", "a.b.", "evil.com.", "evil.com@", "evil.com\\@", "\u00e9", "-"]),
    st.sampled_from(
        ["example.com", "EXAMPLE.com", "example.com.evil.com", "example\u3002com",
         "ex\u0430mple.com", "example.com.", "example.com%2f", "notexample.com"]
    ),
    st.sampled_from(["", ":443", ":8443", ":0", ":99999", ":", "@evil.com", "\\@evil.com"]),
    st.lists(st.sampled_from(PIECES), max_size=5).map("".join),
)  # fmt: skip

#: Plausible URLs, mostly accepted, so the properties below have something to check.
plausible_urls = st.builds(
    "{}{}{}{}{}".format,
    st.sampled_from(["https://", "HTTPS://", "https://", "hTTps://"]),
    st.sampled_from(["", "app.", "a.b.", "APP.", "\u00e9.", "xn--bcher-kva."]),
    st.sampled_from(["example.com", "EXAMPLE.com"]),
    st.sampled_from(["", "", ":443", ":8443", ":1", ":65535"]),
    st.lists(st.sampled_from(PIECES), max_size=6).map("".join),
)

dangerous_urls = st.one_of(
    plausible_urls,
    near_misses,
    st.lists(st.sampled_from(PIECES), max_size=12).map("".join),
    st.lists(st.sampled_from(PIECES), max_size=10).map(lambda xs: "https://" + "".join(xs)),
    st.text(max_size=60),
)


def _in_domain(host: str | None) -> bool:
    return host is not None and (host == "example.com" or host.endswith(".example.com"))


def _check_accepted(out: str) -> None:
    """The invariants of an accepted redirect (security.md §4, with urlsplit as the oracle)."""
    parts = urlsplit(out)
    assert parts.scheme == "https"
    assert parts.username is None
    assert parts.password is None
    assert "@" not in parts.netloc
    assert "%" not in parts.netloc
    assert _in_domain(parts.hostname)
    assert parts.port is None or 0 < parts.port <= 65535
    assert out.isascii()
    assert out.isprintable()
    assert " " not in out
    assert "\\" not in out
    assert out.startswith(f"https://{parts.netloc}")
    assert safe_redirect(out, DOMAINS) == out


@given(dangerous_urls)
@example("https://evil.com\\@example.com")
@example("https://example.com\u3002evil.com")
@example("https://app.example.com:443@evil.com")
@example("https://app.example.com/#@evil.com")
def test_accepted_redirects_stay_in_domain(raw: str) -> None:
    """Whatever is accepted re-parses as https, without userinfo, on a host in the domain,
    and is accepted unchanged when checked again."""
    out = safe_redirect(raw, DOMAINS)
    if out is not None:
        _check_accepted(out)


@given(plausible_urls)
def test_plausible_redirects_are_rebuilt_in_domain(raw: str) -> None:
    """Mostly-valid URLs (so most are accepted) satisfy the same invariants when accepted."""
    out = safe_redirect(raw, DOMAINS)
    if out is not None:
        _check_accepted(out)
        assert urlsplit(out).hostname == urlsplit(raw.lower()).hostname or not raw.isascii()


@given(st.text(max_size=60))
def test_only_https_urls_are_accepted(raw: str) -> None:
    """Anything that does not start with https:// (any case) is refused."""
    if raw[:8].lower() != "https://":
        assert safe_redirect(raw, DOMAINS) is None
