"""``authctl cert generate``: flags, files, modes, --force and what it prints.

The command is how a new setup gets its first certificate, so its contract (SPEC §4) is tested
through the CLI as a user runs it: file names, key modes, refusing to overwrite (exit 3), bad
hosts (exit 2) and the fingerprints it prints matching the files.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl.cli import cli
from server.core import certs


def run(runner: CliRunner, *args: str) -> tuple[int, str]:
    """Invoke ``authctl cert generate ARGS``; return the exit code and all output."""
    result = runner.invoke(cli, ["cert", "generate", *args])
    return result.exit_code, result.output


def test_generate_writes_cert_and_key(runner: CliRunner, tmp_path: Path) -> None:
    """Default RSA: cert.pem and key.pem (both 0600) with the fingerprint printed."""
    out = tmp_path / "certs"
    code, output = run(
        runner, "--host", "auth.example.com", "--host", "*.example.com", "--out", str(out)
    )
    assert code == 0, output
    cert = certs.load_certificate(out / "cert.pem")
    assert certs.fingerprint(cert) in output
    assert "auth.example.com, *.example.com" in output
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    assert stat.S_IMODE((out / "cert.pem").stat().st_mode) == 0o600
    assert f"wrote {out / 'key.pem'}" in output
    assert not (out / "ca.pem").exists()


def test_generate_with_ca(runner: CliRunner, tmp_path: Path) -> None:
    """--ca writes ca.pem and ca-key.pem, the leaf is signed by that CA, both fingerprints shown."""
    code, output = run(runner, "--host", "a.example.com", "--ca", "--key-type", "ecdsa",
                       "--out", str(tmp_path))  # fmt: skip
    assert code == 0, output
    leaf = certs.load_certificate(tmp_path / "cert.pem")
    ca = certs.load_certificate(tmp_path / "ca.pem")
    leaf.verify_directly_issued_by(ca)
    assert certs.fingerprint(ca) in output
    assert stat.S_IMODE((tmp_path / "ca-key.pem").stat().st_mode) == 0o600
    assert "--cacert" in output


def test_rsa_bits_and_days(runner: CliRunner, tmp_path: Path) -> None:
    """--rsa-bits 3072 and --days 10 reach the certificate."""
    code, output = run(runner, "--host", "a.example.com", "--rsa-bits", "3072", "--days", "10",
                       "--out", str(tmp_path))  # fmt: skip
    assert code == 0, output
    cert = certs.load_certificate(tmp_path / "cert.pem")
    assert cert.public_key().key_size == 3072  # type: ignore[union-attr]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert 10 * 86400 <= lifetime.total_seconds() <= 10 * 86400 + 3600


def test_refuses_to_overwrite_without_force(runner: CliRunner, tmp_path: Path) -> None:
    """A second run exits 3 and leaves the files alone; --force replaces them."""
    assert (
        run(runner, "--host", "a.example.com", "--key-type", "ecdsa", "--out", str(tmp_path))[0]
        == 0
    )
    before = (tmp_path / "key.pem").read_bytes()
    code, output = run(
        runner, "--host", "b.example.com", "--key-type", "ecdsa", "--out", str(tmp_path)
    )
    assert code == 3
    assert "already exist" in output
    assert (tmp_path / "key.pem").read_bytes() == before
    code, output = run(runner, "--host", "b.example.com", "--key-type", "ecdsa", "--force",
                       "--out", str(tmp_path))  # fmt: skip
    assert code == 0, output
    assert (tmp_path / "key.pem").read_bytes() != before


@pytest.mark.parametrize(
    "args",
    [[], ["--host", "a*.example.com"], ["--host", "a.example.com", "--key-type", "dsa"],
     ["--host", "a.example.com", "--days", "0"]],
    ids=["no-host", "bad-wildcard", "bad-key-type", "zero-days"],
)  # fmt: skip
def test_usage_errors_exit_2(runner: CliRunner, tmp_path: Path, args: list[str]) -> None:
    """Missing or invalid options are usage errors (exit 2) and write nothing."""
    code, _ = run(runner, *args, "--out", str(tmp_path / "c"))
    assert code == 2
    assert not (tmp_path / "c").exists()


def test_default_folder_is_certs(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --out and without a config the files go to ./certs."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AUTHCTL_CONFIG", raising=False)
    code, output = run(runner, "--host", "a.example.com", "--key-type", "ecdsa")
    assert code == 0, output
    assert (tmp_path / "certs" / "cert.pem").is_file()


def test_default_folder_is_beside_the_config(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --out the files go to certs/ beside the config (where init and proxy-snippet
    look), not into the working folder (SPEC §4); --config or AUTHCTL_CONFIG alike."""
    site = tmp_path / "site"
    assert runner.invoke(cli, ["init", str(site)]).exit_code == 0
    (site / "certs" / "cert.pem").unlink()
    (site / "certs" / "key.pem").unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("AUTHCTL_CONFIG", raising=False)
    args = ["cert", "generate", "--host", "auth.example.com", "--key-type", "ecdsa"]
    result = runner.invoke(cli, ["--config", "../site/authctl.toml", *args])
    assert result.exit_code == 0, result.output
    assert (site / "certs" / "cert.pem").is_file()
    assert not (elsewhere / "certs").exists()
    assert f"wrote {Path('../site/certs/key.pem')}" in result.output
    monkeypatch.setenv("AUTHCTL_CONFIG", str(site / "authctl.toml"))
    result = runner.invoke(cli, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert f"wrote {site / 'certs' / 'key.pem'}" in result.output
    assert not (elsewhere / "certs").exists()


def test_a_bad_host_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    """A host certs refuses is exit 2 naming --host, before anything is written."""
    result = runner.invoke(cli, ["cert", "generate", "--host", "*", "--out", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "Error: Invalid value for --host: '*' is not a host name (a wildcard" in (result.stderr)
    assert list(tmp_path.iterdir()) == []
