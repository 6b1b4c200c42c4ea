"""``authctl proxy-snippet PROXY``: working reverse-proxy configuration, from the config.

Hand-written forward-auth configs fail in quiet ways (a client-sent ``Remote-User`` reaching
the app, a sub-request hanging on ``Content-Length``, the portal host forgotten), so authctl
writes them from what it knows: its own address, the portal and cookie domains. Without
``--out`` it prints the piece for an existing config; with ``--out DIR`` it writes a complete
standalone config with every runtime path inside DIR and prints the one command that starts
it. ``--check`` runs the proxy's own config test when the proxy is installed. The rendering is
in ``authctl.snippets``; this module imports only click at the top.
"""

from __future__ import annotations

import typing as t
from pathlib import Path

import click

from authctl.cli import CheckFailed
from authctl.cli import DataError
from authctl.cli import State
from authctl.cli import pass_state

if t.TYPE_CHECKING:
    from authctl.snippets import Plan
    from authctl.snippets import Rendered

#: The same as ``authctl.snippets.PROXIES`` (a test keeps them equal); repeated here so that
#: ``--help`` imports nothing but click.
PROXIES = ("traefik", "nginx", "caddy", "haproxy", "envoy")


@click.command("proxy-snippet")
@click.argument("proxy", type=click.Choice(PROXIES))
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="NAME",
    help="A protected site (repeat; *.example.com allowed). Default: every subdomain of each "
    "cookie domain. The portal host is always served.",
)
@click.option(
    "--upstream",
    metavar="URL",
    help="The app behind the proxy, http://HOST:PORT.  [default: http://127.0.0.1:8080]",
)
@click.option(
    "--listen",
    metavar="ADDR:PORT",
    help="Where the proxy accepts TLS.  [default: all addresses, port 443]",
)
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Certificate (PEM). Default: certs/cert.pem beside the config.",
)
@click.option(
    "--tls-key",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Private key (PEM). Default: certs/key.pem beside the config.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write a complete standalone config into this folder and print how to start it.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Validate with the proxy's own config test (nginx -t, caddy validate, haproxy -c, "
    "envoy --mode validate) when it is installed; exit 1 if it fails.",
)
@pass_state
def proxy_snippet(
    state: State,
    proxy: str,
    hosts: tuple[str, ...],
    upstream: str | None,
    listen: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    out_dir: Path | None,
    check: bool,
) -> None:
    """Print (or write with --out) reverse-proxy config that puts authctl in front of sites.

    \b
    PROXY is one of traefik, nginx, caddy, haproxy, envoy. Built from the config: authctl's
    address (server.address), the portal URL and the cookie domains. Every snippet serves
    the portal host (proxied to authctl), removes client-sent Remote-* headers on every site,
    and passes the original method and URL to authctl.
    Example: authctl proxy-snippet nginx --host app.example.com --upstream http://127.0.0.1:3000
    """
    from authctl import snippets

    config = state.config()
    try:
        plan = snippets.build_plan(
            config,
            hosts=hosts,
            upstream=upstream,
            listen=listen,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
    except snippets.SnippetError as exc:
        raise click.UsageError(str(exc)) from None
    for warning in plan.warnings:
        click.echo(f"warning: {warning}", err=True)

    if out_dir is None and not check:
        try:
            click.echo(snippets.dropin(proxy, plan), nl=False)
        except snippets.SnippetError as exc:
            raise click.UsageError(str(exc)) from None
        return

    missing = [p for p in (plan.tls_cert, plan.tls_key) if not p.is_file()]
    if missing:
        domain = config.session.cookies[0].domain
        raise DataError(
            f"{', '.join(map(str, missing))}: not found. Make a certificate with "
            f"`authctl cert generate --host {plan.portals[0]} --host '*.{domain}' "
            f"--out {plan.tls_cert.parent}` or pass --tls-cert/--tls-key."
        )
    if out_dir is None:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="authctl-check-") as tmp:
            rendered = _write(proxy, plan, Path(tmp), announce=False)
            click.echo(snippets.dropin(proxy, plan), nl=False)
            _check(proxy, rendered)
        return
    rendered = _write(proxy, plan, out_dir)
    if check:
        _check(proxy, rendered)
    import shlex

    click.echo(shlex.join(rendered.start))


def _write(proxy: str, plan: Plan, out_dir: Path, *, announce: bool = True) -> Rendered:
    """Render the standalone config into ``out_dir``; refuse to replace files authctl did not
    write (an ``--out /etc/nginx`` must not eat a hand-written nginx.conf)."""
    from authctl import snippets
    from server.core.certs import KEY_MODE
    from server.core.certs import atomic_write

    try:
        rendered = snippets.standalone(proxy, plan, out_dir)
    except snippets.SnippetError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:
        raise DataError(f"cannot read {exc.filename}: {exc.strerror}") from None
    foreign = [
        out_dir / name
        for name in rendered.files
        if name not in rendered.secret_files and _foreign(out_dir / name)
    ]
    if foreign:
        raise DataError(
            f"{', '.join(map(str, foreign))} exist and were not written by authctl; "
            "choose another --out folder (nothing was written)"
        )
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for folder in rendered.folders:
            (out_dir / folder).mkdir(exist_ok=True)
        for name, content in rendered.files.items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            mode = KEY_MODE if name in rendered.secret_files else 0o644
            atomic_write(out_dir / name, data, mode)
            if announce:
                click.echo(f"wrote {out_dir / name}", err=True)
    except OSError as exc:
        raise DataError(f"cannot write {exc.filename or out_dir}: {exc.strerror}") from None
    return rendered


def _foreign(path: Path) -> bool:
    """True when ``path`` exists and does not carry authctl's generated-file mark."""
    from authctl.snippets import GENERATED_MARK

    if not path.exists():
        return False
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            head = fh.read(1024)
    except OSError:
        return True
    return GENERATED_MARK not in head


def _check(proxy: str, rendered: Rendered) -> None:
    """Run the proxy's own config test; exit 1 with its output when it fails."""
    import subprocess

    from authctl.snippets import binary_installed

    if rendered.check is None:
        click.echo(
            f"{proxy}: has no configuration test; start it with the command above and watch "
            "its log",
            err=True,
        )
        return
    if not binary_installed(Path(rendered.check[0]).name):
        click.echo(f"{proxy}: not installed here; the config was not checked", err=True)
        return
    try:
        result = subprocess.run(rendered.check, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CheckFailed(f"{proxy} config test could not run: {exc}") from None
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise CheckFailed(f"{proxy} config test failed ({' '.join(rendered.check)}):\n{output}")
    click.echo(f"{proxy}: config test passed ({' '.join(rendered.check)})", err=True)
