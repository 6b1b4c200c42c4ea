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

import ipaddress
import os
import re
import typing as t
from dataclasses import dataclass
from pathlib import Path

import click

from authctl.cli import DataError
from authctl.cli import ExitCode
from authctl.cli import State
from authctl.cli import pass_state
from authctl.output import echo_json

if t.TYPE_CHECKING:
    from rich.console import Console

    from server.core.config import Config
    from server.core.lint import Finding
    from server.core.rules import AccessControl
    from server.core.rules import AccessRequest
    from server.core.rules import Explanation
    from server.core.users import UserDatabase

POLICIES = ("bypass", "one_factor", "two_factor", "deny")
_METHOD = re.compile(r"[A-Za-z]{1,32}")
_CASE_KEYS = ("url", "method", "user", "groups", "ip", "expect", "name")
_CONSEQUENCE = {
    "bypass": "the request passes without login",
    "one_factor": "a password login is needed",
    "two_factor": "a password and a one-time code are needed",
    "deny": "the server answers 403 Forbidden",
}
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
    deny, and files needed only at run time (storage key, users file) are warnings (exit 0,
    or 1 with --strict). An unreadable config file exits 3.

    \b
    --json prints:
      {"errors": N, "warnings": N,
       "findings": [{"severity": "error"|"warning", "code": "shadowed"|…,
                     "rule": INDEX|null, "line": LINE|null, "message": …, "fix": …}]}

    Explain (--explain URL): the policy the server would enforce and, for every rule, hit,
    miss or maybe with the criterion that decided. Without --user the request is anonymous,
    and the first rule that may match a signed-in user decides (the server then asks to log
    in). Rules after the deciding one are evaluated too, for information. Exit 0.

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
    config = state.config()
    if groups is not None and user is None:
        raise click.UsageError("--groups needs --user (an anonymous request has no groups)")
    try:
        request = _request(
            config,
            url,
            method or "GET",
            _user_option(user),
            _groups_option(groups),
            _ip_option(ip),
            _Users(config),
        )
    except _Bad as exc:
        raise click.BadParameter(exc.message, param_hint=f"'{exc.option}'") from None
    from server.core.errors import InvalidTargetError

    try:
        explanation = _engine(config).explain(request)
    except InvalidTargetError as exc:
        raise click.BadParameter(
            f"the server refuses this request (400; auth-request 403): {exc}",
            param_hint="'--explain'",
        ) from None
    notes = _notes(config, url, request)
    if as_json:
        echo_json(_explain_json(explanation, config, request, notes))
        return
    from authctl.output import console

    out = console()
    _print_request(out, url, request)
    _print_explanation(out, explanation, request)
    for note in notes:
        out.print(f"[bold yellow]warning[/]: {_escape(note)}")


def _engine(config: Config) -> AccessControl:
    from server.core.rules import AccessControl

    return AccessControl(config.access_control)


class _Bad(Exception):
    """A bad value for an option or case key: where it came from and what is wrong."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


class _Users:
    """The users file, read once and only if some request names a user without groups."""

    def __init__(self, config: Config) -> None:
        self._path = config.users.file
        self._db: UserDatabase | None = None

    def groups(self, name: str, where: str) -> tuple[str, ...]:
        """The groups of user ``name``.

        Raises:
            DataError: the user is not in the users file (exit 3).
            UserStoreError: the users file cannot be read (exit 3 via the root command).
        """
        if self._db is None:
            from server.core.users import load_users

            self._db = load_users(self._path)
        found = self._db.get(name)
        if found is None:
            raise DataError(
                f"{where}: user {name!r} is not in the users file {str(self._path)!r}; "
                "give the groups to test with (--groups a,b, or groups = […] in a case) "
                "for a user that does not exist yet"
            )
        return found.groups


def _user_option(value: str | None, option: str = "--user") -> str | None:
    if value is None:
        return None
    from server.core.names import check_username

    try:
        return check_username(value)
    except ValueError as exc:
        raise _Bad(option, str(exc)) from None


def _groups_option(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return _check_groups([g.strip() for g in value.split(",") if g.strip()], "--groups")


def _check_groups(values: t.Iterable[str], option: str) -> tuple[str, ...]:
    from server.core.names import check_group

    try:
        return tuple(dict.fromkeys(check_group(g) for g in values))
    except ValueError as exc:
        raise _Bad(option, str(exc)) from None


def _ip_option(
    value: str | None, option: str = "--ip"
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if value is None:
        return None
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        raise _Bad(option, f"{value!r} is not an IP address") from None


def _request(
    config: Config,
    url: str,
    method: str,
    user: str | None,
    groups: tuple[str, ...] | None,
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None,
    users: _Users,
    *,
    url_option: str = "--explain",
    method_option: str = "--method",
    where: str = "--user",
) -> AccessRequest:
    """Build the AccessRequest the server would evaluate for this URL and identity."""
    from server.core.errors import InvalidTargetError
    from server.core.rules import AccessRequest
    from server.core.urls import parse_target

    try:
        target = parse_target(url)
    except InvalidTargetError as exc:
        raise _Bad(url_option, f"{url!r} is not a target URL the server accepts: {exc}") from None
    if not _METHOD.fullmatch(method):
        raise _Bad(method_option, f"{method!r} is not an HTTP method")
    if user is not None and groups is None:
        groups = users.groups(user, where)
    return AccessRequest(
        host=target.host,
        path=target.path,
        query=target.query,
        method=method.upper(),
        ip=ip,
        user=user,
        groups=groups or (),
    )


def _notes(config: Config, url: str, request: AccessRequest) -> list[str]:
    notes = []
    if config.session.cookie_for(request.host) is None:
        roots = ", ".join(c.domain for c in config.session.cookies)
        notes.append(
            f"host {request.host!r} is outside every cookie domain ({roots}): the server "
            "would answer 400 before any rule runs"
        )
    scheme = url.partition(":")[0].lower()
    if scheme in ("http", "ws"):
        notes.append(f"the server refuses plain {scheme}:// targets (400); only https is protected")
    return notes


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


def _print_explanation(out: Console, explanation: Explanation, request: AccessRequest) -> None:
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
    out.print(_escape(_sentence(explanation, request)))


def _sentence(explanation: Explanation, request: AccessRequest) -> str:
    """One sentence naming the decision and what the server does with it."""
    policy = explanation.policy
    if explanation.rule is None:
        return f"No rule matches: default_policy {policy!r} applies, so {_CONSEQUENCE[policy]}."
    rule = next(r for r in explanation.rules if r.index == explanation.rule)
    where = f"rule {rule.index}" + (f" (line {rule.line})" if rule.line is not None else "")
    if request.user is None and explanation.has_subject and policy != "bypass":
        return (
            f"Decision: {where} may apply once the visitor signs in (policy {policy!r}): the "
            "server sends anonymous visitors to log in, then decides again for the user."
        )
    return f"Decision: {where} applies, policy {policy!r}: {_CONSEQUENCE[policy]}."


# --------------------------------------------------------------------------- rules test


@dataclass(frozen=True, slots=True)
class _Case:
    index: int
    line: int | None
    url: str
    request: AccessRequest
    expect: str
    name: str


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
    config = state.config()
    cases = _read_cases(cases_file, config)
    engine = _engine(config)
    failures: list[tuple[_Case, Explanation]] = []
    passed: list[_Case] = []
    from server.core.errors import InvalidTargetError

    for case in cases:
        try:
            explanation = engine.explain(case.request)
        except InvalidTargetError as exc:
            raise DataError(
                f"{_case_title(case)}: the server refuses this request (400; auth-request "
                f"403) before any policy applies: {exc}; change the case's url"
            ) from None
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


def _case_title(case: _Case) -> str:
    line = f" (line {case.line})" if case.line is not None else ""
    name = f" {case.name!r}" if case.name else ""
    return (
        f"case {case.index}{line}{name}: {case.request.method} {case.url} as {_who(case.request)}"
    )


def _print_results(
    path: Path, passed: list[_Case], failures: list[tuple[_Case, Explanation]]
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


def _read_cases(path: Path, config: Config) -> list[_Case]:
    """Parse and check CASES.toml; every problem is a DataError (exit 3) naming case and key."""
    import tomli

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None
    try:
        data = tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise DataError(f"{path}: invalid TOML: {exc}") from None
    from server.core.tomlpos import locate

    def fail(key: str, message: str) -> t.NoReturn:
        line = locate(text, key) if key else None
        at = f":{line}" if line is not None else ""
        raise DataError(f"{path}{at}: {key}: {message}" if key else f"{path}: {message}")

    unknown = sorted(set(data) - {"cases"})
    if unknown:
        fail(unknown[0], "unknown key; the file holds [[cases]] tables only")
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        fail("", "no [[cases]]: write at least one [[cases]] table with url and expect")
    users = _Users(config)
    out = []
    for index, raw in enumerate(raw_cases):
        key = f"cases[{index}]"
        if not isinstance(raw, dict):
            fail(key, "expected a table; write each case under its own [[cases]] header")
        for name in raw:
            if name not in _CASE_KEYS:
                fail(f"{key}.{name}", f"unknown key; known keys: {', '.join(_CASE_KEYS)}")
        values: dict[str, t.Any] = {}
        for name in ("url", "method", "user", "ip", "expect", "name"):
            if name in raw and not isinstance(raw[name], str):
                fail(f"{key}.{name}", f"expected a string, got {type(raw[name]).__name__}")
            values[name] = raw.get(name)
        for name in ("url", "expect"):
            if values[name] is None:
                fail(key, f"{name} is required")
        if values["expect"] not in POLICIES:
            fail(f"{key}.expect", f"{values['expect']!r} is not one of {', '.join(POLICIES)}")
        groups = raw.get("groups")
        if groups is not None and (
            not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
        ):
            fail(f"{key}.groups", 'expected a list of strings, such as ["admins"]')
        if groups is not None and values["user"] is None:
            fail(f"{key}.groups", "groups needs user (an anonymous request has no groups)")
        try:
            request = _request(
                config,
                values["url"],
                values["method"] or "GET",
                _user_option(values["user"], f"{key}.user"),
                _check_groups(groups, f"{key}.groups") if groups is not None else None,
                _ip_option(values["ip"], f"{key}.ip"),
                users,
                url_option=f"{key}.url",
                method_option=f"{key}.method",
                where=f"{key}.user",
            )
        except _Bad as exc:
            fail(exc.option, exc.message)
        out.append(
            _Case(
                index,
                locate(text, key),
                values["url"],
                request,
                values["expect"],
                values["name"] or "",
            )
        )
    return out
