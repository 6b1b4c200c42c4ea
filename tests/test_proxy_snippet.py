"""``authctl proxy-snippet``: the structure of each proxy's configuration, without the proxies.

The e2e suite proves the snippets work; these fast tests pin the lines that make them safe, so
a template edit that drops one fails here first: client ``Remote-*`` headers removed before the
auth step on every site, the endpoint each proxy must call, the original method and URL passed,
the portal host proxied to authctl, and the standalone files with every path inside ``--out``.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl import snippets
from authctl.cli import cli
from server.core import certs

CONFIG = """\
[server]
address = "127.0.0.1:9191"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com:8443"

[access_control]
default_policy = "one_factor"
"""
HOSTS = ["--host", "app.example.com", "--host", "public.example.com"]
COMMON = [*HOSTS, "--listen", "127.0.0.1:8443", "--upstream", "http://127.0.0.1:3000"]
IDENTITY = ("Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A config folder with certs/cert.pem and certs/key.pem beside the config."""
    (tmp_path / "authctl.toml").write_text(CONFIG, encoding="utf-8")
    bundle = certs.generate(["auth.example.com", "*.example.com"], key_type="ecdsa")
    certs.write_files(tmp_path / "certs", bundle.files())
    return tmp_path


def snippet(runner: CliRunner, site: Path, *args: str) -> tuple[int, str, str]:
    """Run ``authctl proxy-snippet ARGS``; return exit code, stdout and stderr."""
    result = runner.invoke(cli, ["--config", str(site / "authctl.toml"), "proxy-snippet", *args])
    return result.exit_code, result.stdout, result.stderr


def dropin(runner: CliRunner, site: Path, proxy: str, *extra: str) -> str:
    """The drop-in text for ``proxy`` with the common options."""
    code, out, err = snippet(runner, site, proxy, *COMMON, *extra)
    assert code == 0, err
    return out


def block(text: str, opening: str) -> str:
    """The brace-balanced block that starts at the line containing ``opening``."""
    start = text.rfind("\n", 0, text.index(opening)) + 1
    depth = 0
    for i in range(text.index("{", start), len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1]
    raise AssertionError(f"unbalanced block at {opening!r}")


# --------------------------------------------------------------------------- every proxy


def test_command_lists_every_proxy() -> None:
    """The CLI's choice list (kept click-only for cheap --help) matches the renderers."""
    from authctl.cmd_proxy import PROXIES

    assert PROXIES == snippets.PROXIES


@pytest.mark.parametrize("proxy", snippets.PROXIES)
def test_names_portal_hosts_and_endpoints(runner: CliRunner, site: Path, proxy: str) -> None:
    """Each drop-in serves the portal host and the protected hosts, and reaches authctl."""
    text = dropin(runner, site, proxy)
    for host in ("auth.example.com", "app.example.com", "public.example.com"):
        assert host in text
    assert "127.0.0.1:9191" in text
    assert "127.0.0.1:3000" in text
    assert "authctl proxy-snippet" in text.splitlines()[1]


@pytest.mark.parametrize("proxy", snippets.PROXIES)
def test_output_is_deterministic(runner: CliRunner, site: Path, proxy: str) -> None:
    """The same config and options give the same bytes (diff-friendly, golden-testable)."""
    assert dropin(runner, site, proxy) == dropin(runner, site, proxy)


@pytest.mark.parametrize(
    ("proxy", "files"),
    [
        ("nginx", ["nginx.conf"]),
        ("caddy", ["Caddyfile"]),
        ("haproxy", ["authctl-combined.pem", "authctl-forward-auth.lua", "haproxy.cfg"]),
        ("traefik", ["traefik-dynamic.yml", "traefik.yml"]),
        ("envoy", ["envoy.yaml"]),
    ],
)
def test_out_writes_standalone_config(
    runner: CliRunner, site: Path, tmp_path: Path, proxy: str, files: list[str]
) -> None:
    """--out writes the named files, prints the start command last, and keeps runtime paths
    (pid, logs, temp, Lua, PEM) inside the folder."""
    out = tmp_path / "out"
    code, stdout, stderr = snippet(runner, site, proxy, *COMMON, "--out", str(out))
    assert code == 0, stderr
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == files
    command = stdout.strip().splitlines()[-1]
    assert str(out) in command
    for name in files:
        assert f"wrote {out / name}" in stderr
    text = "\n".join((out / n).read_text() for n in files if not n.endswith(".pem"))
    config_lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith(("#", "--"))]
    paths = re.findall(r"(?<![\w:/.])/[\w.-]+(?:/[\w.-]+)+", "\n".join(config_lines))
    files_used = [p for p in paths if not p.startswith(("/api/", "/internal/"))]
    assert files_used
    for path in files_used:
        assert path.startswith((str(out), str(site / "certs"))), path


def test_out_refuses_foreign_files(runner: CliRunner, site: Path, tmp_path: Path) -> None:
    """A hand-written nginx.conf in --out is never replaced (exit 3); authctl's own files are."""
    out = tmp_path / "etc"
    out.mkdir()
    (out / "nginx.conf").write_text("user www-data;\n")
    code, _, stderr = snippet(runner, site, "nginx", *COMMON, "--out", str(out))
    assert code == 3
    assert "not written by authctl" in stderr
    assert (out / "nginx.conf").read_text() == "user www-data;\n"
    fresh = tmp_path / "fresh"
    assert snippet(runner, site, "nginx", *COMMON, "--out", str(fresh))[0] == 0
    assert snippet(runner, site, "nginx", *COMMON, "--out", str(fresh))[0] == 0


def test_out_needs_the_certificate(runner: CliRunner, site: Path, tmp_path: Path) -> None:
    """Without certs/ beside the config, --out says how to make one (exit 3)."""
    for path in (site / "certs").iterdir():
        path.unlink()
    code, _, stderr = snippet(runner, site, "caddy", *COMMON, "--out", str(tmp_path / "o"))
    assert code == 3
    assert "authctl cert generate" in stderr


def test_explicit_tls_files(runner: CliRunner, site: Path) -> None:
    """--tls-cert/--tls-key replace the default certificate; one without the other is refused."""
    text = dropin(
        runner, site, "nginx", "--tls-cert", "/etc/ssl/x.pem", "--tls-key", "/etc/ssl/x.key"
    )
    assert "ssl_certificate     /etc/ssl/x.pem;" in text
    assert "ssl_certificate_key /etc/ssl/x.key;" in text
    code, _, stderr = snippet(runner, site, "nginx", "--tls-cert", "/etc/ssl/x.pem")
    assert code == 2
    assert "--tls-key" in stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "app.other.org"], "outside every cookie domain"),
        (["--host", "10.0.0.1"], "not an IP address"),
        (["--upstream", "https://127.0.0.1:3000"], "http://HOST:PORT"),
        (["--upstream", "http://127.0.0.1:3000/app"], "no path"),
        (["--listen", "localhost:8443"], "must be an IP address"),
        (["--listen", "127.0.0.1"], "ADDR:PORT"),
        (["--host", "auth.example.com"], "no host to protect"),
    ],
    ids=["foreign-host", "ip-host", "https-upstream", "upstream-path", "listen-name",
         "listen-no-port", "only-portal"],
)  # fmt: skip
def test_bad_options_are_usage_errors(
    runner: CliRunner, site: Path, args: list[str], message: str
) -> None:
    """Options that cannot give a working config are refused with exit 2 and a reason."""
    code, _, stderr = snippet(runner, site, "nginx", *args)
    assert code == 2, stderr
    assert message in stderr


def test_default_hosts_are_the_cookie_domain(runner: CliRunner, site: Path) -> None:
    """Without --host every subdomain of the cookie domain is protected."""
    code, out, _ = snippet(runner, site, "nginx")
    assert code == 0
    assert "server_name *.example.com;" in out
    assert "listen 443 ssl;" in out


@pytest.mark.parametrize(
    ("proxy", "matcher"),
    [
        ("nginx", "server_name *.example.com;"),
        ("caddy", "https://*.example.com {"),
        ("haproxy", "acl authctl_protected hdr(host),field(1,:) -i -m end .example.com"),
        ("traefik", r"HostRegexp(`^[a-z0-9-]+\.example\.com$`)"),
        ("envoy", '["*.example.com", "*.example.com:443"]'),
    ],
)
def test_default_wildcard_on_port_443(
    runner: CliRunner, site: Path, proxy: str, matcher: str
) -> None:
    """With no --host and no --listen every proxy protects *.example.com on port 443."""
    code, out, _ = snippet(runner, site, proxy)
    assert code == 0
    assert matcher in out


def test_portal_port_mismatch_warns(runner: CliRunner, site: Path) -> None:
    """A portal URL on another port than --listen gets a warning on stderr."""
    code, _, stderr = snippet(runner, site, "caddy", *HOSTS, "--listen", "127.0.0.1:9443")
    assert code == 0
    assert "names port 8443 but the proxy listens on 9443" in stderr


@pytest.mark.parametrize("proxy", ["traefik", "haproxy", "envoy"])
def test_unix_socket_needs_nginx_or_caddy(runner: CliRunner, site: Path, proxy: str) -> None:
    """A unix-socket server.address is refused where the proxy cannot use it, used elsewhere."""
    config = site / "authctl.toml"
    config.write_text(CONFIG.replace("127.0.0.1:9191", "unix:/run/authctl.sock"))
    code, _, stderr = snippet(runner, site, proxy, *HOSTS)
    assert code == 2
    assert "unix socket" in stderr
    assert "server unix:/run/authctl.sock;" in dropin(runner, site, "nginx")
    assert "forward_auth unix//run/authctl.sock {" in dropin(runner, site, "caddy")


def test_check_reports_missing_and_failing_proxy(
    runner: CliRunner, site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--check says when the proxy is not installed (exit 0) and fails (exit 1) on a bad test."""
    monkeypatch.setattr(snippets, "binary_installed", lambda name: False)
    code, out, stderr = snippet(runner, site, "nginx", *COMMON, "--check")
    assert code == 0, stderr
    assert "not installed here" in stderr
    assert "auth_request" in out
    monkeypatch.setattr(snippets, "binary_installed", lambda name: True)
    monkeypatch.setattr("authctl.snippets.nginx.find_binary", lambda name: "false")
    code, _, stderr = snippet(runner, site, "nginx", *COMMON, "--check")
    assert code == 1
    assert "config test failed" in stderr


# --------------------------------------------------------------------------- nginx


def test_nginx_auth_location(runner: CliRunner, site: Path) -> None:
    """The internal auth location: auth-request endpoint, no body, original method and URL."""
    text = dropin(runner, site, "nginx")
    auth = block(text, "location = /internal/authctl/authz")
    for line in (
        "internal;",
        "proxy_pass http://authctl/api/authz/auth-request;",
        "proxy_pass_request_body off;",
        'proxy_set_header Content-Length "";',
        "proxy_set_header X-Original-Method $request_method;",
        "proxy_set_header X-Original-URL $scheme://$http_host$request_uri;",
        'proxy_set_header Connection "";',
        "proxy_http_version 1.1;",
        # the same request in the X-Forwarded-* triple; the client's other copies cleared
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header X-Forwarded-Uri $request_uri;",
        "proxy_set_header X-Forwarded-Method $request_method;",
        'proxy_set_header X-Original-URI "";',
        'proxy_set_header X-Forwarded-Prefix "";',
        'proxy_set_header Forwarded "";',
    ):
        assert line in auth, line


NGINX_GUARDS = (
    "if ($authctl_host_ok = 0) { return 421; }",
    'if ($http_upgrade ~* "h2|http/2") { return 400; }',
    "if ($http_http2_settings) { return 400; }",
)


def test_nginx_guards_on_every_site(runner: CliRunner, site: Path) -> None:
    """Both server blocks refuse a Host nginx did not route by and an h2c upgrade, before any
    location (a server-level `if` with `return` runs in the rewrite phase, ahead of
    auth_request); the portal never passes the client's X-Original-* to authctl."""
    text = dropin(runner, site, "nginx")
    for name in ("auth.example.com", "app.example.com public.example.com"):
        block_text = server(text, name)
        first_location = block_text.index("location ")
        for guard in NGINX_GUARDS:
            assert 0 < block_text.index(guard) < first_location, (name, guard)
    portal = server(text, "auth.example.com")
    for name in ("X-Original-URL", "X-Original-Method", "X-Forwarded-Uri", "Forwarded"):
        assert f'proxy_set_header {name} "";' in portal


def nginx_host_ok(text: str, http_host: str, host: str) -> bool:
    """Evaluate the snippet's $authctl_host_ok map the way nginx does (PCRE, caseless)."""
    pattern = re.search(r'"~\*(.+)" 1;', text)
    assert pattern, "the $authctl_host_ok map is missing"
    return re.search(pattern.group(1), f"{http_host}|{host}", re.IGNORECASE) is not None


@pytest.mark.parametrize(
    ("http_host", "host", "ok"),
    [
        ("app.example.com:8443", "app.example.com", True),
        ("APP.example.com", "app.example.com", True),
        ("app.example.com", "app.example.com", True),
        # absolute-form target for app, Host naming the bypass host
        ("public.example.com:8443", "app.example.com", False),
        # nginx keeps what follows the port in Host; the judged URL would take it as path
        ("app.example.com:8443?", "app.example.com", False),
        ("app.example.com:8443/static/x", "app.example.com", False),
        ("app.example.com:8443#", "app.example.com", False),
        ("public.example.com@app.example.com", "app.example.com", False),
        ("app.example.com:8443:1", "app.example.com", False),
        ("app.example.com.evil", "app.example.com", False),
        ("", "app.example.com", False),
    ],
)
def test_nginx_host_map(runner: CliRunner, site: Path, http_host: str, host: str, ok: bool) -> None:
    """The map accepts only host[:port] whose host is the one nginx routed by."""
    assert nginx_host_ok(dropin(runner, site, "nginx"), http_host, host) is ok


def server(text: str, server_name: str) -> str:
    """The nginx ``server { }`` block holding ``server_name``."""
    start = text.rindex("server {", 0, text.index(f"server_name {server_name};"))
    return block(text[start:], "server {")


def test_nginx_site_location(runner: CliRunner, site: Path) -> None:
    """The protected location hands authctl's 401 to @authctl_401 and always sets the
    Remote-* headers."""
    protected = server(dropin(runner, site, "nginx"), "app.example.com public.example.com")
    app = block(protected, "location / {")
    assert "auth_request /internal/authctl/authz;" in app
    assert "auth_request_set $authctl_redirect $upstream_http_location;" in app
    assert "error_page 401 = @authctl_401;" in app
    for name in IDENTITY:
        var = "$authctl_" + name.lower().replace("-", "_")
        assert f"auth_request_set {var} $upstream_http_{name.lower().replace('-', '_')};" in app
        assert f"proxy_set_header {name} {var};" in app


def test_nginx_401_redirects_only_to_a_location(runner: CliRunner, site: Path) -> None:
    """authctl's 401 with Location (sign in first) becomes the 302 to the portal; one without
    (a refused token or Basic login) stays 401, nginx keeping authctl's WWW-Authenticate
    (auth_request copies it): never a 302 with an empty Location (`error_page 401 =302`)."""
    text = dropin(runner, site, "nginx")
    assert "=302" not in text
    protected = server(text, "app.example.com public.example.com")
    refused = block(protected, "location @authctl_401 {")
    assert refused.splitlines()[1:] == [
        "        if ($authctl_redirect) { return 302 $authctl_redirect; }",
        "        return 401;",
        "    }",
    ]
    # the header is nginx's own copy, so it is never added a second time
    assert "add_header" not in text
    assert "$upstream_http_www_authenticate" not in text
    # the portal's own 401s (its API) are authctl's, untouched
    assert "error_page" not in server(text, "auth.example.com")


def test_nginx_keepalive_in_every_proxied_location(runner: CliRunner, site: Path) -> None:
    """Upstreams keep connections alive, and every location that proxies clears Connection
    (proxy_set_header is not inherited into a location that sets its own)."""
    text = dropin(runner, site, "nginx")
    assert text.count("keepalive 16;") == 2
    locations = [
        found for found in re.findall(r"location [^{]*\{[^}]*\}", text) if "proxy_pass " in found
    ]
    assert len(locations) == 3
    for location in locations:
        assert 'proxy_set_header Connection "";' in location
        assert "proxy_http_version 1.1;" in location


def test_nginx_portal_strips_identity(runner: CliRunner, site: Path) -> None:
    """The portal server proxies to authctl with the forwarded host and proto, Remote-* cleared."""
    portal = server(dropin(runner, site, "nginx"), "auth.example.com")
    assert "proxy_pass http://authctl;" in portal
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in portal
    assert "proxy_set_header X-Forwarded-Host $http_host;" in portal
    for name in IDENTITY:
        assert f'proxy_set_header {name} "";' in portal


def test_nginx_standalone_paths(runner: CliRunner, site: Path, tmp_path: Path) -> None:
    """The standalone nginx.conf keeps pid, logs and every temp path inside --out."""
    out = tmp_path / "ngx"
    assert snippet(runner, site, "nginx", *COMMON, "--out", str(out))[0] == 0
    text = (out / "nginx.conf").read_text()
    assert f"pid {out}/nginx.pid;" in text
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        assert f"{name}_temp_path {out}/tmp/{name};" in text
    assert "daemon off;" in text
    assert (out / "logs").is_dir()


# --------------------------------------------------------------------------- Caddy


def test_caddy_route_strips_then_asks(runner: CliRunner, site: Path) -> None:
    """Inside a route: Remote-* deleted, then forward_auth with copy_headers, then the app."""
    text = dropin(runner, site, "caddy")
    protected = block(text, "https://app.example.com:8443, https://public.example.com:8443 {")
    route = block(protected, "route {")
    order = [
        route.index("request_header -Remote-User"),
        route.index("request_header -Remote_User"),
        route.index("forward_auth 127.0.0.1:9191 {"),
        route.index("reverse_proxy 127.0.0.1:3000"),
    ]
    assert order == sorted(order)
    assert "uri /api/authz/forward-auth" in route
    assert "copy_headers Remote-User Remote-Groups Remote-Name Remote-Email" in route
    assert "bind 127.0.0.1" in protected


def test_caddy_refuses_h2c_and_drops_forwarding(runner: CliRunner, site: Path) -> None:
    """Every site refuses an h2c upgrade and drops the client's X-Original-*/X-Forwarded-*
    before forward_auth or reverse_proxy sees the request."""
    text = dropin(runner, site, "caddy")
    for opening in ("https://auth.example.com:8443 {", "https://app.example.com:8443, "):
        site_block = block(text, opening)
        assert '@authctl_h2c header_regexp Upgrade "(?i)(h2|http/2)"' in site_block
        assert "@authctl_h2c_settings header HTTP2-Settings *" in site_block
        route = block(site_block, "route {")
        starts = [route.find(d) for d in ("\t\tforward_auth ", "\t\treverse_proxy ")]
        first = min(i for i in starts if i >= 0)
        for line in (
            "respond @authctl_h2c 400",
            "respond @authctl_h2c_settings 400",
            *(f"request_header -{name}\n" for name in snippets.FORWARDING_HEADERS),
        ):
            assert route.index(line) < first, (opening, line)


def test_caddy_portal(runner: CliRunner, site: Path) -> None:
    """The portal site proxies to authctl and drops client Remote-* headers."""
    portal = block(dropin(runner, site, "caddy"), "https://auth.example.com:8443 {")
    assert "reverse_proxy 127.0.0.1:9191" in portal
    for name in IDENTITY:
        assert f"request_header -{name}" in portal


def test_caddy_standalone_globals(runner: CliRunner, site: Path, tmp_path: Path) -> None:
    """The standalone Caddyfile turns the admin API and config persistence off, storage in DIR."""
    out = tmp_path / "c"
    assert snippet(runner, site, "caddy", *COMMON, "--out", str(out))[0] == 0
    text = (out / "Caddyfile").read_text()
    for line in ("admin off", "persist_config off", f"storage file_system {out}/caddy"):
        assert line in text


# --------------------------------------------------------------------------- HAProxy


def test_haproxy_frontend_rules(runner: CliRunner, site: Path) -> None:
    """Remote-* deleted before the Lua call to auth-request; 401 redirects, the rest denies."""
    text = dropin(runner, site, "haproxy")
    call = text.index("http-request lua.authctl_auth http://127.0.0.1:9191/api/authz/auth-request")
    for name in (*IDENTITY, "Remote_User"):
        assert text.index(f"http-request del-header {name}\n") < call
    assert (
        "code 302 if authctl_protected !authctl_portal authctl_sign_in authctl_location METH_GET"
        in text
    )
    assert (
        "code 303 if authctl_protected !authctl_portal authctl_sign_in authctl_location !METH_GET"
        in text
    )
    assert "deny deny_status 403 if authctl_protected !authctl_portal authctl_deny" in text
    # 401 without Location: authctl's challenge goes back with the 401, after the redirects
    challenge = (
        'http-request return status 401 content-type "text/plain; charset=utf-8" '
        'string "401 Unauthorized" hdr WWW-Authenticate "%[var(txn.authctl_challenge)]" '
        "if authctl_protected !authctl_portal authctl_sign_in authctl_challenge\n"
    )
    bare = "http-request deny deny_status 401 if authctl_protected !authctl_portal authctl_sign_in"
    assert "acl authctl_challenge var(txn.authctl_challenge) -m found" in text
    assert text.index("code 303 if") < text.index(challenge) < text.index(bare)
    assert "deny deny_status 500 if authctl_protected !authctl_portal !authctl_allow" in text
    assert "acl authctl_portal hdr(host),field(1,:) -i auth.example.com" in text
    assert "use_backend authctl_portal if authctl_portal" in text


def test_haproxy_guards_before_the_auth_call(runner: CliRunner, site: Path) -> None:
    """One host[:port] Host only, no h2c upgrade, no client forwarding header: all refused or
    dropped before the Lua call builds the judged URL (and before routing)."""
    text = dropin(runner, site, "haproxy")
    call = text.index("http-request lua.authctl_auth")
    route = text.index("use_backend authctl_portal")
    for line in (
        "http-request deny deny_status 400 if !{ req.fhdr_cnt(host) eq 1 }",
        "http-request deny deny_status 400 if !{ req.fhdr(host) -m reg "
        "^[A-Za-z0-9.-]+(:[0-9]{1,5})?$ }",
        "http-request deny deny_status 400 if { req.hdr(upgrade) -m reg -i h2|http/2 }",
        "http-request deny deny_status 400 if { req.hdr_cnt(http2-settings) gt 0 }",
        *(f"http-request del-header {name}\n" for name in snippets.FORWARDING_HEADERS),
    ):
        assert text.index(line) < call < route, line
    for status in (400, 421):
        assert f"deny_status {status} if authctl_protected !authctl_portal authctl_" in text


def test_haproxy_lua_script(runner: CliRunner, site: Path, tmp_path: Path) -> None:
    """The Lua action sends the original URL and method and deletes client identity headers."""
    out = tmp_path / "h"
    assert snippet(runner, site, "haproxy", *COMMON, "--out", str(out))[0] == 0
    lua = (out / "authctl-forward-auth.lua").read_text()
    assert 'core.register_action("authctl_auth"' in lua
    assert '["X-Original-URL"]' in lua
    assert '["X-Original-Method"]' in lua
    assert "txn.http:req_del_header(name)" in lua
    assert "core.httpclient()" in lua
    # the judged URL is built from the validated Host, never the raw header
    assert 'local host = valid_host(hdrs["host"])' in lua
    assert 'first(hdrs["host"])' not in lua
    assert 'txn:set_var("txn.authctl_status", 421)' in lua
    # a refusal's challenge (WWW-Authenticate) is kept for the frontend's 401
    assert 'first(res.headers["www-authenticate"])' in lua
    assert 'txn:set_var("txn.authctl_challenge", challenge)' in lua
    assert f"lua-load {out}/authctl-forward-auth.lua" in (out / "haproxy.cfg").read_text()


def test_haproxy_combined_pem(runner: CliRunner, site: Path, tmp_path: Path) -> None:
    """--out copies certificate and key into one PEM, mode 0600, that the bind line uses."""
    out = tmp_path / "h"
    assert snippet(runner, site, "haproxy", *COMMON, "--out", str(out))[0] == 0
    pem = out / "authctl-combined.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    data = pem.read_bytes()
    assert (site / "certs" / "cert.pem").read_bytes().strip() in data
    assert (site / "certs" / "key.pem").read_bytes().strip() in data
    assert f"ssl crt {pem}" in (out / "haproxy.cfg").read_text()


# --------------------------------------------------------------------------- Traefik


def test_traefik_middlewares_and_routers(runner: CliRunner, site: Path) -> None:
    """forwardAuth to forward-auth with the identity headers; strip runs first on both routers."""
    text = dropin(runner, site, "traefik")
    assert "address: 'http://127.0.0.1:9191/api/authz/forward-auth'" in text
    # false: authctl's X-Forwarded-* come from the routed request (was true: smuggling review)
    assert "trustForwardHeader: false" in text
    assert "trustForwardHeader: true" not in text
    assert "authResponseHeaders: [Remote-User, Remote-Groups, Remote-Name, Remote-Email]" in text
    assert 'customRequestHeaders: {Remote-User: "", Remote-Groups: ""' in text
    assert 'Remote_User: ""' in text
    assert "middlewares: [authctl-strip, authctl]" in text
    assert "middlewares: [authctl-strip]" in text
    # the client's X-Original-* and Forwarded are deleted; Traefik's own X-Forwarded-Host kept
    for name in ("X-Original-URL", "X-Original-Method", "X-Forwarded-Uri", "Forwarded"):
        assert f'{name}: ""' in text, name
    assert 'X-Forwarded-Host: ""' not in text
    assert "rule: 'Host(`app.example.com`) || Host(`public.example.com`)'" in text
    assert "rule: 'Host(`auth.example.com`)'" in text
    assert "traefik.http.middlewares.authctl.forwardAuth.address=" in text  # labels, as comments


def test_traefik_wildcard_and_static(runner: CliRunner, site: Path, tmp_path: Path) -> None:
    """A wildcard host becomes a HostRegexp; the static file points at the dynamic one."""
    code, out, _ = snippet(runner, site, "traefik", "--listen", "127.0.0.1:8443")
    assert code == 0
    assert r"HostRegexp(`^[a-z0-9-]+\.example\.com$`)" in out
    target = tmp_path / "t"
    assert snippet(runner, site, "traefik", *COMMON, "--out", str(target))[0] == 0
    static = (target / "traefik.yml").read_text()
    assert f"filename: '{target}/traefik-dynamic.yml'" in static
    assert "address: '127.0.0.1:8443'" in static


# --------------------------------------------------------------------------- Envoy


def test_envoy_filters_in_order(runner: CliRunner, site: Path) -> None:
    """header_mutation removes Remote-* before ext_authz, which asks ext-authz with the cookie."""
    text = dropin(runner, site, "envoy")
    mutation = text.index("envoy.filters.http.header_mutation\n")
    ext_authz = text.index("- name: envoy.filters.http.ext_authz\n")
    router = text.index("- name: envoy.filters.http.router\n")
    assert mutation < ext_authz < router
    for name in IDENTITY:
        assert f"- remove: {name.lower()}" in text[mutation:ext_authz]
    for line in (
        "path_prefix: /api/authz/ext-authz",
        "failure_mode_allow: false",
        "- {exact: cookie}",
        "- {exact: authorization}",
        "patterns: [{prefix: remote-}]",
        "headers_with_underscores_action: DROP_HEADER",
        "disabled: true",
        '- {key: X-Forwarded-Proto, value: "%REQ(:SCHEME)%"}',
    ):
        assert line in text, line
    assert '"app.example.com", "app.example.com:8443"' in text
