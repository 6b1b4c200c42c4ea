"""Tests for ``authctl rules check``, ``rules check --explain`` and ``rules test`` (SPEC §4).

The JSON shapes and exit codes are interfaces scripts rely on, so they are asserted exactly.
Config and case files are written into ``tmp_path``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import typing as t
from collections.abc import Callable
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from click.testing import CliRunner
from click.testing import Result

from authctl.cli import cli
from tests.conftest import BASE_CONFIG
from tests.conftest import ROOT

#: BASE_CONFIG's rules: 0 public.example.com bypass; 1 app.example.com ^/admin… group:admins
#: two_factor; 2 *.example.com one_factor; default deny.
SHADOWED = BASE_CONFIG.replace(
    '[[access_control.rules]]\ndomain = ["public.example.com"]',
    '[[access_control.rules]]\ndomain = "*.example.com"\npolicy = "bypass"\n\n'
    '[[access_control.rules]]\ndomain = ["public.example.com"]',
)


@pytest.fixture
def users_file(tmp_path: Path) -> Path:
    """A users file beside the config: alice (admins, dev) and bob (dev)."""
    digest = PasswordHasher(memory_cost=8, time_cost=1, parallelism=1).hash("pw")
    path = tmp_path / "users.toml"
    path.write_text(
        f'[users.alice]\npassword = "{digest}"\ngroups = ["admins", "dev"]\n\n'
        f'[users.bob]\npassword = "{digest}"\ngroups = ["dev"]\n',
        encoding="utf-8",
    )
    path.chmod(0o600)
    return path


@pytest.fixture
def complete(config_file: Path, users_file: Path) -> Path:
    """The base config with every file it needs at run time, so it lints clean."""
    key = config_file.parent / "secrets" / "storage.key"
    key.parent.mkdir()
    key.write_text("k" * 64)
    return config_file


def rule_lines(text: str) -> list[int]:
    """The 1-based lines of the ``[[access_control.rules]]`` headers in ``text``."""
    lines = text.splitlines()
    return [n for n, line in enumerate(lines, 1) if line.strip() == "[[access_control.rules]]"]


BASE_LINES = rule_lines(BASE_CONFIG)


def run(runner: CliRunner, config: Path, *args: str) -> Result:
    """Invoke ``authctl --config CONFIG rules ARGS``."""
    return runner.invoke(cli, ["--config", str(config), "rules", *args])


def as_json(result: Result) -> t.Any:
    """The command's stdout, parsed."""
    return json.loads(result.stdout)


# --------------------------------------------------------------------------- rules check


def test_clean_config_exits_0(runner: CliRunner, complete: Path) -> None:
    """The example config with its files present lints without findings."""
    result = run(runner, complete, "check")
    assert result.exit_code == 0, result.output
    assert "no problems found (3 rules)" in result.output
    result = run(runner, complete, "check", "--json", "--strict")
    assert result.exit_code == 0, result.output
    assert as_json(result) == {"errors": 0, "warnings": 0, "findings": []}


def test_missing_runtime_files_are_warnings(runner: CliRunner, config_file: Path) -> None:
    """A missing storage key or users file warns (exit 0), and fails only with --strict."""
    result = run(runner, config_file, "check")
    assert result.exit_code == 0, result.output
    assert "storage.encryption_key_file" in result.output
    assert "0 errors, 2 warnings" in result.output
    assert run(runner, config_file, "check", "--strict").exit_code == 1


def test_shadowed_rule_names_its_shadow(
    runner: CliRunner, write_config: Callable[[str], Path], users_file: Path
) -> None:
    """A rule hidden by an earlier one is reported with the shadowing rule and both lines."""
    path = write_config(SHADOWED)
    lines = rule_lines(SHADOWED)
    result = run(runner, path, "check")
    assert result.exit_code == 0, result.output
    expected = (
        f"rule 1 (line {lines[1]}): rule can never match: rule 0 (line {lines[0]}), policy 'bypass'"
    )
    assert expected in " ".join(result.output.split())
    assert "fix: move it above rule 0" in result.output
    assert run(runner, path, "check", "--strict").exit_code == 1
    data = as_json(run(runner, path, "check", "--json"))
    assert data["errors"] == 0
    shadowed = [f for f in data["findings"] if f["code"] in ("shadowed", "duplicate")]
    assert [(f["rule"], f["line"]) for f in shadowed] == list(
        zip([1, 2, 3], lines[1:], strict=True)
    )
    assert set(shadowed[0]) == {"severity", "code", "rule", "line", "message", "fix"}


def test_broken_config_is_a_failed_check(
    runner: CliRunner, write_config: Callable[[str], Path]
) -> None:
    """An invalid config is reported as errors with rule index and line, exit 1."""
    path = write_config(BASE_CONFIG.replace('policy = "one_factor"', 'polcy = "one_factor"'))
    result = run(runner, path, "check")
    assert result.exit_code == 1, result.output
    assert "error" in result.output
    assert "rule 2 (line" in result.output
    data = as_json(run(runner, path, "check", "--json"))
    assert data["errors"] >= 1
    assert {f["rule"] for f in data["findings"]} == {2}
    assert all(f["severity"] == "error" for f in data["findings"])


def test_toml_syntax_error_is_a_failed_check(
    runner: CliRunner, write_config: Callable[[str], Path]
) -> None:
    """Even a TOML syntax error is a finding (with its line), not a crash."""
    path = write_config(BASE_CONFIG + "\n[access_control\n")
    data = as_json(run(runner, path, "check", "--json"))
    assert data["errors"] == 1
    assert data["findings"][0]["line"] is not None
    assert run(runner, path, "check").exit_code == 1


def test_missing_config_exits_3(runner: CliRunner, tmp_path: Path) -> None:
    """A config file that is not there cannot be checked: exit 3."""
    result = run(runner, tmp_path / "nope.toml", "check")
    assert result.exit_code == 3, result.output
    assert "not found" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--method", "GET"],
        ["check", "--user", "alice"],
        ["check", "--groups", "a"],
        ["check", "--ip", "10.0.0.1"],
        ["check", "--explain", "https://app.example.com/", "--strict"],
        ["check", "--explain", "https://app.example.com/", "--groups", "a"],
        ["check", "--explain", "not a url"],
        ["check", "--explain", "https://app.example.com/", "--ip", "10.0.0.300"],
        ["check", "--explain", "https://app.example.com/", "--user", "Bad Name"],
        ["check", "--explain", "https://app.example.com/", "--method", "G E T"],
        ["check", "--explain", "https://app.example.com/", "--user", "a", "--groups", "a b"],
    ],
    ids=["method", "user", "groups", "ip", "strict", "groups-anon", "url", "bad-ip", "bad-user",
         "bad-method", "bad-group"],
)  # fmt: skip
def test_usage_errors_exit_2(runner: CliRunner, config_file: Path, args: list[str]) -> None:
    """Options that make no sense together, or bad values, are usage errors."""
    result = run(runner, config_file, *args)
    assert result.exit_code == 2, result.output


# --------------------------------------------------------------------------- explain


def test_explain_json_shape(runner: CliRunner, config_file: Path) -> None:
    """``--explain --json`` prints SPEC's keys, one {index, result, reason} per rule."""
    result = run(
        runner, config_file, "check", "--explain", "https://app.example.com/admin", "--json"
    )
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert {"policy", "rule", "rules"} <= set(data)
    assert data["policy"] == "two_factor"
    assert data["rule"] == 1
    assert [set(r) for r in data["rules"]] == [{"index", "result", "reason"}] * 3
    assert [(r["index"], r["result"]) for r in data["rules"]] == [
        (0, "miss"), (1, "maybe"), (2, "hit")
    ]  # fmt: skip
    assert data["rules"][1]["reason"] == "subject [group:admins] needs a signed-in user"
    assert data["has_subject"] is True
    assert data["cookie_domain"] == "example.com"
    assert data["warnings"] == []


@pytest.mark.parametrize(
    ("args", "policy", "rule"),
    [
        (["--user", "alice"], "two_factor", 1),
        (["--user", "ALICE"], "two_factor", 1),
        (["--user", "bob"], "one_factor", 2),
        (["--user", "bob", "--groups", "admins"], "two_factor", 1),
        (["--user", "alice", "--groups", ""], "one_factor", 2),
        (["--user", "carol", "--groups", "admins,dev"], "two_factor", 1),
        (["--method", "post"], "two_factor", 1),
    ],
    ids=["alice", "canonical-name", "bob", "groups-replace", "no-groups", "unknown-with-groups",
         "method"],
)  # fmt: skip
def test_explain_users_and_groups(
    runner: CliRunner, config_file: Path, users_file: Path, args: list[str], policy: str, rule: int
) -> None:
    """--user takes groups from the users file; --groups replaces them."""
    result = run(
        runner, config_file, "check", "--explain", "https://app.example.com/admin", "--json", *args
    )
    assert result.exit_code == 0, result.output
    data = as_json(result)
    assert (data["policy"], data["rule"]) == (policy, rule)


def test_explain_unknown_user_exits_3(
    runner: CliRunner, config_file: Path, users_file: Path
) -> None:
    """An unknown --user without --groups is a data error with a clear message."""
    result = run(
        runner, config_file, "check", "--explain", "https://a.example.com/", "--user", "zed"
    )
    assert result.exit_code == 3, result.output
    assert "user 'zed' is not in the users file" in result.output
    assert "--groups" in result.output


def test_explain_without_users_file_exits_3(runner: CliRunner, config_file: Path) -> None:
    """--user needs the users file for its groups; without one, exit 3."""
    result = run(
        runner, config_file, "check", "--explain", "https://a.example.com/", "--user", "al"
    )
    assert result.exit_code == 3, result.output


def test_explain_outside_cookie_domain(runner: CliRunner, config_file: Path) -> None:
    """A host outside every cookie domain is evaluated, flagged, and the decision printed is
    the server's real answer: 400 before any rule runs (not the default policy's 403)."""
    result = run(runner, config_file, "check", "--explain", "https://other.org/", "--json")
    data = as_json(result)
    assert (data["policy"], data["rule"], data["cookie_domain"]) == ("deny", None, None)
    assert "would answer 400" in data["warnings"][0]
    result = run(runner, config_file, "check", "--explain", "http://app.example.com/")
    assert "refuses plain http://" in result.output
    result = run(runner, config_file, "check", "--explain", "https://other.org/x")
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "would answer 400" in text
    assert "Decision: none; the server answers 400 Bad Request" in text
    assert "default_policy 'deny' applies" not in text
    assert "403 Forbidden" not in text
    result = run(runner, config_file, "check", "--explain", "http://app.example.com/x")
    assert "the server answers 400 Bad Request" in " ".join(result.output.split())
    result = run(runner, config_file, "check", "--explain", "https://example.com/x")
    assert "No rule matches: default_policy 'deny' applies" in result.output


def test_explain_human_output(runner: CliRunner, config_file: Path, users_file: Path) -> None:
    """The table lists every rule with result, policy, reason and line, then the decision."""
    result = run(runner, config_file, "check", "--explain", "https://APP.example.com/admin?x=1")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "GET https://APP.example.com/admin?x=1 as anonymous" in text
    for header in ("result", "policy", "reason", "line"):
        assert header in text
    for result_word in ("maybe", "miss", "hit"):
        assert result_word in text
    assert f"Decision: rule 1 (line {BASE_LINES[1]}) may apply once the visitor signs in" in text
    result = run(
        runner, config_file, "check", "--explain", "https://app.example.com/", "--user", "bob",
        "--ip", "10.0.0.7",
    )  # fmt: skip
    text = " ".join(result.output.split())
    assert "as user bob (dev) from 10.0.0.7" in text
    assert f"Decision: rule 2 (line {BASE_LINES[2]}) applies, policy 'one_factor'" in text
    result = run(runner, config_file, "check", "--explain", "https://public.example.com/")
    assert "passes without login" in result.output


def test_explain_without_rules(runner: CliRunner, write_config: Callable[[str], Path]) -> None:
    """With no rules there is no table, only the default decision."""
    text = BASE_CONFIG.split("[[access_control.rules]]")[0].replace('"deny"', '"two_factor"')
    result = run(runner, write_config(text), "check", "--explain", "https://a.example.com/")
    assert result.exit_code == 0, result.output
    assert "default_policy 'two_factor' applies" in result.output


# --------------------------------------------------------------------------- rules test

PASSING = """\
[[cases]]
url = "https://public.example.com/"
expect = "bypass"

[[cases]]
url = "https://app.example.com/admin"
expect = "two_factor"

[[cases]]
url = "https://app.example.com/admin"
user = "alice"
ip = "10.0.0.8"
expect = "two_factor"

[[cases]]
url = "https://app.example.com/admin"
method = "POST"
user = "bob"
groups = ["dev"]
expect = "one_factor"
name = "bob is no admin"
"""

FAILING = (
    PASSING
    + """
[[cases]]
url = "https://app.example.com/admin"
user = "bob"
expect = "deny"

[[cases]]
url = "https://example.com/"
expect = "bypass"
"""
)


def cases(tmp_path: Path, text: str) -> Path:
    """Write a cases file and return its path."""
    path = tmp_path / "cases.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_rules_test_passes(
    runner: CliRunner, config_file: Path, users_file: Path, tmp_path: Path
) -> None:
    """All cases passing exits 0 and says so."""
    result = run(runner, config_file, "test", str(cases(tmp_path, PASSING)))
    assert result.exit_code == 0, result.output
    assert "4 passed, 0 failed" in result.output
    assert "'bob is no admin'" in result.output
    result = run(runner, config_file, "test", str(cases(tmp_path, PASSING)), "--json")
    assert as_json(result) == {"passed": 4, "failed": 0, "failures": []}


def test_rules_test_failures(
    runner: CliRunner, config_file: Path, users_file: Path, tmp_path: Path
) -> None:
    """Failing cases exit 1, each printed with its explain table; JSON lists them."""
    path = cases(tmp_path, FAILING)
    result = run(runner, config_file, "test", str(path))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    line = [n for n, x in enumerate(FAILING.splitlines(), 1) if x == "[[cases]]"][4]
    assert (
        f"FAIL case 4 (line {line}): GET https://app.example.com/admin as user bob (dev): " in text
    )
    assert "expected 'deny', got 'one_factor' (rule 2)" in text
    assert "got 'deny' (default_policy)" in text
    assert text.count("reason") == 2
    assert "4 passed, 2 failed" in text
    result = run(runner, config_file, "test", str(path), "--json")
    assert result.exit_code == 1
    assert as_json(result) == {
        "passed": 4,
        "failed": 2,
        "failures": [
            {"index": 4, "expect": "deny", "got": "one_factor", "rule": 2},
            {"index": 5, "expect": "bypass", "got": "deny", "rule": None},
        ],
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[cases]]\nexpect = 'deny'\n", "cases[0]: url is required"),
        ("[[cases]]\nurl = 'https://a.example.com/'\n", "cases[0]: expect is required"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'allow'\n", "cases[0].expect:"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\nip = 'x'\n",
         "cases[0].ip: 'x' is not an IP address"),
        ("[[cases]]\nurl = 'nope'\nexpect = 'deny'\n", "cases[0].url:"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\nmethod = 'A B'\n",
         "cases[0].method:"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\nuser = 'x y'\n",
         "cases[0].user:"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\nuser = 'a'\ngroups = 'x'\n",
         "cases[0].groups: expected a list of strings"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\nuser = 'a'\n"
         "groups = ['a b']\n",
         "cases[0].groups:"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\ngroups = ['a']\n",
         "cases[0].groups: groups needs user"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\nuser = 'zed'\n",
         "cases[0].user: user 'zed' is not in the users file"),
        ("[[cases]]\nurl = 1\nexpect = 'deny'\n",
         "cases[0].url: expected a string, got an integer"),
        ("[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'deny'\nxpect = 1\n",
         "cases[0].xpect: unknown key"),
        ("cases = [1]\n", "cases[0]: expected a table"),
        ("[[case]]\nurl = 'x'\n", "case: unknown key"),
        ("# nothing\n", "no [[cases]]"),
        ("[[cases]\n", "invalid TOML"),
    ],
    ids=["no-url", "no-expect", "bad-expect", "bad-ip", "bad-url", "bad-method", "bad-user",
         "groups-not-list", "bad-group", "groups-anon", "unknown-user", "url-not-string",
         "unknown-key", "not-a-table", "unknown-top-key", "empty", "syntax"],
)  # fmt: skip
def test_malformed_cases_exit_3(
    runner: CliRunner,
    config_file: Path,
    users_file: Path,
    tmp_path: Path,
    text: str,
    message: str,
) -> None:
    """A malformed cases file is a data error naming the case and the key."""
    result = run(runner, config_file, "test", str(cases(tmp_path, text)))
    assert result.exit_code == 3, result.output
    assert message in " ".join(result.output.split())


def test_malformed_case_names_its_line(
    runner: CliRunner, config_file: Path, users_file: Path, tmp_path: Path
) -> None:
    """The error for a bad key carries the line of that key in the cases file."""
    text = PASSING + "\n[[cases]]\nurl = 'https://a.example.com/'\nexpect = 'x'\n"
    path = cases(tmp_path, text)
    result = run(runner, config_file, "test", str(path))
    assert result.exit_code == 3
    last = len(text.splitlines())
    assert f"{path}:{last}:1: cases[4].expect:" in " ".join(result.output.split())


def test_cases_file_missing_or_unreadable(
    runner: CliRunner, config_file: Path, tmp_path: Path
) -> None:
    """A cases file that cannot be read is a data error."""
    result = run(runner, config_file, "test", str(tmp_path / "none.toml"))
    assert result.exit_code == 3
    assert "file not found" in result.output
    result = run(runner, config_file, "test", str(tmp_path))
    assert result.exit_code == 3
    assert "is a directory, not a file" in result.output


def test_rules_test_needs_a_valid_config(
    runner: CliRunner, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    """Policy tests against a broken config cannot run: exit 3."""
    path = write_config(BASE_CONFIG.replace('"deny"', '"nope"'))
    result = run(runner, path, "test", str(cases(tmp_path, PASSING)))
    assert result.exit_code == 3


def test_help_texts(runner: CliRunner, config_file: Path) -> None:
    """The help documents the JSON shapes and says how to use rules test in CI."""
    result = run(runner, config_file, "test", "--help")
    assert result.exit_code == 0
    assert "keep your policy under test in your own CI" in " ".join(result.output.split())
    assert '"failures"' in result.output
    result = run(runner, config_file, "check", "--help")
    assert '"findings"' in result.output
    assert '"rules"' in result.output


def test_module_imports_only_click() -> None:
    """Importing the command module does not import rich or the server core."""
    code = (
        "import sys, authctl.cmd_rules; "
        "bad = [m for m in ('rich', 'server.core.rules', 'server.core.lint', 'server.core.config') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


QUERY_RULE = BASE_CONFIG.replace(
    '[[access_control.rules]]\ndomain = ["public.example.com"]',
    '[[access_control.rules]]\ndomain = "app.example.com"\n'
    'query = [[{ key = "debug", operator = "present" }]]\npolicy = "deny"\n\n'
    '[[access_control.rules]]\ndomain = ["public.example.com"]',
)


def test_explain_ambiguous_query_says_refused(
    runner: CliRunner, write_config: Callable[[str], Path]
) -> None:
    """A query the server refuses (';' or a malformed '%') is reported as a 400, not a policy."""
    path = write_config(QUERY_RULE)
    result = run(runner, path, "check", "--explain", "https://app.example.com/x?a=1;debug=1")
    assert result.exit_code == 2, result.output
    assert "refuses this request (400" in " ".join(result.output.split())
    result = run(runner, path, "check", "--explain", "https://app.example.com/x?debug=1")
    assert result.exit_code == 0, result.output


def test_rules_test_ambiguous_query_names_the_case(
    runner: CliRunner, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    path = write_config(QUERY_RULE)
    case_file = cases(
        tmp_path, '[[cases]]\nurl = "https://app.example.com/?debug=%zz"\nexpect = "deny"\n'
    )
    result = run(runner, path, "test", str(case_file))
    assert result.exit_code == 3, result.output
    assert "case 0" in result.output
    assert "refuses this request" in " ".join(result.output.split())


def test_rules_test_refused_case_keeps_braces_in_its_name(
    runner: CliRunner, write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    """The case's name goes into the message as it is (braces are not a format field)."""
    path = write_config(QUERY_RULE)
    case_file = cases(
        tmp_path,
        '[[cases]]\nurl = "https://app.example.com/?debug=%zz"\nexpect = "deny"\n'
        'name = "odd {0} {name}"\n',
    )
    result = run(runner, path, "test", str(case_file))
    assert result.exit_code == 3, result.output
    assert result.stderr.startswith("Error: case 0 (line 1) 'odd {0} {name}': GET https://")
    assert result.stderr.endswith("; change the case's url\n")


def test_bad_cases_file_reports_every_problem(
    runner: CliRunner, config_file: Path, users_file: Path, tmp_path: Path
) -> None:
    """Three different mistakes in CASES.toml: all three reported, each with line and fix,
    exit 3 (the file is read like the config, not stopped at the first problem)."""
    text = (
        "[[cases]]\n"  # 1
        'url = "https://app.example.com/"\n'  # 2
        'expect = "two_factors"\n'  # 3: not a policy
        "\n"
        "[[cases]]\n"  # 5
        'url = "https://app.example.com/"\n'
        'expect = "deny"\n'
        'ip = "10.0.0.300"\n'  # 8: not an IP
        "\n"
        "[[cases]]\n"  # 10
        'url = "https://app.example.com/"\n'
        'expect = "deny"\n'
        "usr = 'alice'\n"  # 13: unknown key
    )
    path = cases(tmp_path, text)
    result = run(runner, config_file, "test", str(path))
    assert result.exit_code == 3, result.output
    lines = [line for line in result.output.splitlines() if str(path) in line]
    assert len(lines) == 3, result.output
    expected = [
        (3, "cases[0].expect: 'two_factors' is not one of", "did you mean 'two_factor'?"),
        (8, "cases[1].ip: '10.0.0.300' is not an IP address", 'write "10.0.0.8"'),
        (13, "cases[2].usr: unknown key 'usr'", "did you mean 'user'?"),
    ]
    for line, (number, message, fix) in zip(lines, expected, strict=True):
        assert f"{path}:{number}:1: {message}" in line
        assert f"(fix: {fix}" in line


# --------------------------------------------------------------------------- named groups

#: BASE_CONFIG with a first rule whose resources bind to the user and the group (SPEC §7.5).
NAMED = BASE_CONFIG.replace(
    '[[access_control.rules]]\ndomain = ["public.example.com"]',
    '[[access_control.rules]]\ndomain = "home.example.com"\n'
    "resources = ['^/(?P<User>[a-zA-Z]+)/personal(/.*)?$', '^/(?P<Group>[a-z]+)/team(/.*)?$']\n"
    'policy = "one_factor"\n\n'
    '[[access_control.rules]]\ndomain = "home.example.com"\npolicy = "deny"\n\n'
    '[[access_control.rules]]\ndomain = ["public.example.com"]',
)
PERSONAL = "'^/(?P<User>[a-zA-Z]+)/personal(/.*)?$'"


@pytest.mark.parametrize(
    ("url", "user", "result", "reason"),
    [
        ("https://home.example.com/Alice/personal", "alice", "hit",
         f"matches {PERSONAL} with User='Alice' for user 'alice'"),
        ("https://home.example.com/alice/personal", "bob", "miss",
         f"matches {PERSONAL} with User='alice' but not for user 'bob' (groups: dev)"),
        ("https://home.example.com/alice/personal", None, "maybe",
         f"matches {PERSONAL} with User='alice' only for some signed-in users"),
        ("https://home.example.com/dev/team/x", "bob", "hit",
         "with Group='dev' for user 'bob'"),
    ],
)  # fmt: skip
def test_explain_shows_named_group_binding(
    runner: CliRunner,
    write_config: Callable[[str], Path],
    users_file: Path,
    url: str,
    user: str | None,
    result: str,
    reason: str,
) -> None:
    """--explain --json names what User/Group captured and whom that binds."""
    args = ["check", "--explain", url, "--json"] + (["--user", user] if user else [])
    out = run(runner, write_config(NAMED), *args)
    assert out.exit_code == 0, out.output
    data = as_json(out)
    first = data["rules"][0]
    assert first["result"] == result
    assert first["reason"].endswith(reason), first["reason"]
    assert data["has_subject"] is (result != "miss")


def test_explain_named_group_human_output(
    runner: CliRunner, write_config: Callable[[str], Path], users_file: Path
) -> None:
    out = run(
        runner, write_config(NAMED), "check", "--explain", "https://home.example.com/bob/personal"
    )
    text = " ".join(out.output.split())
    assert "User='bob'" in text  # the table wraps the reason: see the JSON test
    assert "may apply once the visitor signs in (policy 'one_factor')" in text


NAMED_CASES = """\
[[cases]]
url = "https://home.example.com/alice/personal"
expect = "one_factor"
name = "anonymous must sign in first"

[[cases]]
url = "https://home.example.com/alice/personal/notes"
user = "alice"
expect = "one_factor"

[[cases]]
url = "https://home.example.com/ALICE/personal"
user = "alice"
expect = "one_factor"
name = "names compare case-insensitively"

[[cases]]
url = "https://home.example.com/alice/personal"
user = "bob"
expect = "deny"

[[cases]]
url = "https://home.example.com/admins/team"
user = "alice"
expect = "one_factor"

[[cases]]
url = "https://home.example.com/admins/team"
user = "bob"
expect = "deny"

[[cases]]
url = "https://home.example.com/admins/team"
user = "bob"
groups = ["admins"]
expect = "one_factor"
"""


def test_rules_test_with_named_groups(
    runner: CliRunner, write_config: Callable[[str], Path], users_file: Path, tmp_path: Path
) -> None:
    """Policy tests decide binding resources with the users file's (or the case's) groups."""
    config = write_config(NAMED)
    result = run(runner, config, "test", str(cases(tmp_path, NAMED_CASES)), "--json")
    assert as_json(result) == {"passed": 7, "failed": 0, "failures": []}, result.output
    wrong = NAMED_CASES.replace('groups = ["admins"]\nexpect = "one_factor"', 'expect = "bypass"')
    result = run(runner, config, "test", str(cases(tmp_path, wrong)))
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "expected 'bypass', got 'deny' (rule 1)" in text
    assert "Group='admins'" in text  # the table wraps the reason: see the JSON test


def test_check_warns_about_a_misspelt_named_group(
    runner: CliRunner, write_config: Callable[[str], Path], users_file: Path
) -> None:
    """(?P<user>…) binds nobody: rules check says so, and --strict fails on it."""
    config = write_config(NAMED.replace("(?P<User>", "(?P<user>"))
    result = run(runner, config, "check", "--json")
    found = [f for f in as_json(result)["findings"] if f["code"] == "named-group"]
    assert len(found) == 1
    assert found[0]["rule"] == 0
    assert "(?P<User>…)" in found[0]["fix"]
    assert run(runner, config, "check", "--strict").exit_code == 1
