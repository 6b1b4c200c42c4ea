"""Tests for ``authctl import authelia`` (SPEC §7.5): Authelia's own configuration template and
realistic configs become an authctl folder that loads with authctl's loaders, gives Authelia's
decisions in ``rules test``, keeps secrets out of authctl.toml and the output, and never
overwrites anything."""

from __future__ import annotations

import base64
import json
import sqlite3
import typing as t
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl.cli import cli
from server.core.authelia_import import AutheliaInputError
from server.core.authelia_import import Report
from server.core.authelia_import import convert_config
from server.core.authelia_import import convert_users
from server.core.authelia_import import load_yaml
from server.core.authelia_import import parse_totp_export
from server.core.authelia_import import parse_webauthn_export
from server.core.authelia_import.durations import parse_authelia_duration
from server.core.config import load_config
from server.core.passwords import PasswordHasher
from server.core.passwords import check_hash
from server.core.storage import Storage
from server.core.users import load_users

DATA = Path(__file__).parent / "data" / "authelia"
TEMPLATE = DATA / "config.template.yml"
REALISTIC = DATA / "realistic.yml"
USERS = DATA / "users_database.yml"
CASES = DATA / "realistic_cases.toml"
LEAK = "do-not-leak"
ARGON = load_yaml(USERS.read_text())["users"]["alice"]["password"]


def run(runner: CliRunner, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(cli, ["import", "authelia", *args], env=env)
    return result.exit_code, result.output


def imported(runner: CliRunner, out: Path, config: Path, *extra: str) -> dict[str, list[t.Any]]:
    code, output = run(runner, "--config", str(config), "--out", str(out), "--json", *extra)
    assert code == 0, output
    report: dict[str, list[t.Any]] = json.loads(output)
    return report


def keys(report: dict[str, list[t.Any]], part: str) -> set[str]:
    return {entry["key"] for entry in report[part]}


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


BASE = """
session:
  cookies:
    - domain: 'example.com'
      authelia_url: 'https://auth.example.com'
access_control:
  default_policy: 'one_factor'
"""


# --------------------------------------------------------------------------- Authelia's template


def test_authelia_template_imports_and_loads(runner: CliRunner, tmp_path: Path) -> None:
    """Authelia's own template (only secrets set) gives a folder authctl loads, placeholders
    reported; its secrets are dropped, not copied."""
    out = tmp_path / "out"
    report = imported(runner, out, TEMPLATE)
    config = load_config(out / "authctl.toml")
    assert config.session.cookies[0].domain == "example.com"
    assert {"session.cookies", "access_control", "server"} <= keys(report, "attention")
    assert {"session.secret", "identity_validation"} <= keys(report, "dropped")
    text = (out / "authctl.toml").read_text()
    for secret in ("insecure_session_secret", "a_very_important_secret"):
        assert secret not in text
        assert secret not in json.dumps(report)
    assert len(load_users(out / "users.toml")) == 0
    assert (out / "secrets" / "storage.key").stat().st_mode & 0o777 == 0o600
    assert (out / "certs" / "cert.pem").exists()


# --------------------------------------------------------------------------- realistic config


def test_realistic_config_maps_every_section(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = imported(runner, out, REALISTIC, "--users", str(USERS))
    config = load_config(out / "authctl.toml")
    assert config.server.port == 9091
    assert config.server.host == "0.0.0.0"  # noqa: S104
    assert config.log.level == "warning"
    assert config.log.format == "json"
    assert (config.totp.issuer, config.totp.algorithm, config.totp.digits) == (
        "example.com",
        "SHA256",
        8,
    )
    assert (config.regulation.max_retries, config.regulation.find_time) == (5, 600)
    assert config.regulation.ban_time == 3600
    assert config.regulation.modes == ("user", "ip")
    s = config.session
    assert (s.name, s.expiration, s.remember_me) == ("example_session", 7200, 7 * 86400)
    assert s.inactivity == 600, "the strictest of the cookie domains' values"
    assert [c.domain for c in s.cookies] == ["example.com", "example.org"]
    assert s.cookies[0].portal_url == "https://auth.example.com"
    assert s.cookies[0].default_redirect_url == "https://www.example.com"
    assert s.cookies[1].portal_url == "https://login.example.org"
    assert s.store == "redis"
    assert s.redis_url == "redis://authelia@redis-sentinel-0.example.com:26379/2"
    assert s.redis_password_file == out / "secrets" / "redis.password"
    assert s.redis_sentinel is not None
    assert s.redis_sentinel.master_name == "mymaster"
    assert s.redis_sentinel.nodes == (
        ("redis-sentinel-0.example.com", 26379),
        ("redis-sentinel-1.example.com", 26379),
        ("redis-sentinel-2.example.com", 26380),
    )
    pg = config.storage.postgres
    assert config.storage.backend == "postgres"
    assert pg is not None
    assert pg.dsn.startswith("postgresql://authelia@db1.example.com:5432,db2.example.com:5433/")
    assert "target_session_attrs=read-write" in pg.dsn
    assert "sslmode=verify-full" in pg.dsn
    assert "search_path" in pg.dsn
    assert pg.timeout == 7
    assert pg.password_file == out / "secrets" / "postgres.password"
    smtp = config.notifier.smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.starttls) == (
        "smtp.example.com",
        587,
        True,
    )
    assert smtp.username == "mailer@example.com"
    assert smtp.startup_check is False
    assert config.password_policy.min_length == 12
    assert config.password_policy.max_length == 64
    ph = config.users.password_hash
    assert (ph.memory_kib, ph.iterations, ph.parallelism) == (32768, 2, 2)
    assert dict(config.access_control.networks)["office"][0].compressed == "203.0.113.0/24"
    assert len(config.access_control.rules) == 11
    attention = keys(report, "attention")
    assert {"duo_api", "identity_providers.oidc", "storage.postgres"} <= attention
    assert not {k for k in attention if k.startswith("webauthn")}
    oidc = next(a for a in report["attention"] if a["key"] == "identity_providers.oidc")
    assert "'grafana'" in oidc["reason"]
    assert "'nextcloud'" in oidc["reason"]
    w = config.webauthn
    assert (w.enable, w.display_name, w.passkey_login, w.passkey_uv_two_factor) == (
        True,
        "Example",
        True,
        False,  # Authelia's default: a passkey sign-in is one factor
    )
    assert {"webauthn.display_name", "webauthn.enable_passkey_login"} <= keys(report, "mapped")
    assert "definitions.user_attributes" in keys(report, "dropped")
    users = load_users(out / "users.toml")
    assert sorted(u.name for u in users.values()) == ["alice", "bob", "carol"]
    alice = users["alice"]
    assert (alice.displayname, alice.email, alice.groups) == (
        "Alice Liddell",
        "alice@example.com",
        ("admins", "staff"),
    )
    assert alice.password == ARGON, "the hash is copied verbatim"
    assert users["bob"].disabled
    assert users["bob"].groups == ("ops",)
    assert "users_database.users.Bob" in attention


def test_rules_test_gives_authelias_decisions(runner: CliRunner, tmp_path: Path) -> None:
    """The cases written from Authelia's semantics for realistic.yml (every criterion, named
    networks in both spellings, User named group, YAML 1.2 'on'/'yes') pass on the import."""
    out = tmp_path / "out"
    imported(runner, out, REALISTIC, "--users", str(USERS))
    result = runner.invoke(
        cli, ["--config", str(out / "authctl.toml"), "rules", "test", str(CASES), "--json"]
    )
    assert result.exit_code == 0, result.output
    verdict = json.loads(result.output)
    assert verdict["failed"] == 0
    assert verdict["passed"] == 27


def test_secrets_stay_out_of_config_and_output(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, table = run(runner, "--config", str(REALISTIC), "--users", str(USERS), "--out", str(out))
    assert code == 0, table
    assert LEAK not in table
    for name in ("authctl.toml", "users.toml"):
        assert LEAK not in (out / name).read_text()
    secrets = out / "secrets"
    assert secrets.stat().st_mode & 0o777 == 0o700
    expect = {
        "redis.password": "redis-password-do-not-leak\n",
        "postgres.password": "postgres-password-do-not-leak\n",
        "smtp.password": "smtp-password-do-not-leak\n",
    }
    for name, text in expect.items():
        assert (secrets / name).read_text() == text
        assert (secrets / name).stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in secrets.iterdir()) == sorted([*expect, "storage.key"])
    report = imported(runner, tmp_path / "again", REALISTIC, "--users", str(USERS))
    assert LEAK not in json.dumps(report)


def test_json_shape(runner: CliRunner, tmp_path: Path) -> None:
    report = imported(runner, tmp_path / "out", REALISTIC)
    assert set(report) == {"mapped", "dropped", "attention"}
    assert all(set(m) == {"key", "to"} for m in report["mapped"])
    for part in ("dropped", "attention"):
        assert report[part]
        assert all(set(n) == {"key", "reason"} for n in report[part])
    assert {"key": "session.redis.password", "to": "session.redis_password_file"} in (
        report["mapped"]
    )


def test_every_key_is_accounted_for() -> None:
    """Each leaf of the input is covered by a mapped, dropped or attention entry; a key
    Authelia does not have is dropped as such."""
    data = load_yaml(REALISTIC.read_text())
    data["made_up"] = {"key": 1}
    conversion = convert_config(data)
    from server.core.authelia_import.walk import leaves

    missing = [p for p in leaves(data) if not conversion.report.covers(p)]
    assert missing == []
    assert any(
        n.key == "made_up.key" and "not a key of Authelia" in n.reason
        for n in conversion.report.dropped
    )


# --------------------------------------------------------------------------- other forms


LEGACY = """
server:
  host: '127.0.0.1'
  port: 9092
default_redirection_url: 'https://home.example.net'
session:
  domain: 'example.net'
  expiration: 3600
  remember_me: -1
storage:
  encryption_key: 'k-do-not-leak-0123456789'
  local:
    path: '/config/db.sqlite3'
notifier:
  filesystem:
    filename: 'notifications.txt'
access_control:
  default_policy: 'deny'
  networks:
    - name: 'lan'
      networks: ['192.168.1.0/24']
    - name: 'my office'
      networks: '198.51.100.0/24'
  rules:
    - domain: 'app.example.net'
      networks: ['lan', 'my office']
      policy: 'one_factor'
"""


def test_legacy_session_domain_and_sqlite(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    report = imported(runner, out, write(tmp_path / "c.yml", LEGACY))
    config = load_config(out / "authctl.toml")
    assert config.server.address == "127.0.0.1:9092"
    cookie = config.session.cookies[0]
    assert cookie.domain == "example.net"
    assert cookie.portal_url == "https://auth.example.net"
    assert cookie.default_redirect_url == "https://home.example.net"
    assert config.session.remember_me == 0, "-1 disables remember-me in both"
    assert config.storage.backend == "sqlite"
    assert config.notifier.filesystem == out / "notifications.txt"
    assert {"session.cookies[0].portal_url", "storage.local.path"} <= keys(report, "attention")
    note = next(a for a in report["attention"] if a["key"] == "storage.local.path")
    assert "not converted" in note["reason"]
    rule = config.access_control.rules[0]
    assert [n.text for n in rule.networks] == ["lan", "198.51.100.0/24"], "odd name inlined"
    assert "k-do-not-leak" not in (out / "authctl.toml").read_text()


def test_yaml_1_2_keeps_yes_and_on_as_strings() -> None:
    data = load_yaml("a: yes\nb: on\nc: no\nd: off\ne: true\n")
    assert data == {"a": "yes", "b": "on", "c": "no", "d": "off", "e": True}
    conv = convert_config(load_yaml(BASE + "log:\n  level: on\nsession_x: 1\n"))
    assert any(n.key == "log.level" and "'on'" in n.reason for n in conv.report.attention)


def test_yaml_errors_name_the_line_and_hide_duplicate_values() -> None:
    with pytest.raises(AutheliaInputError) as caught:
        load_yaml("a: 1\nsecret: 'first-do-not-leak'\nsecret: 'second-do-not-leak'\n")
    assert ":3:" in str(caught.value)
    assert LEAK not in str(caught.value)


def test_env_secret_files_and_variables(runner: CliRunner, tmp_path: Path) -> None:
    text = BASE.replace(
        "access_control:", "  redis:\n    host: 'redis.example.com'\naccess_control:"
    )
    env = {
        "AUTHELIA_SESSION_REDIS_PASSWORD_FILE": "/run/secrets/redis",
        "AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET": "jwt-do-not-leak",
    }
    out = tmp_path / "out"
    code, output = run(
        runner, "--config", str(write(tmp_path / "c.yml", text)), "--out", str(out), "--json",
        env=env,
    )  # fmt: skip
    assert code == 0, output
    report = json.loads(output)
    config = load_config(out / "authctl.toml")
    assert config.session.redis_password_file == Path("/run/secrets/redis")
    assert "env:AUTHELIA_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET" in keys(report, "attention")
    assert LEAK not in output


def test_templates_are_not_guessed() -> None:
    conv = convert_config(load_yaml(BASE + "totp:\n  issuer: '{{ env \"ISSUER\" }}'\n"), env={})
    assert "issuer" not in conv.config.get("totp", {})
    assert any(n.key == "totp.issuer" and "template" in n.reason for n in conv.report.attention)


def test_a_rule_that_cannot_be_copied_fails_closed() -> None:
    text = (
        BASE.replace("default_policy: 'one_factor'", "default_policy: 'bypass'")
        + """
  rules:
    - domain: 'a.example.com'
      subject: 'oauth2:client:grafana'
      policy: 'one_factor'
    - domain: 'b.example.com'
      resources: ['^/(?=x)']
      policy: 'bypass'
    - domain: 'c.example.com'
      subject: ['oauth2:client:x', 'group:dev']
      policy: 'one_factor'
    - domain: '{{ env "HOST" }}'
      policy: 'deny'
    - domain: 'd.example.com'
      policy: 'bypass'
"""
    )
    conv = convert_config(load_yaml(text))
    rules = conv.config["access_control"]["rules"]
    assert rules[0] == {"domain": ["a.example.com"], "policy": "deny"}
    assert rules[1] == {"domain": ["b.example.com"], "policy": "deny"}
    assert rules[2]["subject"] == ["group:dev"]
    assert rules[2]["policy"] == "one_factor"
    assert len(rules) == 3, "rules after an unplaceable one are not written"
    assert conv.config["access_control"]["default_policy"] == "deny"
    assert "access_control.rules[4]" in {n.key for n in conv.report.dropped}


def test_server_addresses_and_smtp_tls() -> None:
    def listen(address: str) -> tuple[str | None, Report]:
        conv = convert_config(load_yaml(BASE + f"server:\n  address: '{address}'\n"))
        return conv.config.get("server", {}).get("address"), conv.report

    assert listen("tcp://:9091/")[0] == "0.0.0.0:9091"
    assert listen("tcp6://[::1]:9000")[0] == "[::1]:9000"
    assert listen("unix:///run/authelia.sock")[0] == "unix:/run/authelia.sock"
    assert listen("127.0.0.1:8080")[0] == "127.0.0.1:8080"
    address, report = listen("tcp://:9091/authelia")
    assert address == "0.0.0.0:9091"
    assert any("/authelia" in n.reason for n in report.attention)
    smtp = convert_config(
        load_yaml(BASE + "notifier:\n  smtp:\n    address: 'submissions://mail.example.com'\n"
                  "    sender: 'a@example.com'\n    username: 'u'\n")
    )  # fmt: skip
    out = smtp.config["notifier"]["smtp"]
    assert (out["port"], out["tls"], out["starttls"]) == (465, True, False)
    assert "username" not in out, "a username without its password would not load"


def test_hash_parameters_legacy_flat_form_and_other_algorithms() -> None:
    flat = "authentication_backend:\n  file:\n    password:\n      iterations: 1\n" \
        "      memory: 64\n      parallelism: 8\n"  # fmt: skip
    conv = convert_config(load_yaml(BASE + flat))
    assert conv.config["users"]["password_hash"] == {
        "memory_kib": 65536,
        "iterations": 1,
        "parallelism": 8,
    }, "Authelia < 4.36 wrote memory in MiB"
    other = convert_config(
        load_yaml(BASE + "authentication_backend:\n  file:\n    password:\n"
                  "      algorithm: 'sha2crypt'\n")
    )  # fmt: skip
    assert any("argon2id" in n.reason for n in other.report.attention)


def test_ldap_mysql_zxcvbn_need_attention() -> None:
    text = (
        BASE
        + """
authentication_backend:
  ldap:
    address: 'ldap://ldap'
    password: 'ldap-do-not-leak'
storage:
  mysql:
    address: 'tcp://db:3306'
    password: 'mysql-do-not-leak'
password_policy:
  zxcvbn:
    enabled: true
"""
    )
    report = convert_config(load_yaml(text)).report
    attention = {n.key for n in report.attention}
    assert {"authentication_backend.ldap", "storage.mysql", "password_policy.zxcvbn"} <= (attention)
    assert LEAK not in json.dumps(report.as_json())


def test_durations() -> None:
    assert parse_authelia_duration("1 hour and 30 minutes") == 5400
    assert parse_authelia_duration("1M") == 30 * 86400
    assert parse_authelia_duration(90) == 90
    assert parse_authelia_duration("-1") == -1
    assert parse_authelia_duration("500ms") == 1
    for bad in ("soon", "5 fortnights", True, 1.5):
        with pytest.raises(ValueError, match=r"duration|unit"):
            parse_authelia_duration(bad)


# --------------------------------------------------------------------------- users


def test_users_left_out_rather_than_half_written() -> None:
    report = Report()
    data = {
        "users": {
            "ok": {"password": ARGON, "groups": ["dev", "bad group"], "email": ["a@x.y", "b@x.y"]},
            "OK": {"password": ARGON},
            "no hash": {"password": ARGON},
            "plain": {"password": "hunter2"},
            "nohash": {"displayname": "x"},
        }
    }
    users = convert_users(data, report)
    assert list(users) == ["ok"]
    assert users["ok"]["groups"] == ["dev"]
    assert users["ok"]["email"] == "a@x.y"
    keys_ = {n.key for n in report.attention}
    assert {
        "users_database.users.OK",
        "users_database.users.no hash",
        "users_database.users.plain.password",
        "users_database.users.nohash",
        "users_database.users.ok.groups[1]",
    } <= keys_
    with pytest.raises(ValueError, match="'users' mapping"):
        convert_users({"users": []}, report)


LEGACY_HASHES = {
    # both of "password123"
    "bcrypt": "$2b$04$HI2WXre9rjpdUTNhZY7XBuUFOlQgEgLIfJE3bshZlP/zRhuJtf9Mu",
    "sha512crypt": "$6$fo/FoiA/Kt6Pslx4$dY8ZDrIYmx/CTZX5xhbnzh1NfoPkabCdxSpLVqWV7mgSXPlTN9OmDnY7w"
    "/CgkRsh7lOfD.1TDUB6tZxa/v0tM/",
}


@pytest.mark.parametrize("scheme", sorted(LEGACY_HASHES))
def test_legacy_hash_copied_when_authctl_verifies_it(
    runner: CliRunner, tmp_path: Path, scheme: str
) -> None:
    """A legacy hash is copied verbatim once authctl's users file accepts it (H-hashes'
    legacy_hashes.py), and the user is left out with a reason before that; the users file
    loads either way."""
    digest = LEGACY_HASHES[scheme]
    users = write(tmp_path / "u.yml", f"users:\n  dora:\n    password: '{digest}'\n")
    out = tmp_path / "out"
    report = imported(runner, out, write(tmp_path / "c.yml", BASE), "--users", str(users))
    db = load_users(out / "users.toml")
    if check_hash(digest) is None:
        assert db["dora"].password == digest
        hasher = PasswordHasher(load_config(out / "authctl.toml").users.password_hash)
        assert hasher.verify(db["dora"].password, "password123")
        assert not hasher.verify(db["dora"].password, "password124")
        assert hasher.needs_rehash(db["dora"].password), "argon2id at the next sign-in"
    else:
        assert "dora" not in db
        assert "users_database.users.dora.password" in keys(report, "attention")


# --------------------------------------------------------------------------- refusals, errors


def test_refuses_to_overwrite(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "users.toml").write_text("[users]\n")
    code, output = run(runner, "--config", str(REALISTIC), "--out", str(out))
    assert code == 3
    assert "never overwrites" in output
    assert sorted(p.name for p in out.iterdir()) == ["users.toml"]
    assert (out / "users.toml").read_text() == "[users]\n"


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("missing.yml", None),
        ("bad.yml", "session: [\n"),
        ("list.yml", "- a\n- b\n"),
        ("binary.yml", "\udcff"),
    ],
)
def test_unreadable_input_exits_3(
    runner: CliRunner, tmp_path: Path, name: str, text: str | None
) -> None:
    path = tmp_path / name
    if text == "\udcff":
        path.write_bytes(b"\xff\xfe\x00bad")
    elif text is not None:
        path.write_text(text)
    out = tmp_path / "out"
    code, output = run(runner, "--config", str(path), "--out", str(out))
    assert code == 3, output
    assert str(path) in output
    assert not out.exists()


def test_bad_users_file_exits_3(runner: CliRunner, tmp_path: Path) -> None:
    config = write(tmp_path / "c.yml", BASE)
    for text in ("users: [1]\n", "users: {a: 1\n"):
        users = write(tmp_path / "u.yml", text)
        code, output = run(
            runner, "--config", str(config), "--users", str(users), "--out", str(tmp_path / "o")
        )
        assert code == 3, output
        assert not (tmp_path / "o").exists()


# --------------------------------------------------------------------------- TOTP and WebAuthn


def totp_export(secret_b32: str, **fields: object) -> str:
    record = {
        "created_at": "2024-05-01T10:00:00Z",
        "last_used_at": None,
        "username": "Alice",
        "issuer": "Authelia",
        "algorithm": "SHA256",
        "digits": 8,
        "period": 60,
        "secret": base64.b64encode(secret_b32.encode()).decode(),
        **fields,
    }
    return json.dumps({"totp_configurations": [record]})  # JSON is YAML


SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def test_totp_export_is_stored_encrypted(runner: CliRunner, tmp_path: Path) -> None:
    export = write(tmp_path / "totp.yml", totp_export(SECRET))
    out = tmp_path / "out"
    report = imported(runner, out, write(tmp_path / "c.yml", BASE), "--totp-export", str(export))
    assert "storage: TOTP of 'alice' (encrypted)" in {m["to"] for m in report["mapped"]}
    config = load_config(out / "authctl.toml")
    storage = Storage(config.storage)
    try:
        record = storage.load_totp("alice")
    finally:
        storage.close()
    assert record is not None
    assert record.secret == base64.b32decode(SECRET)
    assert (record.algorithm, record.digits, record.period) == ("SHA256", 8, 60)
    raw = b"".join(
        bytes(row[0]) for row in sqlite3.connect(out / "authctl.db").execute(
            "SELECT secret FROM totp_configurations"
        )
    )  # fmt: skip
    assert base64.b32decode(SECRET) not in raw
    assert SECRET.encode() not in raw
    assert "users_database" not in json.dumps(report)


def test_totp_with_postgres_goes_to_sqlite_for_migrate(runner: CliRunner, tmp_path: Path) -> None:
    export = write(tmp_path / "totp.yml", totp_export(SECRET))
    text = BASE + "storage:\n  postgres:\n    address: 'tcp://127.0.0.1:1'\n"
    out = tmp_path / "out"
    report = imported(runner, out, write(tmp_path / "c.yml", text), "--totp-export", str(export))
    assert any("storage migrate --to postgres" in n["reason"] for n in report["attention"])
    assert (out / "authctl.db").exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"secret": "not base64!"},
        {"secret": base64.b64encode(b"not-base32-1").decode()},
        {"secret": base64.b64encode(b"JBSWY3DP").decode()},
        {"digits": 7},
        {"period": 5},
        {"algorithm": "MD5"},
        {"username": "bad name"},
        {"created_at": "yesterday"},
        {"extra": 1},
    ],
)
def test_bad_totp_export_writes_nothing(
    runner: CliRunner, tmp_path: Path, fields: dict[str, object]
) -> None:
    export = write(tmp_path / "totp.yml", totp_export(SECRET, **fields))
    out = tmp_path / "out"
    code, output = run(
        runner, "--config", str(write(tmp_path / "c.yml", BASE)), "--totp-export", str(export),
        "--out", str(out),
    )  # fmt: skip
    assert code == 3, output
    assert "totp_configurations[0]" in output
    assert SECRET not in output
    assert not out.exists()
    with pytest.raises(AutheliaInputError):
        parse_totp_export({"totp_configurations": "x"})


def webauthn_export(**fields: object) -> str:
    record = {
        "id": 1,
        "created_at": "2024-05-01T10:00:00Z",
        "last_used_at": "2024-06-01T10:00:00Z",
        "rpid": "auth.example.com",
        "username": "alice",
        "description": "YubiKey",
        "kid": base64.b64encode(b"credential-id-1").decode(),
        "aaguid": "2fc0579f-8113-47ea-b116-bb5a8db9202a",
        "attestation_type": "packed",
        "attestation_format": "packed",
        "attachment": "cross-platform",
        "transports": ["usb", "nfc"],
        "sign_count": 42,
        "clone_warning": False,
        "legacy": False,
        "discoverable": True,
        "present": True,
        "verified": True,
        "backup_eligible": False,
        "backup_state": False,
        "public_key": base64.b64encode(b"\xa5\x01\x02cose-key").decode(),
        "attestation": "",
        **fields,
    }
    return json.dumps({"webauthn_credentials": [record]})


def test_webauthn_export_is_checked_and_reported(runner: CliRunner, tmp_path: Path) -> None:
    export = write(tmp_path / "webauthn.yml", webauthn_export())
    parsed = parse_webauthn_export(load_yaml(export.read_text()))
    assert parsed[0].credential_id == b"credential-id-1"
    assert parsed[0].sign_count == 42
    assert parsed[0].transports == ("usb", "nfc")
    out = tmp_path / "out"
    report = imported(
        runner, out, write(tmp_path / "c.yml", BASE), "--webauthn-export", str(export)
    )
    assert "webauthn_export.webauthn_credentials[0]" in keys(report, "mapped")
    from server.core.config import load_config
    from server.core.storage import Storage

    storage = Storage(load_config(out / "authctl.toml").storage)
    try:
        (cred,) = storage.webauthn_credentials("alice")
    finally:
        storage.close()
    assert (cred.credential_id, cred.public_key) == (b"credential-id-1", b"\xa5\x01\x02cose-key")
    assert (cred.sign_count, cred.description, cred.transports) == (42, "YubiKey", ("usb", "nfc"))
    assert (cred.aaguid, cred.attestation_type) == (
        "2fc0579f-8113-47ea-b116-bb5a8db9202a",
        "packed",
    )
    assert cred.discoverable
    assert not cred.backup_eligible
    assert cred.last_used_at is not None
    assert cred.created_at < cred.last_used_at


def test_webauthn_export_needs_attention(runner: CliRunner, tmp_path: Path) -> None:
    """Another RP ID and Authelia's clone flag are stored with a note saying what to do; an
    empty or repeated description gets a unique one."""
    first = json.loads(webauthn_export())["webauthn_credentials"][0]
    rows = [
        first,
        {**first, "id": 2, "kid": base64.b64encode(b"credential-id-2").decode(),
         "rpid": "example.com", "clone_warning": True, "description": ""},
        {**first, "id": 3, "kid": base64.b64encode(b"credential-id-3").decode()},
    ]  # fmt: skip
    export = write(tmp_path / "webauthn.yml", json.dumps({"webauthn_credentials": rows}))
    out = tmp_path / "out"
    report = imported(
        runner, out, write(tmp_path / "c.yml", BASE), "--webauthn-export", str(export)
    )
    notes = [(n["key"], n["reason"]) for n in report["attention"]]
    two = [reason for key, reason in notes if key.endswith("webauthn_credentials[1]")]
    assert any("rp_id = 'example.com'" in r for r in two), notes
    assert any("possible clone" in r for r in two), notes
    from server.core.config import load_config
    from server.core.storage import Storage

    storage = Storage(load_config(out / "authctl.toml").storage)
    try:
        found = [c.description for c in storage.webauthn_credentials("alice")]
    finally:
        storage.close()
    assert sorted(found) == ["Imported passkey", "YubiKey", "YubiKey (2)"]


@pytest.mark.parametrize(
    "fields",
    [
        {"kid": "%%%"},
        {"public_key": ""},
        {"aaguid": "nope"},
        {"sign_count": -1},
        {"transports": "usb"},
        {"discoverable": "yes"},
        {"rpid": ""},
    ],
)
def test_bad_webauthn_export_writes_nothing(
    runner: CliRunner, tmp_path: Path, fields: dict[str, object]
) -> None:
    export = write(tmp_path / "webauthn.yml", webauthn_export(**fields))
    out = tmp_path / "out"
    code, output = run(
        runner, "--config", str(write(tmp_path / "c.yml", BASE)), "--webauthn-export",
        str(export), "--out", str(out),
    )  # fmt: skip
    assert code == 3, output
    assert "webauthn_credentials[0]" in output
    assert not out.exists()


ODD = (
    BASE
    + """
server:
  address: 'udp://:9091'
  tls: {key: '/k.pem'}
  asset_path: '/assets'
  endpoints:
    authz:
      forward-auth: {implementation: 'ForwardAuth'}
log:
  level: 'loud'
  format: 'xml'
  keep_stdout: true
totp:
  disable: true
  issuer: 'a:b'
  algorithm: 'MD5'
  digits: 7
  period: 5
  secret_size: 64
webauthn:
  disable: true
regulation:
  max_retries: -2
  find_time: 'soon'
  ban_time: 0
  modes: ['user', 'nose']
storage:
  postgres:
    host: 'pg.example.com'
    port: 6543
    password: 12345
    ssl: {mode: 'require', root_certificate: '/ca.pem'}
notifier:
  template_path: '/templates'
  filesystem: {filename: 'mail.txt'}
  smtp:
    host: 'mail.example.com'
    port: 465
    sender: 'a@example.com'
    identifier: 'me'
    disable_require_tls: true
    tls: {server_name: 'mail', skip_verify: true}
password_policy:
  standard: {enabled: true, min_length: 4, max_length: 2000, require_special: false}
  zxcvbn: {enabled: false}
authentication_backend:
  password_reset: {disable: true}
  password_change: {disable: true}
  file:
    search: {email: true}
    password:
      algorithm: 'argon2'
      argon2: {variant: 'argon2i', memory: 8, parallelism: 4, iterations: 99}
      bcrypt: {cost: 12}
certificates_directory: '/certs'
ntp: {address: 'udp://time:123'}
"""
)


def test_odd_values_are_reported_and_the_result_loads(tmp_path: Path) -> None:
    """Values authctl cannot take are reported, not guessed, and what is written loads."""
    import tomli

    from server.core.authelia_import import render_config
    from server.core.config import parse_config

    conv = convert_config(load_yaml(ODD))
    text = render_config(conv.config, "odd.yml")
    parse_config(text, tomli.loads(text), tmp_path / "authctl.toml")
    attention = {n.key for n in conv.report.attention}
    assert {
        "server.address", "server.tls", "server.endpoints.authz", "log.level", "log.format",
        "totp.disable", "totp.issuer", "totp.algorithm", "totp.digits", "totp.period",
        "regulation.max_retries", "regulation.find_time", "regulation.ban_time",
        "regulation.modes", "storage.postgres.password", "storage.postgres.ssl",
        "notifier.template_path", "notifier.smtp.disable_require_tls", "notifier.smtp.tls",
        "password_policy.standard.max_length", "authentication_backend.password_reset.disable",
        "authentication_backend.password_change.disable",
        "authentication_backend.file.password.argon2.variant",
        "authentication_backend.file.password.argon2.iterations",
        "authentication_backend.file.password.argon2.memory", "certificates_directory",
    } <= attention  # fmt: skip
    assert conv.config["webauthn"] == {
        "enable": False,
        "passkey_login": False,
        "passkey_uv_two_factor": False,
    }
    smtp = conv.config["notifier"]["smtp"]
    assert (smtp["port"], smtp["tls"]) == (465, True)
    assert "filesystem" not in conv.config["notifier"]
    pg = conv.config["storage"]["postgres"]
    assert pg["dsn"] == "postgresql://authelia@pg.example.com:6543/authelia?sslmode=require"
    assert "password_file" not in pg
    assert conv.config["password_policy"] == {"min_length": 4}


def test_wrong_shapes_are_reported() -> None:
    text = """
session:
  name: ['x']
  same_site: 'loose'
  inactivity: 0
  cookies:
    - 'example.com'
    - authelia_url: 'https://auth.example.org'
    - domain: 'example.com'
      name: 'other'
  redis:
    host: '/run/redis.sock'
    tls: {server_name: 'r'}
    high_availability: {nodes: 'x'}
access_control:
  default_policy: 'maybe'
  networks: 'x'
  rules: 'x'
definitions:
  network: ['x']
"""
    conv = convert_config(load_yaml(text))
    attention = {n.key for n in conv.report.attention}
    assert {
        "session.name", "session.same_site", "session.inactivity", "session.cookies[0]",
        "session.cookies[1]", "session.redis.tls", "session.redis.high_availability",
        "access_control.default_policy", "access_control.networks", "access_control.rules",
        "definitions.network",
    } <= attention  # fmt: skip
    session = conv.config["session"]
    assert session["redis_url"] == "unix://run/redis.sock?db=0".replace("//", "///", 1)
    assert session["name"] == "other"
    assert conv.config["access_control"]["default_policy"] == "deny"
    with pytest.raises(ValueError, match="mapping"):
        convert_config(["not", "a", "mapping"])


@pytest.mark.parametrize(
    "criterion",
    [
        "subject: 5",
        "subject: [[1]]",
        "subject: 'admins'",
        "subject: 'user:bad name'",
        "methods: 5",
        "resources: ['{{ env \"X\" }}']",
        "networks: ['nowhere']",
        "networks: 5",
        "query: 'x'",
        "query: [[{operator: 'present'}]]",
        "query: [[{key: 'a', value: true}]]",
        "query: [[{key: 'a', operator: 'like', value: 'b'}]]",
        "query: [[{key: 'a', operator: 'pattern', value: '(?=x)'}]]",
        "policy: 'allow'",
    ],
)
def test_each_unfaithful_criterion_becomes_deny(criterion: str) -> None:
    text = BASE + f"  rules:\n    - domain: 'x.example.com'\n      {criterion}\n"
    if "policy:" not in criterion:
        text += "      policy: 'bypass'\n"
    conv = convert_config(load_yaml(text))
    assert conv.config["access_control"]["rules"] == [
        {"domain": ["x.example.com"], "policy": "deny"}
    ]
    assert any("fail closed" in n.reason for n in conv.report.attention)


def test_network_definitions_edge_cases() -> None:
    text = (
        BASE
        + """
  networks:
    - 'not a mapping'
    - name: 'lan'
      networks: ['10.0.0.0/8', 'bogus']
  rules:
    - domain: ['y.example.com']
      networks: 'lan'
      unknown_criterion: 1
      policy: 'one_factor'
definitions:
  network:
    lan: ['192.168.0.0/16']
    odd: 5
  user_attributes: {}
"""
    )
    conv = convert_config(load_yaml(text))
    assert conv.config["access_control"]["networks"] == {"lan": ["192.168.0.0/16"]}
    attention = {n.key for n in conv.report.attention}
    assert {"access_control.networks[0]", "access_control.networks[1]"} <= attention
    assert "definitions.network.odd" in attention
    assert "access_control.rules[0].unknown_criterion" in {n.key for n in conv.report.dropped}
    assert convert_users({}, Report()) == {}
    assert convert_users({"users": {"x": "y"}, "extra": 1}, report := Report()) == {}
    assert {"users_database.users.x"} <= {n.key for n in report.attention}
    assert "users_database.extra" in {n.key for n in report.dropped}


def test_values_authctl_refuses_stop_the_import(runner: CliRunner, tmp_path: Path) -> None:
    """A value the converter copies but authctl's loader refuses (an IP as cookie domain,
    which Authelia refuses too) ends the import with exit 3 before anything is written."""
    text = (
        "session:\n  cookies:\n    - domain: '10.0.0.1'\n      authelia_url: 'https://10.0.0.1'\n"
    )
    out = tmp_path / "out"
    code, output = run(runner, "--config", str(write(tmp_path / "c.yml", text)), "--out", str(out))
    assert code == 3, output
    assert "would not load" in output
    assert "session.cookies[0].domain" in output
    assert not out.exists()


WEBAUTHN = """
webauthn:
  disable: false
  display_name: 'Example SSO'
  attestation_conveyance_preference: 'Direct'
  user_verification: 'discouraged'
  timeout: '2 minutes'
  experimental_enable_passkey_login: true
  experimental_enable_passkey_uv_two_factors: true
  selection_criteria:
    attachment: 'cross-platform'
    discoverability: 'required'
    user_verification: 'required'
  filtering:
    prohibit_backup_eligibility: true
    permitted_aaguids: ['ee882879-721c-4913-9775-3dfcce97072a']
  metadata:
    enabled: true
  made_up: 1
"""


def test_webauthn_section_maps_to_authctls(tmp_path: Path) -> None:
    """Every ``webauthn:`` key of Authelia 4.39 becomes its ``[webauthn]`` key, or is reported
    (filtering and the metadata service need attention); what is written loads."""
    import tomli

    from server.core.authelia_import import render_config
    from server.core.config import parse_config

    conv = convert_config(load_yaml(WEBAUTHN))
    assert conv.config["webauthn"] == {
        "enable": True,
        "display_name": "Example SSO",
        "attestation": "direct",
        "user_verification": "required",  # selection_criteria's, Authelia 4.39's place
        "timeout": "2m",
        "passkey_login": True,
        "passkey_uv_two_factor": True,
    }
    mapped = {m.key: m.to for m in conv.report.mapped}
    assert mapped["webauthn.disable"] == "webauthn.enable"
    assert mapped["webauthn.attestation_conveyance_preference"] == "webauthn.attestation"
    assert mapped["webauthn.experimental_enable_passkey_login"] == "webauthn.passkey_login"
    assert mapped["webauthn.experimental_enable_passkey_uv_two_factors"] == (
        "webauthn.passkey_uv_two_factor"
    )
    attention = {n.key for n in conv.report.attention}
    assert {"webauthn.filtering", "webauthn.metadata"} <= attention
    dropped = {n.key: n.reason for n in conv.report.dropped}
    assert {
        "webauthn.selection_criteria.attachment",
        "webauthn.selection_criteria.discoverability",
    } <= set(dropped)
    assert "not a key of Authelia" in dropped["webauthn.made_up"]
    text = render_config(conv.config, "webauthn.yml")
    assert "[webauthn]" in text
    config = parse_config(text, tomli.loads(text), tmp_path / "authctl.toml")
    assert (config.webauthn.timeout, config.webauthn.attestation) == (120, "direct")


def test_webauthn_values_authctl_refuses_are_reported(tmp_path: Path) -> None:
    """Unknown choices, a timeout outside 10 s - 10 min and a long name are not guessed; the
    first passkey-login key set wins; no section at all still writes Authelia's defaults."""
    conv = convert_config(
        load_yaml(
            """
webauthn:
  display_name: '"""
            + "x" * 65
            + """'
  attestation_conveyance_preference: 'enterprise'
  user_verification: 'sometimes'
  timeout: '1 hour'
  enable_passkey_login: false
  experimental_enable_passkey_login: true
"""
        )
    )
    attention = {n.key: n.reason for n in conv.report.attention}
    assert "64 printable" in attention["webauthn.display_name"]
    assert "'enterprise'" in attention["webauthn.attestation_conveyance_preference"]
    assert "'sometimes'" in attention["webauthn.user_verification"]
    assert "3600 seconds" in attention["webauthn.timeout"]
    assert conv.config["webauthn"] == {"passkey_login": False, "passkey_uv_two_factor": False}
    bare = convert_config(load_yaml("log:\n  level: 'info'\n"))
    assert bare.config["webauthn"] == {"passkey_login": False, "passkey_uv_two_factor": False}
    too_short = convert_config(load_yaml("webauthn:\n  timeout: '5s'\n"))
    assert "webauthn.timeout" in {n.key for n in too_short.report.attention}
    assert "timeout" not in too_short.config["webauthn"]
