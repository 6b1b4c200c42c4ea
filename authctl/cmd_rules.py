"""``authctl rules …``: lint the access rules, explain one decision, and run policy tests.

Access rules fail silently — a shadowed rule or an unanchored bypass regex looks fine until
someone walks through it — so the CLI offers three views of them: ``rules check`` (the whole
config validated plus the linter of ``server.core.lint``), ``rules check --explain URL`` (what the
server would decide for one request, rule by rule) and ``rules test CASES.toml`` (a table of
expected decisions, for CI). The JSON shapes and exit codes are SPEC §4 interfaces.

Only click is imported at the top: ``server.*`` and rich load inside the commands, so
``authctl --help`` stays cheap.
"""

from __future__ import annotations

import os
import typing as t
from pathlib import Path

import click

from authctl.cli import ExitCode
from authctl.cli import State
from authctl.cli import pass_state
from authctl.errors import bad_parameter
from authctl.errors import reworded
from authctl.output import echo_json

if t.TYPE_CHECKING:
    from rich.console import Console

    from server.core.config import Config
    from server.core.lint import Finding
    from server.core.policy_tests import PolicyCase
    from server.core.rules import AccessControl
    from server.core.rules import AccessRequest
    from server.core.rules import Explanation

_STYLE = {"hit": "green", "maybe": "yellow", "miss": "dim"}


@click.group()
def rules() -> None:
    """Check, explain and test the access rules of the config."""


# --------------------------------------------------------------------------- rules check


@rules.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (see above).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on errors.")
@click.option(
    "--explain",
    "url",
    metavar="URL",
    help="Explain the decision for this request instead of linting.",
)
@click.option("--method", metavar="M", help="With --explain: the request method [GET].")
@click.option(
    "--user",
    metavar="U",
    help="With --explain: a signed-in user (groups from the users file); anonymous if omitted.",
)
@click.option(
    "--groups",
    metavar="a,b",
    help="With --explain and --user: these groups instead of the users file's.",
)
@click.option("--ip", metavar="IP", help="With --explain: the client address.")
@pass_state
def check(
    state: State,
    as_json: bool,
    strict: bool,
    url: str | None,
    method: str | None,
    user: str | None,
    groups: str | None,
    ip: str | None,
) -> None:
    """Validate the whole config and lint the access rules, or explain one decision.

    Lint: config errors are errors (exit 1); rules that can never match (shadowed,
    duplicated, outside every cookie domain, regexes that cannot match), catch-all rules
    that hide later ones, bypass regexes not anchored with '^', a bypass after a broader
    deny, named groups other than User and Group (they bind nobody), and files needed only
    at run time (storage key, users file) are warnings (exit 0, or 1 with --strict). An
    unreadable config file exits 3.

    \b
    --json prints:
      {"errors": N, "warnings": N,
       "findings": [{"severity": "error"|"warning", "code": "shadowed"|…,
                     "rule": INDEX|null, "line": LINE|null, "message": …, "fix": …}]}

    Explain (--explain URL): the policy the server would enforce and, for every rule, hit,
    miss or maybe with the criterion that decided (for the named groups User and Group of
    domain_regex and resources: what they captured and whom that binds). Without --user
    the request is anonymous, and the first rule that may match a signed-in user decides
    (the server then asks to log in). Rules after the deciding one are evaluated too, for
    information. For a host outside every cookie domain or a plain http:// URL the decision
    printed is the server's real answer, 400 before any rule runs (JSON: see "warnings").
    Exit 0.

    \b
    --explain … --json prints:
      {"policy": "two_factor", "rule": INDEX|null,
       "rules": [{"index": 0, "result": "hit"|"miss"|"maybe", "reason": "…"}],
       "has_subject": BOOL, "cookie_domain": "example.com"|null, "warnings": ["…"]}
    """
    if url is None:
        for name, value in (("--method", method), ("--user", user), ("--groups", groups)):
            if value is not None:
                raise click.UsageError(f"{name} has no meaning without --explain URL")
        if ip is not None:
            raise click.UsageError("--ip has no meaning without --explain URL")
        _lint(state, as_json, strict)
        return
    if strict:
        raise click.UsageError("--strict has no meaning with --explain")
    _explain(state, url, method, user, groups, ip, as_json)


def _lint(state: State, as_json: bool, strict: bool) -> None:
    from server.core.errors import ConfigError
    from server.core.lint import config_findings
    from server.core.lint import lint
    from server.core.lint import runtime_files

    path = state.config_path.expanduser()
    findings: list[Finding]
    rule_count = 0
    if not path.is_file() or not os.access(path, os.R_OK):
        state.config()  # raises the loader's "not found"/"permission denied" error: exit 3
    try:
        config = state.config()
    except ConfigError as exc:
        findings = config_findings(exc)
    else:
        findings = lint(config) + runtime_files(config)
        rule_count = len(config.access_control.rules)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    if as_json:
        echo_json(
            {
                "errors": errors,
                "warnings": warnings,
                "findings": [f.as_dict() for f in findings],
            }
        )
    else:
        _print_findings(findings, path, rule_count, errors, warnings)
    if errors or (strict and warnings):
        raise click.exceptions.Exit(ExitCode.CHECK_FAILED)


def _print_findings(
    findings: list[Finding], path: Path, rule_count: int, errors: int, warnings: int
) -> None:
    from rich.text import Text

    from authctl.output import console

    out = console()
    for f in findings:
        colour = "red" if f.severity == "error" else "yellow"
        where = "config" if f.rule is None else f"rule {f.rule}"
        if f.line is not None:
            where += f" (line {f.line})"
        out.print(
            Text.assemble((f"{f.severity:<8}", f"bold {colour}"), (where, "bold"), ": ", f.message)
        )
        if f.fix:
            out.print(Text.assemble(" " * 8, ("fix: ", "dim"), f.fix))
    if not findings:
        out.print(Text(f"{path}: no problems found ({rule_count} rules)", style="green"))
    else:
        out.print(
            Text(
                f"{path}: {errors} error{'s' * (errors != 1)}, "
                f"{warnings} warning{'s' * (warnings != 1)}",
                style="bold",
            )
        )


# --------------------------------------------------------------------------- explain


def _explain(
    state: State,
    url: str,
    method: str | None,
    user: str | None,
    groups: str | None,
    ip: str | None,
    as_json: bool,
) -> None:
    from server.core.errors import InvalidTargetError
    from server.core.policy_tests import RequestError
    from server.core.policy_tests import UnknownUserError
    from server.core.policy_tests import Users
    from server.core.policy_tests import build_request
    from server.core.policy_tests import parse_groups
    from server.core.policy_tests import parse_ip
    from server.core.policy_tests import parse_user
    from server.core.policy_tests import refusals

    config = state.config()
    if groups is not None and user is None:
        raise click.UsageError("--groups needs --user (an anonymous request has no groups)")
    with (
        bad_parameter("'{0.field}'", RequestError, template="{0.message}"),
        reworded("{0.field}: {0.message}; {0.fix}", UnknownUserError),
    ):
        request = build_request(
            url,
            method or "GET",
            parse_user(user, "--user") if user is not None else None,
            parse_groups([g.strip() for g in groups.split(",") if g.strip()], "--groups")
            if groups is not None
            else None,
            parse_ip(ip, "--ip") if ip is not None else None,
            Users(config.users.file),
        )
    with bad_parameter(
        "'--explain'",
        InvalidTargetError,
        template="the server refuses this request (400; auth-request 403): {}",
    ):
        explanation = _engine(config).explain(request)
    notes = refusals(config, url, request.host)
    if as_json:
        echo_json(_explain_json(explanation, config, request, notes))
        return
    from authctl.output import console

    out = console()
    _print_request(out, url, request)
    _print_explanation(out, explanation, request, refused=bool(notes))
    for note in notes:
        out.print(f"[bold yellow]warning[/]: {_escape(note)}")


def _engine(config: Config) -> AccessControl:
    from server.core.rules import AccessControl

    return AccessControl(config.access_control)


def _explain_json(
    explanation: Explanation, config: Config, request: AccessRequest, notes: list[str]
) -> dict[str, object]:
    cookie = config.session.cookie_for(request.host)
    return {
        "policy": explanation.policy,
        "rule": explanation.rule,
        "rules": [
            {"index": r.index, "result": r.result, "reason": r.reason} for r in explanation.rules
        ],
        "has_subject": explanation.has_subject,
        "cookie_domain": cookie.domain if cookie is not None else None,
        "warnings": notes,
    }


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _who(request: AccessRequest) -> str:
    if request.user is None:
        who = "anonymous"
    else:
        groups = ", ".join(request.groups) if request.groups else "no groups"
        who = f"user {request.user} ({groups})"
    if request.ip is not None:
        who += f" from {request.ip}"
    return who


def _print_request(out: Console, url: str, request: AccessRequest) -> None:
    out.print(f"[bold]{request.method}[/] {_escape(url)} as {_escape(_who(request))}")


def _print_explanation(
    out: Console, explanation: Explanation, request: AccessRequest, *, refused: bool = False
) -> None:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("result")
    table.add_column("policy")
    table.add_column("reason", overflow="fold")
    table.add_column("line", justify="right")
    for r in explanation.rules:
        decisive = r.index == explanation.rule
        style = "bold" if decisive else ""
        table.add_row(
            str(r.index),
            f"[{_STYLE[r.result]}]{r.result}[/]" + (" ←" if decisive else ""),
            r.policy,
            _escape(r.reason),
            str(r.line) if r.line is not None else "",
            style=style,
        )
    if explanation.rules:
        out.print(table)
    out.print(_escape(_refused_sentence() if refused else _sentence(explanation, request)))


def _refused_sentence() -> str:
    """The answer for a request the server refuses before any rule runs (see the warnings)."""
    from server.core.policy_tests import REFUSED

    return f"Decision: none; the server answers {REFUSED} before any rule runs."


def _sentence(explanation: Explanation, request: AccessRequest) -> str:
    """One sentence naming the decision and what the server does with it."""
    from server.core.policy import Policy

    policy = explanation.policy
    if explanation.rule is None:
        return f"No rule matches: default_policy {policy!r} applies, so {policy.consequence}."
    rule = next(r for r in explanation.rules if r.index == explanation.rule)
    where = f"rule {rule.index}" + (f" (line {rule.line})" if rule.line is not None else "")
    if request.user is None and explanation.has_subject and policy != Policy.BYPASS:
        return (
            f"Decision: {where} may apply once the visitor signs in (policy {policy!r}): the "
            "server sends anonymous visitors to log in, then decides again for the user."
        )
    return f"Decision: {where} applies, policy {policy!r}: {policy.consequence}."


# --------------------------------------------------------------------------- rules test


@rules.command("test")
@click.argument("cases_file", metavar="CASES.toml", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (see above).")
@pass_state
def test(state: State, cases_file: Path, as_json: bool) -> None:
    """Run policy test cases against the config: keep your policy under test in your own CI.

    Each case is a request and the policy `rules check --explain` must report for it. Exit
    0 when all pass, 1 when any fails (each failure is printed with its explain table), 3
    when the config, the users file or CASES.toml cannot be read or is malformed (the
    message names the case and key).

    \b
    CASES.toml:
      [[cases]]
      url = "https://app.example.com/admin"
      method = "GET"            # default GET
      user = "alice"            # omit for an anonymous request
      groups = ["admins"]       # optional; replaces the users file's groups
      ip = "10.0.0.8"           # optional
      expect = "two_factor"     # bypass | one_factor | two_factor | deny
      name = "admins need 2FA"  # optional, shown in the output

    \b
    --json prints:
      {"passed": N, "failed": N,
       "failures": [{"index": 0, "expect": "deny", "got": "two_factor", "rule": INDEX|null}]}
    """
    from server.core.errors import InvalidTargetError
    from server.core.policy_tests import Users
    from server.core.policy_tests import load_cases

    config = state.config()
    cases = load_cases(cases_file, Users(config.users.file))
    engine = _engine(config)
    failures: list[tuple[PolicyCase, Explanation]] = []
    passed: list[PolicyCase] = []

    for case in cases:
        title = _case_title(case).replace("{", "{{").replace("}", "}}")
        with reworded(
            title + ": the server refuses this request (400; auth-request 403) before any "
            "policy applies: {}; change the case's url",
            InvalidTargetError,
        ):
            explanation = engine.explain(case.request)
        if explanation.policy == case.expect:
            passed.append(case)
        else:
            failures.append((case, explanation))
    if as_json:
        echo_json(
            {
                "passed": len(passed),
                "failed": len(failures),
                "failures": [
                    {
                        "index": case.index,
                        "expect": case.expect,
                        "got": explanation.policy,
                        "rule": explanation.rule,
                    }
                    for case, explanation in failures
                ],
            }
        )
    else:
        _print_results(cases_file, passed, failures)
    if failures:
        raise click.exceptions.Exit(ExitCode.CHECK_FAILED)


def _case_title(case: PolicyCase) -> str:
    line = f" (line {case.line})" if case.line is not None else ""
    name = f" {case.name!r}" if case.name else ""
    return (
        f"case {case.index}{line}{name}: {case.request.method} {case.url} as {_who(case.request)}"
    )


def _print_results(
    path: Path, passed: list[PolicyCase], failures: list[tuple[PolicyCase, Explanation]]
) -> None:
    from authctl.output import console

    out = console()
    for case in passed:
        out.print(f"[green]pass[/] {_escape(_case_title(case))}: {case.expect}")
    for case, explanation in failures:
        rule = "default_policy" if explanation.rule is None else f"rule {explanation.rule}"
        out.print(
            f"[bold red]FAIL[/] {_escape(_case_title(case))}: expected {case.expect!r}, "
            f"got {explanation.policy!r} ({rule})"
        )
        _print_explanation(out, explanation, case.request)
        out.print()
    colour = "red" if failures else "green"
    out.print(f"[bold {colour}]{path}: {len(passed)} passed, {len(failures)} failed[/]")
