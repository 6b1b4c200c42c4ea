"""The README's commands run as printed after ``bash scripts/demo.sh`` (issue 14 §5).

A newcomer copies them from "Quick start", "Put it behind your proxy" and "Keep your policy
under test" into a shell in the checkout, where ``authctl`` is not on PATH (it is
``.venv/bin/authctl``) and there is no ``./authctl.toml`` (the demo's is
``demo/authctl.toml``). These tests build that layout by running the real ``scripts/demo.sh``
in a copy of the checkout's shape whose ``.venv`` points at this one (pip installs skipped,
``serve`` not started), then run each code block of those sections with bash, PATH holding
only the system folders.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from server.core.config import load_config
from server.core.users import load_users
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
SECTIONS = ("## Quick start", "## Put it behind your proxy", "### Keep your policy under test")
#: What a fresh shell has: no virtualenv on PATH, no AUTHCTL_CONFIG.
PATH = "/usr/local/bin:/usr/bin:/bin"


def section(title: str) -> str:
    """The text of the README section ``title``, up to the next heading of any level."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n{title}\n") + 1
    end = re.search(r"^#{2,3} ", text[start + len(title) :], re.MULTILINE)
    assert end is not None
    return text[start : start + len(title) + end.start()]


def blocks(title: str) -> list[str]:
    """The ```sh code blocks of a README section."""
    return re.findall(r"^```sh\n(.*?)^```$", section(title), re.DOTALL | re.MULTILINE)


def shell_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTHCTL", "VIRTUAL_ENV"))}
    env["PATH"] = PATH
    return env


def make_checkout(root: Path) -> Path:
    """A folder shaped like the checkout: scripts/demo.sh and a .venv whose python and authctl
    are this test run's (``pip install`` a no-op, ``serve`` printing instead of serving)."""
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(ROOT / "scripts" / "demo.sh", root / "scripts" / "demo.sh")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = -m ] && [ "$2" = pip ]; then exit 0; fi\n'
        f'exec {sys.executable} "$@"\n'
    )
    authctl = bin_dir / "authctl"
    authctl.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = serve ]; then echo "serve: $AUTHCTL_CONFIG"; exit 0; fi\n'
        f'exec {sys.executable} -m authctl "$@"\n'
    )
    python.chmod(0o755)
    authctl.chmod(0o755)
    return root


def bash(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=cwd,
        env=shell_env(),
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )


def demo_line() -> str:
    """The Quick start's demo command, as printed."""
    (first, *_rest) = blocks("## Quick start")
    (line,) = [line for line in first.splitlines() if line.startswith("bash scripts/demo.sh")]
    return line


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout after the README's ``bash scripts/demo.sh``."""
    root = make_checkout(tmp_path_factory.mktemp("checkout"))
    result = bash(demo_line(), root)
    assert result.returncode == 0, result.stderr
    assert "demo user: demo   password: " in result.stdout
    assert "serve: demo/authctl.toml" in result.stdout
    return root


def test_demo_makes_the_layout_the_readme_names(checkout: Path) -> None:
    """demo.sh leaves demo/authctl.toml (portal on 443), the demo user and the certificate."""
    config = load_config(checkout / "demo" / "authctl.toml")
    assert config.session.cookies[0].portal_url == "https://auth.example.com"
    assert [u.name for u in load_users(checkout / "demo" / "users.toml").values()] == ["demo"]
    assert (checkout / "demo" / "certs" / "cert.pem").is_file()


def test_every_command_names_the_demo_program(checkout: Path) -> None:
    """No command line in these sections calls a bare ``authctl`` (not on PATH after demo.sh)."""
    bare = [
        line
        for title in SECTIONS
        for block in blocks(title)
        for line in block.splitlines()
        if re.match(r"\s*authctl\b", line)
    ]
    assert bare == []


def test_quick_start_commands_run_as_printed(checkout: Path) -> None:
    """The Quick start's authctl lines (disable, enable the demo user) work as printed."""
    lines = [
        line
        for block in blocks("## Quick start")
        for line in block.splitlines()
        if line.startswith(".venv/bin/authctl")
    ]
    assert len(lines) >= 2
    for line in lines:
        result = bash(line, checkout)
        assert result.returncode == 0, f"{line}\n{result.stdout}{result.stderr}"
    (demo,) = load_users(checkout / "demo" / "users.toml").values()
    assert not demo.disabled


def test_proxy_section_runs_as_printed(checkout: Path) -> None:
    """Every proxy-snippet and cert command of "Put it behind your proxy" works as printed,
    without a warning; the files land beside the demo config, not in the working folder."""
    (block,) = blocks("## Put it behind your proxy")
    result = bash(block, checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning" not in result.stderr
    assert "forward_auth" in result.stdout  # the caddy piece
    assert (checkout / "demo" / "nginx" / "nginx.conf").is_file()
    assert (checkout / "demo" / "certs" / "ca.pem").is_file()
    assert not (checkout / "certs").exists()


def test_policy_section_runs_as_printed(checkout: Path) -> None:
    """ "Keep your policy under test": check, explain and the printed cases all pass."""
    (block,) = blocks("### Keep your policy under test")
    result = bash(block, checkout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"policy": "two_factor"' in result.stdout
    assert "3 passed, 0 failed" in result.stdout


def test_demo_port(tmp_path: Path) -> None:
    """``demo.sh --port 8443`` (as the Quick start says) puts the port in the demo's URLs, and
    proxy-snippet --listen :8443 then has nothing to warn about."""
    root = make_checkout(tmp_path / "checkout")
    assert "`bash scripts/demo.sh --port 8443`" in section("## Quick start")
    result = bash("bash scripts/demo.sh --port 8443", root)
    assert result.returncode == 0, result.stderr
    cookie = load_config(root / "demo" / "authctl.toml").session.cookies[0]
    assert cookie.portal_url == "https://auth.example.com:8443"
    assert cookie.default_redirect_url == "https://www.example.com:8443"
    snippet = bash(
        ".venv/bin/authctl --config demo/authctl.toml proxy-snippet caddy --listen :8443", root
    )
    assert snippet.returncode == 0, snippet.stderr
    assert "warning" not in snippet.stderr
    assert bash("bash scripts/demo.sh --port", root).returncode == 2
    assert bash("bash scripts/demo.sh --bogus", root).returncode == 2
