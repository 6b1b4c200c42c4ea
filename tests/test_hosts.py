"""One host canonicaliser: the config and the request side give every host the same verdict.

The config used to IDNA-*map* what it read (a fullwidth ``app.example.com`` became plain ASCII)
while a request naming the same spelling was refused; now both go through
``server.core.urls.canonical_host``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.core.config import load_config
from server.core.config import normalise_domain
from server.core.errors import ConfigError
from server.core.errors import InvalidTargetError
from server.core.urls import canonical_host
from server.core.urls import safe_redirect
from tests.conftest import BASE_CONFIG

FULLWIDTH_APP = "\uff41\uff50\uff50.example.com"  # app.example.com in fullwidth letters

RULE = '\n[[access_control.rules]]\ndomain = "{}"\npolicy = "bypass"\n'


def test_fullwidth_host_same_verdict_in_config_and_request(
    write_config: Callable[[str], Path],
) -> None:
    """A fullwidth host is refused in a rule and in a request alike; the config's fix names
    the spelling to write instead."""
    with pytest.raises(ConfigError) as info:
        load_config(write_config(BASE_CONFIG + RULE.format(FULLWIDTH_APP)))
    (problem,) = info.value.problems
    assert problem.key == "access_control.rules[3].domain[0]"
    assert "'app.example.com'" in problem.hint
    with pytest.raises(InvalidTargetError):
        canonical_host(FULLWIDTH_APP, allow_unicode=True)
    assert safe_redirect(f"https://{FULLWIDTH_APP}/", ["example.com"]) is None


def test_fullwidth_cookie_domain_and_portal_refused(write_config: Callable[[str], Path]) -> None:
    """The cookie domain and the portal URL's host are read by the same function."""
    text = BASE_CONFIG.replace(
        'portal_url = "https://auth.example.com"',
        'portal_url = "https://\uff41uth.example.com"',
    )
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    assert [p.key for p in info.value.problems] == ["session.cookies[0].portal_url"]
    assert "https://auth.example.com" in info.value.problems[0].hint


HOSTS = st.one_of(
    st.sampled_from(
        [
            "app.example.com", "APP.Example.com", FULLWIDTH_APP, "b\u00fccher.example",
            "B\u00dcCHER.example", "\u212aelvin.example.com", "stra\u00dfe.de",
            "example\u3002com", "a\u00adb.example", "10.0.0.5", "127.1", "a_b.example",
            "xn--bcher-kva.example", "-a.example", "localhost", "x" * 64 + ".com",
        ]
    ),
    st.text(st.sampled_from("aZ09-.\u00fc\u00dc\uff41\u212a\u3002_"), min_size=1, max_size=12),
)  # fmt: skip


@given(HOSTS)
def test_config_and_request_agree_on_every_host(host: str) -> None:
    """normalise_domain (config) accepts exactly what canonical_host (requests) accepts,
    with the same result."""
    try:
        expected: str | None = canonical_host(host, allow_unicode=True)
    except InvalidTargetError:
        expected = None
    try:
        got: str | None = normalise_domain(host)
    except ValueError:
        got = None
    assert got == expected


@pytest.mark.parametrize(
    ("key", "written", "fix"),
    [
        ("portal_url", "http://login.example.com:8443/auth", "https://login.example.com:8443/auth"),
        ("portal_url", "login.example.com:8443", "https://login.example.com:8443"),
        ("portal_url", "https://me@login.example.com:8443", "https://login.example.com:8443"),
        ("portal_url", "http://LOGIN.example.com:443/", "https://login.example.com/"),
        ("default_redirect_url", "http://www.example.com:8080/home", "https://www.example.com:8080/home"),
        ("default_redirect_url", "https://www.example.com:0/", "https://www.example.com/"),
    ],
)  # fmt: skip
def test_suggested_url_keeps_host_and_port(
    write_config: Callable[[str], Path], key: str, written: str, fix: str
) -> None:
    """The fix for a refused portal or redirect URL is the same URL made right, not a
    stand-in host on port 443 (an invalid port cannot be kept: it is dropped)."""
    line = f'{key} = "{written}"'
    if key == "portal_url":
        text = BASE_CONFIG.replace('portal_url = "https://auth.example.com"', line)
    else:
        text = BASE_CONFIG.replace('default_redirect_url = "https://www.example.com"', line)
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text))
    (problem,) = info.value.problems
    assert problem.key == f"session.cookies[0].{key}"
    assert problem.hint == f'write "{fix}"'
