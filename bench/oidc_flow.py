"""The OIDC code flow under load (SPEC §7.7: each request under 50 ms p99 at 10 concurrent
clients). Starts its own ``authctl serve`` with the provider on, signs alice in once, then
``--clients`` threads each repeat the whole flow for ``--seconds``: the authorization request
(302 with a code), the token exchange (client_secret_basic, a secret hashed with
``authctl oidc client new``'s parameters; successes are cached), and userinfo. Prints one
JSON line: requests, errors and p50/p99 in ms per endpoint and overall.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs
from urllib.parse import urlencode
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flow_load import HEADERS  # noqa: E402 - after the path is set
from flow_load import Flow  # noqa: E402
from flow_load import drive  # noqa: E402
from flow_load import free_port  # noqa: E402
from flow_load import report  # noqa: E402
from flow_load import serving  # noqa: E402

PASSWORD = "correct horse battery staple"
SECRET = "bench-secret-" + "x" * 32
CB = "https://app.example.com/cb"
CONFIG = """\
[server]
address = "127.0.0.1:{port}"
threads = 4
[users]
file = "users.toml"
watch = false
[storage]
path = "authctl.db"
encryption_key_file = "secrets/storage.key"
[session]
store = "sqlite"
[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"
[access_control]
default_policy = "one_factor"
[identity_providers.oidc]
enable = true
issuer_private_key_file = "secrets/oidc.pem"
[[identity_providers.oidc.clients]]
client_id = "bench"
client_secret = "{secret_hash}"
redirect_uris = ["{cb}"]
authorization_policy = "one_factor"
consent_mode = "implicit"
"""


def site(folder: Path, port: int) -> Path:
    from authctl.cmd_oidc import SECRET_HASH
    from server.core.config import PasswordHashConfig
    from server.core.oidc.keys import generate_pem
    from server.core.passwords import PasswordHasher

    (folder / "secrets").mkdir(mode=0o700)
    (folder / "secrets" / "storage.key").write_text(secrets.token_hex(32))
    (folder / "secrets" / "oidc.pem").write_bytes(generate_pem(2048))
    for name in ("storage.key", "oidc.pem"):
        (folder / "secrets" / name).chmod(0o600)
    phc = PasswordHasher(PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1)).hash(
        PASSWORD
    )
    (folder / "users.toml").write_text(
        f'[users.alice]\ndisplayname = "Alice"\npassword = "{phc}"\n'
        'email = "alice@example.com"\ngroups = ["dev"]\n'
    )
    (folder / "users.toml").chmod(0o600)
    secret_hash = PasswordHasher(PasswordHashConfig(**SECRET_HASH)).hash(SECRET)
    config = folder / "authctl.toml"
    config.write_text(CONFIG.format(port=port, secret_hash=secret_hash, cb=CB))
    return config


def request(
    conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str],
    body: bytes | None = None,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    conn.request(method, path, body=body, headers={**HEADERS, **headers})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def login(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    body = json.dumps({"username": "alice", "password": PASSWORD}).encode()
    headers = {"Content-Type": "application/json", "Origin": "https://auth.example.com"}
    status, hdrs, data = request(conn, "POST", "/api/firstfactor", headers, body)
    if status != 200:
        raise SystemExit(f"login failed: {status} {data!r}")
    return hdrs["set-cookie"].split(";", 1)[0]


def flow(cookie: str, out: dict[str, list[float]]) -> Flow:
    """One whole code flow (authorize, token, userinfo) as alice, timed per request."""
    auth = "Basic " + base64.b64encode(f"bench:{SECRET}".encode()).decode()

    def run(conn: http.client.HTTPConnection) -> int:
        query = urlencode({
            "response_type": "code", "client_id": "bench", "redirect_uri": CB,
            "scope": "openid profile email", "state": "s", "nonce": "n",
        })  # fmt: skip
        t0 = time.perf_counter()
        status, hdrs, _ = request(
            conn, "GET", f"/api/oidc/authorization?{query}", {"Cookie": cookie}
        )
        t1 = time.perf_counter()
        code = parse_qs(urlsplit(hdrs.get("location", "")).query).get("code", [""])[0]
        if status != 302 or not code:
            return status
        form = urlencode({"grant_type": "authorization_code", "code": code, "redirect_uri": CB})
        status, _, body = request(
            conn, "POST", "/api/oidc/token",
            {"Authorization": auth, "Content-Type": "application/x-www-form-urlencoded"},
            form.encode(),
        )  # fmt: skip
        t2 = time.perf_counter()
        if status != 200:
            return status
        access = json.loads(body)["access_token"]
        status, _, _ = request(
            conn, "GET", "/api/oidc/userinfo", {"Authorization": f"Bearer {access}"}
        )
        t3 = time.perf_counter()
        if status != 200:
            return status
        out["authorization"].append((t1 - t0) * 1000)
        out["token"].append((t2 - t1) * 1000)
        out["userinfo"].append((t3 - t2) * 1000)
        return 200

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="authctl-oidc-bench-"))
    port = free_port()
    config = site(folder, port)
    out: dict[str, list[float]] = {"authorization": [], "token": [], "userinfo": []}
    with serving(folder, config, port):
        cookie = login(port)
        errors = drive(port, [flow(cookie, out)] * args.clients, args.seconds)
    report(args.clients, ("flows", len(out["token"])), errors, out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
