"""A proxy on a public port other than 443 (issue 14 §5): ``init --port`` writes the portal and
default redirect URLs with that port, and ``proxy-snippet --listen`` on a port the URLs do not
name warns with the config lines to change and their new values."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from authctl._starter import STARTER_CONFIG
from authctl._starter import starter_config
from authctl.cli import cli
from server.core.config import load_config


def init(runner: CliRunner, folder: Path, *args: str) -> str:
    result = runner.invoke(cli, ["init", str(folder), *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_init_port_goes_into_the_urls(runner: CliRunner, tmp_path: Path) -> None:
    """--port 8443: portal_url and default_redirect_url name it; the config loads."""
    output = init(runner, tmp_path / "site", "--port", "8443")
    cookie = load_config(tmp_path / "site" / "authctl.toml").session.cookies[0]
    assert cookie.portal_url == "https://auth.example.com:8443"
    assert cookie.default_redirect_url == "https://www.example.com:8443"
    assert "https://auth.example.com:8443" in output


def test_init_default_port_is_443_and_unwritten(runner: CliRunner, tmp_path: Path) -> None:
    """Without --port (or with 443) the URLs carry no port, as before."""
    init(runner, tmp_path / "a")
    init(runner, tmp_path / "b", "--port", "443")
    for name in ("a", "b"):
        assert (tmp_path / name / "authctl.toml").read_text(encoding="utf-8") == STARTER_CONFIG
    assert starter_config(443) == STARTER_CONFIG


@pytest.mark.parametrize("port", ["0", "65536", "https"])
def test_init_refuses_a_bad_port(runner: CliRunner, tmp_path: Path, port: str) -> None:
    """A port outside 1-65535 is a usage error (exit 2) and nothing is written."""
    result = runner.invoke(cli, ["init", str(tmp_path / "site"), "--port", port])
    assert result.exit_code == 2
    assert "--port" in result.output
    assert not (tmp_path / "site").exists()


def snippet(runner: CliRunner, folder: Path, *args: str) -> tuple[int, str]:
    config = str(folder / "authctl.toml")
    result = runner.invoke(cli, ["--config", config, "proxy-snippet", "caddy", *args])
    return result.exit_code, result.stderr


def test_matching_port_gives_no_warning(runner: CliRunner, tmp_path: Path) -> None:
    """init --port 8443 then proxy-snippet --listen :8443: nothing to fix, no warning."""
    init(runner, tmp_path / "site", "--port", "8443")
    code, stderr = snippet(runner, tmp_path / "site", "--listen", "127.0.0.1:8443")
    assert code == 0
    assert "warning" not in stderr


def test_port_warning_names_the_lines_to_change(runner: CliRunner, tmp_path: Path) -> None:
    """The default init (443) behind --listen :8443: the warning names the file, the line
    numbers and keys, the values to write, and init --port for a new setup."""
    init(runner, tmp_path / "site")
    config = tmp_path / "site" / "authctl.toml"
    lines = config.read_text(encoding="utf-8").splitlines()
    portal = 1 + next(i for i, line in enumerate(lines) if line.startswith("portal_url"))
    default = 1 + next(i for i, line in enumerate(lines) if line.startswith("default_redirect"))
    code, stderr = snippet(runner, tmp_path / "site", "--listen", "127.0.0.1:8443")
    assert code == 0
    assert "names port 443 but the proxy listens on 8443" in stderr
    assert f'{config}:{portal}: portal_url = "https://auth.example.com:8443"' in stderr
    assert f'{config}:{default}: default_redirect_url = "https://www.example.com:8443"' in stderr
    assert "authctl init --port 8443" in stderr
