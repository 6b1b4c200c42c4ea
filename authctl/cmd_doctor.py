"""``authctl doctor``: check a deployment end to end and name the fix for each problem.

The checks live in ``server.core.doctor``; this module reads the options, runs them and
prints a table (or ``--json``, SPEC §7.4). Exit 0 when nothing failed (warnings alone exit
0), 1 when a check failed. Only click is imported at the top, so ``authctl --help`` stays
cheap.
"""

from __future__ import annotations

import sys
import typing as t

import click

from authctl.cli import ExitCode
from authctl.cli import State
from authctl.cli import pass_state
from authctl.output import echo_json

if t.TYPE_CHECKING:
    from server.core.doctor import Check

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


@click.command()
@click.option(
    "--url",
    "urls",
    multiple=True,
    metavar="URL",
    help="A protected https:// URL reached through the real proxy: play the client "
    "against it (repeatable).",
)
@click.option(
    "--resolve",
    "resolve",
    multiple=True,
    metavar="NAME:ADDRESS",
    help="Connect to ADDRESS for NAME ('*.example.com' for every subdomain), as curl "
    "--resolve: test before DNS is in place (repeatable).",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Trust this CA (PEM) besides the system's: a private CA, such as the ca.pem of "
    "`authctl cert generate --ca`.",
)
@click.option(
    "--cookie",
    metavar="NAME=VALUE",
    help="With --url: a session cookie to check what the app sees when signed in.",
)
@click.option(
    "--user",
    metavar="NAME",
    help="With --url: sign in as NAME through the portal API to check what the app sees.",
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="With --user: read the password from stdin (else a prompt).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0.1, 60),
    default=5.0,
    show_default=True,
    help="Seconds each network call may take.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts (see above).")
@pass_state
def doctor(
    state: State,
    urls: tuple[str, ...],
    resolve: tuple[str, ...],
    ca_file: str | None,
    cookie: str | None,
    user: str | None,
    password_stdin: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Check what breaks real deployments, and name the fix for each problem.

    \b
    Checks, in order:
      - the config loads (every error with file, line and key);
      - every file it names is present and readable, and keys and passwords are not
        readable by other accounts; the users file parses;
      - the running server's /api/health at server.address (a 503 names the parts);
      - each [[session.cookies]] portal_url answers over HTTPS; its certificate is
        trusted, names the portal host (and, a warning, the domain's other hosts
        known here), and is not expired (a warning within 14 days);
      - the clock agrees with the server's Date (warning beyond 30 s, failure beyond
        5 minutes: TOTP codes break);
      - the storage (SQLite or PostgreSQL) opens with the storage key and answers, and
        the session store (SQLite or Redis) answers;
      - with --url: an anonymous request is sent to the portal; a forged Remote-User
        from the client never reaches the app as an identity; the proxy's forwarded
        headers are trusted (the portal redirect names exactly the URL asked).
    With --cookie or --user, a signed-in request checks what the app receives; that
    needs an app that echoes its request headers, and is a warning ("not checkable")
    otherwise, never a guessed ok.

    \b
    Exit codes: 0 nothing failed (warnings alone exit 0), 1 a check failed,
    2 usage error.

    \b
    --json prints:
      {"checks": [{"name": "…", "status": "ok"|"warn"|"fail",
                   "detail": "…", "fix": "…"}]}

    \b
    Examples:
      authctl doctor
      authctl doctor --url https://app.example.com/ --user alice
      authctl --config /etc/authctl/authctl.toml doctor --json
      authctl doctor --ca certs/ca.pem --resolve '*.example.test:127.0.0.1' \\
          --url https://app.example.test:8443/
    """
    from server.core.doctor import exit_code
    from server.core.doctor.net import Resolver
    from server.core.doctor.run import Options
    from server.core.doctor.run import run

    try:
        resolver = Resolver.parse(resolve)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--resolve") from None
    if cookie is not None and "=" not in cookie:
        raise click.BadParameter("expected NAME=VALUE", param_hint="--cookie")
    if (cookie or user) and not urls:
        raise click.UsageError("--cookie and --user need --url")
    if cookie and user:
        raise click.UsageError("give --cookie or --user, not both")
    if password_stdin and not user:
        raise click.UsageError("--password-stdin needs --user")
    password = None
    if user:
        password = (
            sys.stdin.readline().rstrip("\r\n")
            if password_stdin
            else click.prompt(f"password of {user}", hide_input=True)
        )
    options = Options(
        urls=urls,
        resolver=resolver,
        ca_file=ca_file,
        cookie=cookie,
        user=user,
        password=password,
        timeout=timeout,
    )
    checks = run(state.config_path, options)
    if as_json:
        echo_json({"checks": [c.as_dict() for c in checks]})
    else:
        _print(checks)
    if exit_code(checks):
        raise click.exceptions.Exit(ExitCode.CHECK_FAILED)


def _print(checks: list[Check]) -> None:
    from rich.table import Table
    from rich.text import Text

    from authctl.output import console

    table = Table(show_lines=False, expand=False)
    table.add_column("check", overflow="fold")
    table.add_column("status")
    table.add_column("detail / fix", overflow="fold")
    for check in checks:
        status = str(check.status)
        body = Text(check.detail)
        if check.fix:
            body.append("\nfix: ", style="bold")
            body.append(check.fix)
        table.add_row(check.name, Text(status, style=_STYLE[status]), body)
    out = console()
    out.print(table)
    counts = {s: sum(1 for c in checks if str(c.status) == s) for s in _STYLE}
    out.print(
        Text(
            f"{counts['ok']} ok, {counts['warn']} warnings, {counts['fail']} failed",
            style="bold red" if counts["fail"] else "bold green",
        )
    )
