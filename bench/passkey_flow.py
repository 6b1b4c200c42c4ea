"""Passkey sign-in under load (SPEC §7.7: each request under 50 ms p99 at 10 concurrent
clients). Starts its own ``authctl serve``, enrols one passkey for each of ``--clients`` users
directly in storage (``Storage.add_webauthn_credential``: no mailed code, no browser), then
each client thread, as its own user (regulation lets only ``max_retries`` attempts of one user
be in flight), repeats a whole passkey sign-in for ``--seconds``: ``GET
/api/firstfactor/passkey`` (request options and the challenge cookie) and ``POST
/api/firstfactor/passkey`` with an assertion signed by ``tests/soft_authenticator.py``'s
``SoftAuthenticator(counter=False)`` (real P-256 signatures; signing is not timed). Prints one
JSON line: sign-ins, errors and p50/p99 in ms per request and overall.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import sys
import tempfile
import time
import typing as t
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from flow_load import HEADERS  # noqa: E402 - after the path is set
from flow_load import Flow  # noqa: E402
from flow_load import drive  # noqa: E402
from flow_load import free_port  # noqa: E402
from flow_load import report  # noqa: E402
from flow_load import serving  # noqa: E402

ORIGIN = "https://auth.example.com"
PATH = "/api/firstfactor/passkey"
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
[webauthn]
passkey_login = true
"""


def site(folder: Path, port: int, users: list[str]) -> Path:
    """A config folder whose users each have a cheap password hash (never used here)."""
    from server.core.config import PasswordHashConfig
    from server.core.passwords import PasswordHasher

    (folder / "secrets").mkdir(mode=0o700)
    key = folder / "secrets" / "storage.key"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    phc = PasswordHasher(PasswordHashConfig(memory_kib=8, iterations=1, parallelism=1)).hash(
        secrets.token_urlsafe(16)
    )
    (folder / "users.toml").write_text(
        "".join(f'[users.{name}]\ndisplayname = "{name}"\npassword = "{phc}"\n' for name in users)
    )
    (folder / "users.toml").chmod(0o600)
    config = folder / "authctl.toml"
    config.write_text(CONFIG.format(port=port))
    return config


def enrol(config: Path, users: list[str]) -> dict[str, t.Any]:
    """One passkey per user, stored as a registration would store it; user -> authenticator."""
    from server.core.config import load_config
    from server.core.storage import Storage
    from server.core.storage import WebAuthnCredential
    from tests.soft_authenticator import SoftAuthenticator
    from tests.soft_authenticator import b64url
    from tests.soft_authenticator import cose_key

    storage = Storage(load_config(config).storage)
    out: dict[str, t.Any] = {}
    try:
        for name in users:
            auth = SoftAuthenticator(ORIGIN, counter=False)
            handle = b64url(secrets.token_bytes(32))
            auth.create({"rp": {"id": "auth.example.com"}, "user": {"id": handle}, "challenge": ""})
            (cred,) = auth.credentials.values()
            assert storage.add_webauthn_credential(
                WebAuthnCredential(
                    id=secrets.token_urlsafe(16),
                    username=name,
                    credential_id=cred.credential_id,
                    public_key=cose_key(cred.private_key.public_key()),
                    sign_count=0,
                    aaguid="00000000-0000-0000-0000-000000000000",
                    transports=("internal",),
                    backup_eligible=False,
                    backup_state=False,
                    discoverable=True,
                    description="bench",
                    attestation_type="none",
                    created_at=time.time(),
                    last_used_at=None,
                )
            )
            out[name] = auth
    finally:
        storage.close()
    return out


def sign_in(conn: http.client.HTTPConnection, auth: t.Any, out: dict[str, list[float]]) -> int:
    """One passkey sign-in; 200, or the status of the request that failed."""
    t0 = time.perf_counter()
    conn.request("GET", PATH, headers=HEADERS)
    resp = conn.getresponse()
    body = resp.read()
    t1 = time.perf_counter()
    if resp.status != 200:
        return resp.status
    nonce = (resp.getheader("Set-Cookie") or "").split(";", 1)[0]
    response = auth.get(json.loads(body)["data"]["publicKey"])
    payload = json.dumps({"response": response, "keepMeLoggedIn": False}).encode()
    headers = {**HEADERS, "Origin": ORIGIN, "Content-Type": "application/json", "Cookie": nonce}
    t2 = time.perf_counter()
    conn.request("POST", PATH, body=payload, headers=headers)
    resp = conn.getresponse()
    resp.read()
    t3 = time.perf_counter()
    if resp.status != 200 or "authctl_session=" not in (resp.getheader("Set-Cookie") or ""):
        return resp.status
    out["options"].append((t1 - t0) * 1000)
    out["assertion"].append((t3 - t2) * 1000)
    return 200


def flow(auth: t.Any, out: dict[str, list[float]]) -> Flow:
    """Passkey sign-ins with ``auth``'s credential, one per call."""
    return lambda conn: sign_in(conn, auth, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=10)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="authctl-passkey-bench-"))
    port = free_port()
    users = [f"bench{n}" for n in range(args.clients)]
    config = site(folder, port, users)
    authenticators = enrol(config, users)
    out: dict[str, list[float]] = {"options": [], "assertion": []}
    with serving(folder, config, port):
        errors = drive(port, [flow(authenticators[u], out) for u in users], args.seconds)
    report(args.clients, ("signins", len(out["assertion"])), errors, out)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
