"""Build an in-process authctl app with real collaborators, a fake clock and cheap hashes."""

from __future__ import annotations

import json
import secrets
import typing as t
from dataclasses import dataclass
from pathlib import Path

from webob import Request

from server.core.config import Config
from server.core.config import PasswordHashConfig
from server.core.config import load_config
from server.core.passwords import PasswordHasher
from server.core.session_store import MemoryStore
from server.core.session_store import SessionStore
from server.core.users import UsersSource
from server.web.app import App
from server.web.app import make_app

CHEAP = PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1)
PASSWORDS = {"alice": "alice-password", "bob": "bob-password", "carol": "carol-password"}

#: The catalogue fixture of security.md §2, in authctl's config format.
APP_CONFIG = """\
[server]
trusted_proxies = ["127.0.0.1/32", "::1/128"]

[users]
file = "users.toml"
password_hash = { memory_kib = 8, iterations = 1, parallelism = 1 }

[session]
store = "memory"
expiration = "1h"
inactivity = "5m"
remember_me = "1M"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"
default_redirect_url = "https://www.example.com"

[[session.cookies]]
domain = "example.org"
portal_url = "https://login.example.org"

[access_control]
default_policy = "deny"

[[access_control.rules]]
domain = "public.example.com"
policy = "bypass"

[[access_control.rules]]
domain = "app.example.com"
resources = ["^/public/"]
policy = "bypass"

[[access_control.rules]]
domain = "app.example.com"
resources = ["^/admin"]
subject = ["group:admins"]
policy = "two_factor"

[[access_control.rules]]
domain = "app.example.com"
policy = "one_factor"

[[access_control.rules]]
domain = "*.example.com"
networks = ["10.0.0.0/8"]
policy = "bypass"

[[access_control.rules]]
domain = "secure.example.com"
policy = "two_factor"

[[access_control.rules]]
domain = "private.example.com"
subject = ["user:alice"]
policy = "one_factor"

[[access_control.rules]]
domain = "private.example.com"
policy = "deny"

[[access_control.rules]]
domain = "*.example.org"
policy = "one_factor"
"""


def users_toml(hasher: PasswordHasher) -> str:
    """alice (admins, dev), bob (dev), carol (disabled)."""
    return f"""\
[users.alice]
displayname = "Alice Liddell"
password = "{hasher.hash(PASSWORDS["alice"])}"
email = "alice@example.com"
groups = ["admins", "dev"]

[users.bob]
displayname = "Bob"
password = "{hasher.hash(PASSWORDS["bob"])}"
email = "bob@example.com"
groups = ["dev"]

[users.carol]
displayname = "Carol"
password = "{hasher.hash(PASSWORDS["carol"])}"
email = "carol@example.com"
groups = ["admins"]
disabled = true
"""


@dataclass
class Harness:
    """An app plus the handles tests need to poke at it."""

    app: App
    config: Config
    users: UsersSource
    store: SessionStore
    clock: t.Any
    hasher: PasswordHasher

    # ------------------------------------------------------------------ requests

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        peer: str = "127.0.0.1",
        body: bytes | None = None,
    ) -> t.Any:
        req = Request.blank(path, method=method, headers=headers or {})
        req.environ["REMOTE_ADDR"] = peer
        if body is not None:
            req.body = body
        return req.get_response(self.app)

    def forward_auth(
        self,
        url: str,
        *,
        method: str = "GET",
        cookie: str | None = None,
        extra: dict[str, str] | None = None,
        peer: str = "127.0.0.1",
    ) -> t.Any:
        scheme, _, rest = url.partition("://")
        host, slash, uri = rest.partition("/")
        headers = {
            "X-Forwarded-Proto": scheme,
            "X-Forwarded-Host": host,
            "X-Forwarded-Uri": slash + uri,
            "X-Forwarded-Method": method,
            "Accept": "text/html,application/xhtml+xml",
        }
        if cookie:
            headers["Cookie"] = cookie
        headers.update(extra or {})
        return self.request("/api/authz/forward-auth", headers=headers, peer=peer)

    def api(
        self,
        path: str,
        payload: object = None,
        *,
        method: str = "POST",
        host: str = "auth.example.com",
        cookie: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> t.Any:
        all_headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": host,
            "Origin": f"https://{host}",
        }
        if payload is not None:
            all_headers["Content-Type"] = "application/json"
        if cookie:
            all_headers["Cookie"] = cookie
        all_headers.update(headers or {})
        body = json.dumps(payload).encode() if payload is not None else None
        return self.request(path, method=method, headers=all_headers, body=body)

    def login(
        self, username: str = "alice", *, remember: bool = False, host: str = "auth.example.com"
    ) -> str:
        """Sign in through the portal API and return the ``Cookie`` header to send."""
        resp = self.api(
            "/api/firstfactor",
            {
                "username": username,
                "password": PASSWORDS[username],
                "keepMeLoggedIn": remember,
            },
            host=host,
        )
        assert resp.status_int == 200, resp.text
        value = resp.headers["Set-Cookie"].split(";", 1)[0]
        return value

    def rewrite_users(self, text: str) -> None:
        """Replace the users file and make the source see it now."""
        self.config.users.file.write_text(text, encoding="utf-8")
        self.users.reload()


def build(
    tmp_path: Path,
    clock: t.Any,
    config_text: str = APP_CONFIG,
    *,
    store: SessionStore | None = None,
    users_interval: float = 0.0,
) -> Harness:
    """A harness over a fresh folder holding the config and users file.

    ``users_interval`` 0 re-checks the users file on every request (edits are seen at once);
    ``store`` replaces the memory store.
    """
    hasher = PasswordHasher(CHEAP)
    (tmp_path / "authctl.toml").write_text(config_text, encoding="utf-8")
    (tmp_path / "users.toml").write_text(users_toml(hasher), encoding="utf-8")
    (tmp_path / "secrets").mkdir(exist_ok=True)
    (tmp_path / "secrets" / "storage.key").write_text(secrets.token_hex(32) + "\n")
    (tmp_path / "secrets" / "storage.key").chmod(0o600)
    config = load_config(tmp_path / "authctl.toml")
    users = UsersSource(config.users.file, interval=users_interval)
    if store is None:
        store = MemoryStore()
    app = make_app(config, now=clock, store=store, users=users, hasher=hasher)
    return Harness(app, config, users, store, clock, hasher)
