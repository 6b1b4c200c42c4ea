"""Rule regexes are RE2: linear-time matching, Go syntax, load errors for what RE2 lacks (item 4).

With Python's backtracking ``re``, each evil pattern below takes minutes on the crafted path
(the pytest timeout catches that); with RE2 every request is answered at once. The tests
assert decisions, not timings, except for a loose hang guard.
"""

from __future__ import annotations

import json
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from authctl.cli import cli
from server.core.config import Config
from server.core.config import parse_config
from server.core.errors import ConfigError
from server.core.regex import Regex
from server.core.regex import RegexError
from server.core.rules import AccessControl
from server.core.rules import AccessRequest
from tests.conftest import BASE_CONFIG

HEAD = """\
[session]
store = "memory"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"

[access_control]
default_policy = "one_factor"

"""

#: (pattern, crafted text that makes a backtracking engine explode, whether it matches).
EVIL = [
    (r"^(a+)+$", "/" + "a" * 31 + "!", False),
    (r"^/(a+)+$", "/" + "a" * 63 + "!", False),
    (r"^/(a|aa)+$", "/" + "a" * 40 + "!", False),
    (r"(a|aa)+!$", "/" + "a" * 40 + "!", True),
    (r"^/(.*a){20}$", "/" + "a" * 19 + "b" * 44, False),
    (r"^/(\w+\s?)*$", "/" + "ab" * 20 + "!", False),
    (r"^/([a-z]+)*[0-9]$", "/" + "x" * 40 + "!", False),
    (r"^/(x+x+)+y$", "/" + "x" * 40, False),
]


def load(rules: str, head: str = HEAD) -> Config:
    text = head + rules
    return parse_config(text, tomllib.loads(text), Path("/srv/authctl/authctl.toml"))


def problems(rules: str) -> list[tuple[str, str, str]]:
    with pytest.raises(ConfigError) as info:
        load(rules)
    return [(p.key, p.message, p.hint) for p in info.value.problems]


@pytest.mark.parametrize(("pattern", "path", "matches"), EVIL)
def test_evil_resource_pattern_is_answered(pattern: str, path: str, matches: bool) -> None:
    """A deny rule with a catastrophic-backtracking resource gets the right decision at once."""
    toml = pattern.replace("\\", "\\\\")
    engine = AccessControl(
        load(
            f'[[access_control.rules]]\ndomain = "app.example.com"\nresources = ["{toml}"]\n'
            'policy = "deny"\n'
        ).access_control
    )
    started = time.monotonic()
    decision = engine.evaluate(AccessRequest("app.example.com", path))
    assert time.monotonic() - started < 1.0  # a hang guard; the decision is the assertion
    assert decision.policy == ("deny" if matches else "one_factor")
    assert decision.rule == (0 if matches else None)


@pytest.mark.parametrize(("pattern", "path", "matches"), EVIL)
def test_evil_patterns_everywhere(pattern: str, path: str, matches: bool) -> None:
    """domain_regex and the query pattern operators are RE2 too."""
    text = path.lstrip("/")
    domain = pattern.replace("^/", "^").replace("\\", "\\\\")
    engine = AccessControl(
        load(
            f'[[access_control.rules]]\ndomain_regex = ["{domain}"]\npolicy = "deny"\n\n'
            '[[access_control.rules]]\ndomain = "q.example.com"\n'
            f'query = [[{{ key = "x", operator = "pattern", value = "{domain}" }}]]\n'
            'policy = "bypass"\n'
        ).access_control
    )
    assert engine.evaluate(AccessRequest(text)).policy == ("deny" if matches else "one_factor")
    decision = engine.evaluate(AccessRequest("q.example.com", "/", query="x=" + text))
    assert decision.policy == ("bypass" if matches else "one_factor")


def test_evil_path_through_verify(tmp_path: Path, clock: object) -> None:
    """The whole verify path (forward-auth) answers a crafted path under an evil rule."""
    from tests.apphelpers import APP_CONFIG
    from tests.apphelpers import build

    config = APP_CONFIG.replace(
        '[[access_control.rules]]\ndomain = "public.example.com"',
        '[[access_control.rules]]\ndomain = "app.example.com"\nresources = ["^/(a+)+$"]\n'
        'policy = "deny"\n\n[[access_control.rules]]\ndomain = "public.example.com"',
    )
    h = build(tmp_path, clock, config)
    assert h.forward_auth("https://app.example.com/" + "a" * 40 + "!").status_int == 302
    assert h.forward_auth("https://app.example.com/" + "a" * 40).status_int == 403


@pytest.mark.parametrize(
    ("pattern", "fix"),
    [
        (r"^/(a)\1", "backreferences"),
        (r"^/(?P<x>a)(?P=x)", "backreferences"),
        (r"^/(?=admin)", "lookahead"),
        (r"^/(?!admin)", "lookahead"),
        (r"(?<=/)admin", "lookahead"),
        (r"^/admin\Z", r"\z"),
        (r"^/a++", "possessive"),
        (r"^/(?>a)", "possessive"),
        (r"^/a{1001}", "repeat"),
    ],
)
def test_what_re2_lacks_is_a_config_error(pattern: str, fix: str) -> None:
    """The error names the rule key and the criterion, RE2's reason and a fix."""
    toml = pattern.replace("\\", "\\\\")
    found = problems(
        '[[access_control.rules]]\ndomain = "app.example.com"\npolicy = "deny"\n\n'
        f'[[access_control.rules]]\ndomain = "app.example.com"\nresources = ["^/x", "{toml}"]\n'
        'policy = "deny"\n'
    )
    assert len(found) == 1
    key, message, hint = found[0]
    assert key == "access_control.rules[1].resources[1]"
    assert pattern in message.replace("\\\\", "\\")
    assert fix in hint


def test_domain_regex_and_query_pattern_errors_name_their_key() -> None:
    found = problems(
        '[[access_control.rules]]\ndomain_regex = ["^(?=x)"]\npolicy = "deny"\n\n'
        '[[access_control.rules]]\ndomain = "q.example.com"\n'
        'query = [[{ key = "x", operator = "not pattern", value = "(a)\\\\1" }]]\n'
        'policy = "deny"\n'
    )
    assert [key for key, _, _ in found] == [
        "access_control.rules[0].domain_regex[0]",
        "access_control.rules[1].query[0][0].value",
    ]


def test_rules_check_reports_the_rule(
    runner: CliRunner, write_config: Callable[[str], Path]
) -> None:
    """``authctl rules check`` shows the refused regex as an error on its rule."""
    path = write_config(BASE_CONFIG.replace('resources = ["^/admin', 'resources = ["^(?=/)/admin'))
    assert "(?=/)" in path.read_text()
    result = runner.invoke(cli, ["--config", str(path), "rules", "check", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    (finding,) = data["findings"]
    assert finding["severity"] == "error"
    assert finding["rule"] == 1
    assert "lookahead" in finding["fix"]


def test_named_groups_bind_users_and_groups() -> None:
    engine = AccessControl(
        load(
            "[[access_control.rules]]\n"
            'domain_regex = ["^(?P<User>[a-z]+)\\\\.u\\\\.example\\\\.com$", '
            '"^(?P<Group>[a-z]+)\\\\.g\\\\.example\\\\.com$"]\npolicy = "one_factor"\n'
        ).access_control
    )
    assert engine.evaluate(AccessRequest("bob.u.example.com", user="bob")).rule == 0
    assert engine.evaluate(AccessRequest("bob.u.example.com", user="eve")).rule is None
    assert engine.evaluate(AccessRequest("dev.g.example.com", user="x", groups=("dev",))).rule == 0
    assert (
        engine.evaluate(AccessRequest("ops.g.example.com", user="x", groups=("dev",))).rule is None
    )


def test_re2_semantics_as_in_go() -> None:
    """$ is the end of the text, \\w is ASCII, \\z exists: Go's regexp, as Authelia."""
    assert not Regex("^a$").search("a\n")
    assert not Regex(r"^\w+$").search("é")
    assert Regex(r"^/x\z").search("/x")
    assert Regex(r"^/\pL+$").search("/é")
    assert Regex("(?i)^/ADMIN").search("/admin")
    assert Regex("^/caf\u00e9$").search("/caf\u00e9")
    groups = Regex("^/(?P<User>[^/]+)/").captures("/\u00e9l\u00e8ve/x")
    assert groups == {"User": "\u00e9l\u00e8ve"}


def test_regex_error_carries_reason_and_fix() -> None:
    with pytest.raises(RegexError) as info:
        Regex("(?=a)")
    assert "(?=" in info.value.reason
    assert "lookahead" in info.value.fix


SHAPES = [
    "^/admin", "^/admin$", "^/a", "^/", "^", "public", "x=1", "", "^/api([/?].*)?$", "^/a.*b$",
    "^/ad(min)?$", "^/adm?", "^/a|^/b", "(?i)^/Admin", "(?s)^/a.", "^/a\\.b", "^/a\\$", "\\^/a",
    "^/[a]", "^/é", "a$", "^a{2}", "^/x{,3}", "^/ab*", "^/ab+c", "^/a.*", "^/a.*$", "^/a.*?$",
    "^/a(/.*)?$", "^/a(?:[/?].*)?$", "^/a([/?].*?)?$", "^/a(.*)$", "(?s)^/a.*$", "^/a([/\n].*)?$",
    "^/a([^/].*)?$", "^/a(?i:[/?].*)?$", "^/a(/.+)?$", "^/a(/.*)?", "^/a(/.*)*$", "^/a(/.*)?$x",
]  # fmt: skip


_TEXTS = st.text(alphabet="/adminpublicx=1.b$^{},3é?\nA", max_size=12)


@settings(max_examples=1000)
@given(
    st.sampled_from(SHAPES),
    st.one_of(_TEXTS, st.tuples(st.sampled_from(("/a", "/api", "/admin")), _TEXTS).map("".join)),
)
def test_literal_shortcuts_equal_re2(pattern: str, text: str) -> None:
    """The startswith / == / in shortcuts never give another answer than RE2 itself."""
    regex = Regex(pattern)
    assert regex.search(text) == regex.re2_search(text)
