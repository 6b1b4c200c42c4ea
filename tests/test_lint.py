"""Tests for server.core.lint: each check finds what it should, and stays quiet otherwise.

Configs go through the real loader, so what the linter sees is what ``rules check`` sees.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from server.core.config import Config
from server.core.config import parse_config
from server.core.errors import ConfigError
from server.core.lint import Finding
from server.core.lint import config_findings
from server.core.lint import lint
from server.core.lint import runtime_files
from tests.conftest import BASE_CONFIG

HEAD = """\
[session]
store = "memory"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"

[access_control]
default_policy = "deny"
networks = { internal = ["10.0.0.0/8"], lan = ["10.1.0.0/16"], home = ["192.168.0.0/16"] }

"""


def load(rules: str, head: str = HEAD, base: Path = Path("/srv/authctl")) -> Config:
    """A config with ``rules`` after the standard head, through the real loader."""
    text = head + rules
    return parse_config(text, tomllib.loads(text), base / "authctl.toml")


def rule(domain: str = "app.example.com", policy: str = "one_factor", **extra: str) -> str:
    """One ``[[access_control.rules]]`` block; ``extra`` values are raw TOML."""
    lines = ["[[access_control.rules]]", f"domain = {domain}" if domain[0] in '["' else
             f'domain = "{domain}"', f'policy = "{policy}"']  # fmt: skip
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"


def codes(findings: list[Finding]) -> list[tuple[int | None, str]]:
    """(rule, code) of each finding."""
    return [(f.rule, f.code) for f in findings]


def test_base_config_is_clean(tmp_path: Path) -> None:
    """The example config of the test suite lints without a single finding."""
    config = parse_config(BASE_CONFIG, tomllib.loads(BASE_CONFIG), tmp_path / "authctl.toml")
    assert lint(config) == []


# --------------------------------------------------------------------------- shadowing


def test_wildcard_before_exact_is_reported() -> None:
    """A *.example.com bypass before app.example.com names the shadowing rule and its line."""
    config = load(rule("*.example.com", "bypass") + rule("app.example.com", "two_factor"))
    findings = lint(config)
    assert codes(findings) == [(0, "catch-all"), (1, "shadowed")]
    shadowed = findings[1]
    first_line = config.access_control.rules[0].line
    assert f"rule 0 (line {first_line}), policy 'bypass'" in shadowed.message
    assert shadowed.line == config.access_control.rules[1].line
    assert shadowed.severity == "warning"
    assert "move it above rule 0" in shadowed.fix


@pytest.mark.parametrize(
    ("first", "second", "shadowed"),
    [
        (rule(methods='["GET", "POST"]'), rule(methods='["GET"]'), True),
        (rule(methods='["GET"]'), rule(methods='["GET", "POST"]'), False),
        (rule(methods='["GET"]'), rule(), False),
        (rule(resources='["^/api"]'), rule(resources='["^/api/v1", "^/apis"]'), True),
        (rule(resources='["^/api"]'), rule(resources='["^/apx"]'), False),
        (rule(resources='["^/api/"]'), rule(resources='["^/api([/?].*)?$"]'), False),
        (rule(resources='["^/a(b|c)"]'), rule(resources='["^/a(b|c)"]'), True),
        (rule(resources='["^/a(b|c)"]'), rule(resources='["^/ab"]'), False),
        (rule(resources='["^/"]'), rule(), True),
        (rule(resources='[".*"]'), rule(methods='["GET"]'), True),
        (rule(resources='["^/x"]'), rule(), False),
        (rule(resources='["^/x"]'), rule(resources='["(?i)^/x"]'), False),
        (rule(networks='["internal"]'), rule(networks='["lan", "10.9.9.9"]'), True),
        (rule(networks='["internal"]'), rule(networks='["home"]'), False),
        (rule(networks='["internal"]'), rule(), False),
        (rule(networks='["0.0.0.0/0", "::/0"]'), rule(), True),
        (rule(subject='["group:admins"]'), rule(subject='[["group:admins", "user:bob"]]'), True),
        (rule(subject='[["group:admins", "user:bob"]]'), rule(subject='["group:admins"]'), False),
        (rule(subject='["group:admins"]'), rule(), False),
        (rule(query='[[{ key = "a" }]]'), rule(query='[[{ key = "a" }, { key = "b" }]]'), True),
        (rule(query='[[{ key = "a" }, { key = "b" }]]'), rule(query='[[{ key = "a" }]]'), False),
        (rule(query='[[{ key = "a" }]]'), rule(), False),
        (rule('["app.example.com", "*.app.example.com"]'), rule("x.app.example.com"), True),
        (rule("*.example.com", methods='["GET"]'), rule("*.app.example.com", methods='["GET"]'),
         True),
        (rule("*.app.example.com"), rule("*.example.com"), False),
        (rule("*.example.com"), rule("{user}.example.com"), True),
        (rule("{user}.example.com"), rule("{user}.example.com", methods='["GET"]'), True),
        (rule("{user}.example.com"), rule("{group}.example.com"), False),
        (rule("app.example.com"), rule("*.app.example.com"), False),
        (rule("app.example.com"), rule("other.example.com"), False),
    ],
    ids=["methods-superset", "methods-subset", "methods-vs-none", "resource-prefix",
         "resource-other-prefix", "resource-not-whole-literal", "resource-same-regex",
         "resource-regex-vs-literal", "resource-root", "resource-universal", "resource-vs-none",
         "resource-flags-differ", "network-subnet", "network-disjoint", "network-vs-none",
         "network-everything", "subject-and", "subject-narrower-first", "subject-vs-none",
         "query-and", "query-narrower-first", "query-vs-none", "exact-and-wildcard",
         "wildcard-of-wildcard", "narrower-wildcard-first", "wildcard-covers-user",
         "same-user-domain", "user-vs-group-domain", "exact-vs-wildcard", "unrelated-hosts"],
)  # fmt: skip
def test_shadowing_criterion_by_criterion(first: str, second: str, shadowed: bool) -> None:
    """A rule is shadowed only when the earlier one covers every criterion it has."""
    found = [f for f in lint(load(first + second)) if f.code in ("shadowed", "duplicate")]
    assert bool(found) is shadowed, found


def test_plain_domain_regex_covers_concrete_hosts() -> None:
    """An earlier domain_regex that matches a later rule's exact host shadows it."""
    config = load(
        "[[access_control.rules]]\ndomain_regex = ['^app\\.example\\.com$']\npolicy = \"deny\"\n\n"
        + rule("app.example.com")
        + rule("api.example.com")
    )
    assert codes(lint(config)) == [(1, "shadowed")]


def test_duplicates_name_the_first_rule() -> None:
    """Identical criteria are a duplicate; with another policy the later policy is dead."""
    same = lint(load(rule() + rule()))
    assert codes(same) == [(1, "duplicate")]
    assert same[0].message.startswith("rule duplicates rule 0")
    conflict = lint(load(rule(policy="deny") + rule(policy="bypass")))
    assert codes(conflict) == [(1, "duplicate")]
    assert "policy 'bypass' here never applies, 'deny' does" in conflict[0].message


def test_redundant_shadow_mentions_same_policy() -> None:
    """A shadowed rule with the same policy as its shadow is called redundant."""
    findings = lint(load(rule("*.app.example.com") + rule("x.app.example.com")))
    assert codes(findings) == [(1, "shadowed")]
    assert "redundant" in findings[0].message


# --------------------------------------------------------------------------- catch-all


def test_full_catch_all_kills_later_rules_and_default() -> None:
    """A rule matching every host of every cookie domain makes the rest dead."""
    findings = lint(load(rule('["example.com", "*.example.com"]') + rule("x.example.com", "deny")))
    assert codes(findings) == [(0, "catch-all"), (1, "shadowed")]
    assert "default_policy 'deny' never apply" in findings[0].message


def test_universal_regex_is_a_catch_all() -> None:
    """domain_regex '.*' with no other criterion catches everything."""
    config = load(
        "[[access_control.rules]]\ndomain_regex = ['.*']\npolicy = \"one_factor\"\n\n" + rule()
    )
    assert codes(lint(config)) == [(0, "catch-all"), (1, "shadowed")]


def test_catch_all_at_the_end_is_fine() -> None:
    """A catch-all as the last rule is the usual 'everything else' rule: no finding."""
    assert lint(load(rule() + rule('["example.com", "*.example.com"]'))) == []


def test_catch_all_with_criteria_is_not() -> None:
    """A wildcard with a method criterion does not catch everything."""
    findings = lint(load(rule("*.example.com", methods='["GET"]') + rule("app.example.com")))
    assert codes(findings) == []


def test_catch_all_needs_every_cookie_domain() -> None:
    """With two cookie domains, a wildcard on one of them is not a catch-all."""
    head = HEAD.replace(
        "[access_control]",
        '[[session.cookies]]\ndomain = "example.org"\nportal_url = "https://auth.example.org"\n\n'
        "[access_control]",
    )
    findings = lint(load(rule("*.example.com") + rule("*.example.org"), head=head))
    assert codes(findings) == []


# --------------------------------------------------------------------------- regexes


@pytest.mark.parametrize(
    ("pattern", "policy", "code"),
    [
        ("/public/", "bypass", "unanchored-bypass"),
        ("public", "bypass", "unanchored-bypass"),
        ("^/a|/b", "bypass", "unanchored-bypass"),
        ("/public/", "one_factor", None),
        ("^/public", "bypass", "bypass-prefix"),
        ("^/public/", "bypass", None),
        ("^/admin([/?].*)?$", "bypass", None),
        ("^/", "bypass", None),
        ("\\A/static/", "bypass", None),
        ("(^/a|^/b)", "bypass", None),
        ("^admin", "one_factor", "regex-never-matches"),
        ("^[a-z]+$", "deny", "regex-never-matches"),
        ("$^", "one_factor", "regex-never-matches"),
        ("^$", "one_factor", "regex-never-matches"),
        ("^/x$/y", "one_factor", "regex-never-matches"),
        ("/x^", "one_factor", "regex-never-matches"),
        ("(?:^a|^b)", "one_factor", "regex-never-matches"),
        ("^(?:a)+", "one_factor", "regex-never-matches"),
        ("^(?:$)", "one_factor", "regex-never-matches"),
        ("^(/x$)y", "one_factor", "regex-never-matches"),
        ("^[^/]", "one_factor", "regex-never-matches"),
        ("^/admin", "one_factor", None),
        ("^(/|x)", "one_factor", None),
        ("^a?/", "one_factor", None),
        ("^[/a]", "one_factor", None),
        ("(?i)^/", "one_factor", None),
        ("^(?:a|)/", "one_factor", None),
        ("^\\W", "one_factor", None),
        ("^.", "one_factor", None),
        ("^[^x]", "one_factor", None),
        ("^(?i:A)", "one_factor", None),
        ("^(?:b|/)", "one_factor", None),
        ("^x*/", "one_factor", None),
        ("^(x)*/", "one_factor", None),
        ("x$|^/y", "one_factor", None),
        ("^(?:(?:a)b)+", "one_factor", "regex-never-matches"),
        ("^(?:a+)+", "one_factor", "regex-never-matches"),
        ("^(?:ab|cd)+", "one_factor", "regex-never-matches"),
        ("^[^/a]", "one_factor", "regex-never-matches"),
        ("^\\b/x", "one_factor", None),
        ("^(?:/a)+", "one_factor", None),
        ("^", "bypass", None),
        ("", "bypass", "unanchored-bypass"),
        ("^/x$(?i:a)", "one_factor", "regex-never-matches"),
        ("^/x$a+", "one_factor", "regex-never-matches"),
        ("^/x$(?:ab|cd)", "one_factor", "regex-never-matches"),
        ("/(?i:$a)", "one_factor", "regex-never-matches"),
        ("^(?:ab|)+/", "one_factor", None),
        ("^/x(?:$|/)", "one_factor", None),
        ("^/x$(?:y)?", "one_factor", None),
    ],
)
def test_resource_regex_checks(pattern: str, policy: str, code: str | None) -> None:
    """Bypass regexes must be anchored; regexes that cannot match a path are reported."""
    toml = pattern.replace("\\", "\\\\")
    findings = lint(load(rule(policy=policy, resources=f'["{toml}"]')))
    assert [f.code for f in findings] == ([code] if code else [])


@pytest.mark.parametrize(
    ("pattern", "example"),
    [
        ("[^x]public", "/admin?x=ypublic"),
        ("[ab]public", "/admin?x=apublic"),
        ("(pub)+lic", "/admin?x=public"),
        ("(?:ab|cd)pub", "/admin?x=abpub"),
        ("[^/a-z0-9._-]pub", None),
        ("\\dpub", None),
    ],
)
def test_unanchored_examples(pattern: str, example: str | None) -> None:
    """The example path is built from the pattern when it is easy, else left out."""
    toml = pattern.replace("\\", "\\\\")
    (finding,) = lint(load(rule(policy="bypass", resources=f'["{toml}"]')))
    assert finding.code == "unanchored-bypass"
    if example is None:
        assert "also matches" not in finding.message
    else:
        assert f"it also matches {example!r}" in finding.message


def test_unanchored_bypass_shows_the_bypass() -> None:
    """The warning quotes a protected URL the regex would let through, and the fix."""
    (finding,) = lint(load(rule(policy="bypass", resources='["/public/"]')))
    assert "'/admin?x=/public/'" in finding.message
    assert finding.fix == "anchor it: '^/public/'"
    (finding,) = lint(load(rule(policy="bypass", resources='["\\\\dpub"]')))
    assert "also matches" not in finding.message
    (finding,) = lint(load(rule(policy="bypass", resources='["public"]')))
    assert finding.fix == "anchor it: '^/(.*/)?public'"
    (finding,) = lint(load(rule(policy="bypass", resources='["^/a|/b"]')))
    assert finding.fix == "anchor it: '^(?:/a|/b)'"


@pytest.mark.parametrize(
    ("pattern", "never"),
    [
        ("^App\\.example\\.com$", True),
        ("^app\\.example\\.com$", False),
        ("(?i)^App\\.example\\.com$", False),
        ("^\\.example\\.com$", True),
        ("^(?:X)+\\.example\\.com", True),
        ("^(?:a|B)\\.example\\.com", False),
        ("^[A-Z]+\\.example\\.com$", True),
        ("(?i)^[A-Z]+\\.example\\.com$", False),
        ("^(?P<User>[a-z]+)\\.example\\.com$", False),
        ("com$^", True),
    ],
)
def test_domain_regex_that_cannot_match(pattern: str, never: bool) -> None:
    """A domain_regex that needs upper case or a non-host first character is reported."""
    policy = "one_factor"
    toml = pattern.replace("\\", "\\\\")
    config = load(f'[[access_control.rules]]\ndomain_regex = ["{toml}"]\npolicy = "{policy}"\n')
    found = [f for f in lint(config) if f.code == "regex-never-matches"]
    assert bool(found) is never, found


def test_probes_veto_a_wrong_never_verdict() -> None:
    """'Cannot match' is only reported when no probe string matches either."""
    config = load(rule(resources='["^(?:/admin)$"]'))
    assert lint(config) == []


# --------------------------------------------------------------------------- cookie domains


def test_rule_outside_every_cookie_domain() -> None:
    """A rule whose hosts all lie outside the cookie domains never applies (400)."""
    findings = lint(load(rule("app.example.org")))
    assert codes(findings) == [(0, "outside-cookie-domain")]
    assert "rule applies to no protected host" in findings[0].message
    assert "answers 400" in findings[0].message


def test_some_domains_outside() -> None:
    """An entry outside the cookie domains is named even when others are inside."""
    findings = lint(load(rule('["app.example.com", "*.example.org"]')))
    assert codes(findings) == [(0, "outside-cookie-domain")]
    assert findings[0].message.startswith("domain '*.example.org' lies outside")


@pytest.mark.parametrize(
    "domain",
    ["*.com", "example.com", "*.example.com", "{user}.example.com", "a.b.example.com"],
)
def test_domains_overlapping_cookie_domains_are_fine(domain: str) -> None:
    """Wildcards above or inside a cookie domain, and hosts inside it, are not reported."""
    assert [f for f in lint(load(rule(domain))) if f.code == "outside-cookie-domain"] == []


# --------------------------------------------------------------------------- bypass order


def test_bypass_after_subject_rule() -> None:
    """An earlier rule with a subject sends anonymous visitors to log in before a bypass."""
    config = load(
        rule("*.example.com", "deny", subject='["group:banned"]')
        + rule("public.example.com", "bypass")
    )
    findings = lint(config)
    assert codes(findings) == [(1, "bypass-after-subject")]
    assert "anonymous requests never reach this bypass: rule 0" in findings[0].message


def test_bypass_after_broader_deny() -> None:
    """A bypass after a deny on a broader domain is flagged for review."""
    config = load(
        rule("*.example.com", "deny", methods='["POST"]') + rule("app.example.com", "bypass")
    )
    findings = lint(config)
    assert codes(findings) == [(1, "bypass-after-deny")]
    assert "broader deny of rule 0" in findings[0].message


def test_bypass_after_unrelated_deny_is_fine() -> None:
    """A deny on other hosts says nothing about a later bypass."""
    config = load(rule("admin.example.com", "deny") + rule("public.example.com", "bypass"))
    assert lint(config) == []


# --------------------------------------------------------------------------- config & files


def test_config_errors_become_findings(tmp_path: Path) -> None:
    """Every problem of an invalid config is an error finding with its rule and line."""
    text = HEAD + rule(policy="bypass", subject='["group:x"]') + rule(policy="nope")
    with pytest.raises(ConfigError) as info:
        parse_config(text, tomllib.loads(text), tmp_path / "authctl.toml")
    findings = config_findings(info.value)
    assert {f.rule for f in findings} == {0, 1}
    assert all(f.severity == "error" and f.code == "config" for f in findings)
    assert all(
        f.line is not None and f.message.startswith("access_control.rules[") for f in findings
    )
    assert any(f.fix for f in findings)


def test_runtime_files(tmp_path: Path) -> None:
    """Missing storage key, users file and SMTP password are warnings; present ones are not."""
    smtp = '[notifier.smtp]\nhost = "mail"\nsender = "a@example.com"\n'
    assert len(runtime_files(load(rule(), head=smtp + "\n" + HEAD, base=tmp_path))) == 2
    smtp += 'username = "u"\npassword_file = "smtp.pw"\n\n'
    config = load(rule(), head=smtp + HEAD, base=tmp_path)
    missing = runtime_files(config)
    assert [f.message.split(":")[0] for f in missing] == [
        "storage.encryption_key_file", "users.file", "notifier.smtp.password_file"
    ]  # fmt: skip
    assert all(f.severity == "warning" and f.rule is None for f in missing)
    for path in (config.storage.encryption_key_file, config.users.file, tmp_path / "smtp.pw"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert runtime_files(config) == []


def test_finding_as_dict() -> None:
    """The JSON form has exactly the documented keys."""
    finding = Finding("warning", 2, 14, "msg", "fix it", "shadowed")
    assert finding.as_dict() == {
        "severity": "warning", "code": "shadowed", "rule": 2, "line": 14, "message": "msg",
        "fix": "fix it",
    }  # fmt: skip


# --------------------------------------------------------------------------- named groups


@pytest.mark.parametrize(
    ("criterion", "pattern", "found"),
    [
        ("resources", "^/(?P<User>[a-z]+)/", None),
        ("resources", "^/(?P<Group>[a-z]+)/(?P<User>[a-z]+)$", None),
        ("resources", "^/(?P<user>[a-z]+)/", ("user", "(?P<User>…)")),
        ("resources", "^/(?P<GROUP>[a-z]+)/", ("GROUP", "(?P<Group>…)")),
        ("resources", "^/(?P<id>[0-9]+)$", ("id", "a plain group")),
        ("resources", "^/(?P<User>[a-z]+)/(?P<page>[a-z]+)$", ("page", "a plain group")),
        ("domain_regex", "^(?P<User>[a-z]+)\\.example\\.com$", None),
        ("domain_regex", "^(?P<username>[a-z]+)\\.example\\.com$", ("username", "a plain group")),
        ("domain_regex", "^(?P<user>[a-z]+)\\.example\\.com$", ("user", "(?P<User>…)")),
    ],
)
def test_named_groups_that_bind_nothing(
    criterion: str, pattern: str, found: tuple[str, str] | None
) -> None:
    """Only User and Group, spelt so, bind the subject (Authelia's names); any other named
    group is an ordinary group, so a rule meant for one user applies to everyone."""
    toml = pattern.replace("\\", "\\\\")
    config = load(
        "[[access_control.rules]]\n"
        + ('domain = "app.example.com"\n' if criterion == "resources" else "")
        + f'{criterion} = ["{toml}"]\npolicy = "one_factor"\n'
    )
    findings = [f for f in lint(config) if f.code == "named-group"]
    if found is None:
        assert findings == []
        return
    name, fix = found
    (finding,) = findings
    kind = "resource" if criterion == "resources" else "domain_regex"
    assert finding.message.startswith(f"{kind} {pattern!r}: the named group {name!r} binds")
    assert "applies whoever the user is" in finding.message
    assert fix in finding.fix
    assert (finding.rule, finding.severity) == (0, "warning")


def test_lower_case_user_group_on_a_bypass_is_flagged() -> None:
    """The config accepts a bypass with (?P<user>…) (it binds nothing); the linter says so."""
    findings = lint(load(rule(policy="bypass", resources='["^/(?P<user>[a-z]+)(/.*)?$"]')))
    assert codes(findings) == [(0, "named-group")]


def test_binding_resource_is_shadowed_by_a_broader_rule() -> None:
    """A rule with a binding resource is covered by an earlier rule for every user."""
    config = load(
        rule("app.example.com", "deny")
        + rule("app.example.com", "one_factor", resources='["^/(?P<User>[a-z]+)/"]')
    )
    assert codes(lint(config)) == [(1, "shadowed")]


def test_binding_resource_does_not_shadow_a_plain_one() -> None:
    """A binding resource matches only its user: a later plain rule is still reachable."""
    config = load(
        rule("app.example.com", "one_factor", resources='["^/(?P<User>[a-z]+)/"]')
        + rule("app.example.com", "deny", resources='["^/alice/"]')
        + rule("app.example.com", "deny")
    )
    assert codes(lint(config)) == []


def test_same_binding_resource_twice_is_a_duplicate() -> None:
    text = rule("app.example.com", "one_factor", resources='["^/(?P<Group>[a-z]+)/"]')
    assert codes(lint(load(text + text))) == [(1, "duplicate")]
