"""A real relying party nobody here wrote: Apache httpd with mod_auth_openidc (Debian)
protects a page; Chromium (Playwright) opens it, is sent to authctl's portal behind nginx,
signs in, consents on /consent and lands on the page as the user, with the right claims
(SPEC §7.3, §7.8).

Apache fetches discovery, JWKS and tokens from ``https://auth.example.test:PORT`` and
checks TLS against the stack's CA (``OIDCSSLValidateServer On`` + ``OIDCCABundlePath``). It
cannot resolve ``*.example.test`` (no /etc/hosts edits), so its outgoing calls go through
``OIDCOutgoingProxy``: a small CONNECT proxy here that sends ``*.example.test`` to 127.0.0.1
(TLS stays end to end, the hostname is verified). The protected page is a CGI script that
echoes the ``OIDC_CLAIM_*`` variables mod_auth_openidc sets.
"""

from __future__ import annotations

import json
import secrets
import select
import shutil
import socket
import tempfile
import threading
import typing as t
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apphelpers import CHEAP
from tests.e2e.conftest import CONFIG
from tests.e2e.conftest import Proc
from tests.e2e.conftest import Stack
from tests.e2e.conftest import build_stack
from tests.e2e.conftest import free_port
from tests.e2e.conftest import port_open
from tests.e2e.conftest import wait_until
from tests.e2e.test_browser import browser  # noqa: F401 - fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]

APACHE = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
KEY = Path(__file__).resolve().parent.parent / "data" / "oidc-rs256.pem"
SECRET = "apache-" + secrets.token_urlsafe(24)

OIDC = """
[[access_control.rules]]
domain = "rp.example.test"
policy = "bypass"

[identity_providers.oidc]
enable = true
issuer_private_key_file = "{key}"

[[identity_providers.oidc.clients]]
client_id = "apache"
client_name = "Apache Test Page"
client_secret = "{secret_hash}"
redirect_uris = ["https://rp.example.test:{rp_port}/protected/redirect_uri"]
scopes = ["openid", "profile", "email", "groups"]
authorization_policy = "one_factor"
consent_mode = "explicit"
"""

HTTPD_CONF = """\
ServerRoot "{dir}"
ServerName rp.example.test
Listen 127.0.0.1:{port}
PidFile "{dir}/httpd.pid"
DefaultRuntimeDir "{dir}"
ErrorLog "{dir}/error.log"
LogLevel warn auth_openidc:info
User nobody
Group nogroup
LoadModule mpm_prefork_module {mods}/mod_mpm_prefork.so
LoadModule authn_core_module {mods}/mod_authn_core.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authz_user_module {mods}/mod_authz_user.so
LoadModule alias_module {mods}/mod_alias.so
LoadModule cgi_module {mods}/mod_cgi.so
LoadModule ssl_module {mods}/mod_ssl.so
LoadModule socache_shmcb_module {mods}/mod_socache_shmcb.so
LoadModule auth_openidc_module {mods}/mod_auth_openidc.so
StartServers 2
SSLEngine on
SSLCertificateFile "{cert}"
SSLCertificateKeyFile "{key}"
SSLSessionCache "shmcb:{dir}/ssl_cache(51200)"

OIDCProviderMetadataURL https://auth.example.test:{proxy_port}/.well-known/openid-configuration
OIDCSSLValidateServer On
OIDCCABundlePath "{ca}"
OIDCOutgoingProxy 127.0.0.1:{connect_port}
OIDCClientID apache
OIDCClientSecret "{secret}"
OIDCRedirectURI https://rp.example.test:{port}/protected/redirect_uri
OIDCCryptoPassphrase "{passphrase}"
OIDCScope "openid profile email groups"
OIDCPKCEMethod S256
OIDCRemoteUserClaim preferred_username
OIDCPassClaimsAs environment

ScriptAlias /protected/ "{dir}/cgi/"
<Location /protected/>
    AuthType openid-connect
    Require valid-user
</Location>
"""

ECHO_CGI = """\
#!/usr/bin/env python3
import json, os
claims = {k: v for k, v in os.environ.items() if k.startswith("OIDC_CLAIM_")}
claims["REMOTE_USER"] = os.environ.get("REMOTE_USER", "")
print("Content-Type: application/json")
print()
print(json.dumps(claims, sort_keys=True))
"""


class ConnectProxy:
    """A CONNECT-only HTTP proxy that sends ``*.example.test:PORT`` to 127.0.0.1:PORT."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 8192:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            host, _, port = target.rpartition(":")
            if method != "CONNECT" or not host.endswith(".example.test") or not port.isdigit():
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
            except OSError:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                pair = [conn, upstream]
                while not self.stop.is_set():
                    ready, _, _ = select.select(pair, [], [], 1.0)
                    for side in ready:
                        data = side.recv(65536)
                        if not data:
                            return
                        (upstream if side is conn else conn).sendall(data)

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture(scope="module")
def oidc_stack(tmp_path_factory: pytest.TempPathFactory, echo_port: int) -> Iterator[Stack]:
    """nginx + authctl with the provider on, and Apache's port chosen in advance."""
    from server.core.passwords import PasswordHasher

    base = tmp_path_factory.mktemp("oidc")
    key = base / "oidc.pem"
    key.write_bytes(KEY.read_bytes())
    key.chmod(0o600)
    rp_port = free_port()
    extra = (
        OIDC.format(key=key, secret_hash=PasswordHasher(CHEAP).hash(SECRET), rp_port=rp_port)
        .replace("{", "{{")
        .replace("}", "}}")
    )
    stack = build_stack("nginx", base / "nginx", echo_port, config=CONFIG + extra)
    stack.rp_port = rp_port  # type: ignore[attr-defined]
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def apache(oidc_stack: Stack) -> Iterator[int]:
    """Apache httpd with mod_auth_openidc in front of the echo CGI, on its own port."""
    if not Path(APACHE).is_file() or not Path(f"{MODULES}/mod_auth_openidc.so").is_file():
        pytest.fail(
            "apache2 / libapache2-mod-auth-openidc missing: run scripts/install-e2e-deps.sh"
        )
    proxy = ConnectProxy()
    # a folder the unprivileged Apache children can read (pytest's tmp folders are 0700)
    folder = Path(tempfile.mkdtemp(prefix="authctl-apache-"))
    folder.chmod(0o755)
    (folder / "cgi").mkdir(mode=0o755)
    script = folder / "cgi" / "echo"
    script.write_text(ECHO_CGI)
    script.chmod(0o755)
    port = int(oidc_stack.rp_port)  # type: ignore[attr-defined]
    certs = oidc_stack.folder / "certs"
    for name in ("cert.pem", "key.pem", "ca.pem"):
        shutil.copy(certs / name, folder / name)
    (folder / "ca.pem").chmod(0o644)  # read by the children (as nobody) for every TLS call
    (folder / "httpd.conf").write_text(
        HTTPD_CONF.format(
            dir=folder,
            port=port,
            mods=MODULES,
            cert=folder / "cert.pem",
            key=folder / "key.pem",
            ca=folder / "ca.pem",
            proxy_port=oidc_stack.proxy_port,
            connect_port=proxy.port,
            secret=SECRET,
            passphrase=secrets.token_hex(16),
        )
    )
    proc = Proc(
        "apache", [APACHE, "-f", str(folder / "httpd.conf"), "-DFOREGROUND"], folder / "out.log"
    ).start()
    try:
        wait_until("apache", lambda: port_open(port), proc)
        yield port
    finally:
        proc.stop()
        proxy.close()
        for log in ("error.log", "out.log"):
            if (folder / log).exists():
                print(f"--- apache {log}\n" + (folder / log).read_text()[-4000:])
        shutil.rmtree(folder, ignore_errors=True)


def test_apache_mod_auth_openidc_signs_in_through_the_portal(
    oidc_stack: Stack,
    apache: int,
    browser: t.Any,  # noqa: F811 - the fixture
) -> None:
    """Chromium: protected page -> portal sign-in -> consent -> the page, as bob, with his
    claims, the ID token checked by mod_auth_openidc against authctl's JWKS."""
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        target = f"https://rp.example.test:{apache}/protected/echo"
        page.goto(target)
        page.wait_for_url(f"{oidc_stack.url('auth')}?rd=*")
        page.wait_for_selector("#username", state="visible")
        page.fill("#username", "bob")
        page.fill("#password", "bob-password")
        page.click("#sign-in")
        page.wait_for_url(f"{oidc_stack.url('auth', '/consent')}?flow=*")
        page.wait_for_selector("#consent-accept", state="visible")
        assert page.text_content("#client-name") == "Apache Test Page"
        assert "email" in (page.text_content("#scope-list") or "")
        page.click("#consent-accept")
        page.wait_for_url(target)
        claims = json.loads(page.text_content("body") or "{}")
        assert claims["REMOTE_USER"] == "bob", claims
        assert claims["OIDC_CLAIM_preferred_username"] == "bob"
        assert claims["OIDC_CLAIM_email"] == "bob@example.com"
        assert claims["OIDC_CLAIM_name"] == "Bob"
        assert claims["OIDC_CLAIM_groups"] == "dev"
        assert claims["OIDC_CLAIM_iss"] == oidc_stack.url("auth").rstrip("/")
        assert claims["OIDC_CLAIM_aud"] == "apache"
        assert claims["OIDC_CLAIM_amr"] == "pwd"
        assert claims["OIDC_CLAIM_sub"] not in ("", "bob")
    finally:
        context.close()


def test_apache_refuses_a_denied_consent(
    oidc_stack: Stack,
    apache: int,
    browser: t.Any,  # noqa: F811 - the fixture
) -> None:
    """Deny on /consent: the browser goes back to Apache with access_denied, no page."""
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(20_000)
    page = context.new_page()
    try:
        page.goto(f"https://rp.example.test:{apache}/protected/echo")
        page.wait_for_selector("#username", state="visible")
        page.fill("#username", "alice")
        page.fill("#password", "alice-password")
        page.click("#sign-in")
        page.wait_for_selector("#consent-deny", state="visible")
        with page.expect_response(lambda r: "/protected/redirect_uri" in r.url) as info:
            page.click("#consent-deny")
        assert "error=access_denied" in info.value.url
        answer = info.value  # mod_auth_openidc's own error page for the denial
        body = answer.text()
        # mod_auth_openidc names the error, or (when the browser re-sends the callback after
        # it consumed the state cookie) that it cannot use the callback: an error page either
        # way, never the protected page, which echoes the claims
        assert "<title>Error</title>" in body, (answer.status, body[:300])
        assert "OIDC_CLAIM" not in body
    finally:
        context.close()
