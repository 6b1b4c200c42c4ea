"""The release artefacts, built and installed the way a user gets them.

``python -m build`` makes the sdist and then the wheel *from the sdist* (so the sdist must hold
everything the wheel needs); the wheel goes into a fresh venv with the pinned dependencies
(constraints.txt) and nothing from the checkout. Then the installed ``authctl`` writes a
config, adds a user, serves the portal on loopback, and ``man authctl`` finds its page.
"""

from __future__ import annotations

import email
import http.client
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

#: The only names the wheel may put at the top of site-packages (besides its metadata).
PACKAGES = {"authctl", "server"}
#: Where the portal's files live inside the installed package.
ASSETS_IN_WHEEL = "server/web/portal_assets"


def run(*args: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a command, failing the test with its output when it fails."""
    done = subprocess.run(
        [str(arg) for arg in args], capture_output=True, text=True, check=False, **kwargs
    )
    assert done.returncode == 0, f"{args} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment with the wheel installed."""

    root: Path
    site: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """A clean environment: the venv first on PATH, no variables pointing at the checkout."""
        path = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
        return {"PATH": path, "HOME": str(home), "LANG": "C.UTF-8", **extra}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from the sdist of the checkout."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, ROOT)
    assert len(list(out.glob("*.tar.gz"))) == 1
    (found,) = out.glob("*.whl")
    return found


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Venv:
    """A new venv (no pip of its own) where pip installs the wheel and its dependencies."""
    root = tmp_path_factory.mktemp("venv") / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", root)
    python = root / "bin" / "python"
    pip = (sys.executable, "-m", "pip", "--python", python)
    run(*pip, "install", "-q", "-c", ROOT / "constraints.txt", wheel)
    run(*pip, "check")
    (site,) = root.glob("lib/python3*/site-packages")
    return Venv(root, site)


def test_wheel_holds_the_packages_their_assets_and_the_man_pages(wheel: Path) -> None:
    """Top-level names are exactly the two packages; the portal is inside the web package,
    the man pages under share/man by section, and no development script or extra ships."""
    names = zipfile.ZipFile(wheel).namelist()
    dist = wheel.name.split("-py3")[0]
    assert {name.split("/")[0] for name in names} == PACKAGES | {
        f"{dist}.dist-info",
        f"{dist}.data",
    }

    portal = ROOT / "portal_assets"
    files = {p.relative_to(portal).as_posix() for p in portal.rglob("*") if p.is_file()}
    assert {n for n in names if n.startswith(ASSETS_IN_WHEEL + "/")} == {
        f"{ASSETS_IN_WHEEL}/{name}" for name in files
    }
    assert f"{ASSETS_IN_WHEEL}/index.html" in names

    pages = {p.name for p in (ROOT / "man").iterdir() if re.search(r"\.[15]$", p.name)}
    assert {"authctl.1", "authctl-serve.1", "authctl.toml.5", "users.toml.5"} <= pages
    data = {n.removeprefix(f"{dist}.data/data/") for n in names if n.startswith(f"{dist}.data/")}
    assert data == {f"share/man/man{page[-1]}/{page}" for page in pages}

    assert not [n for n in names if "manpages" in n or n.startswith(("scripts/", "tests/"))]
    metadata = email.message_from_bytes(zipfile.ZipFile(wheel).read(f"{dist}.dist-info/METADATA"))
    requires = metadata.get_all("Requires-Dist") or []
    assert requires
    assert not [r for r in requires if r.lower().startswith(("pyotp", "pytest", "click-man"))]
    assert metadata.get_all("Provides-Extra") is None


def test_installed_layout(venv: Venv, tmp_path: Path) -> None:
    """The venv's site-packages gains the two packages only; the code and the portal's files
    come from there (not the checkout), and pyotp, a test tool, is not installed."""
    assert not (venv.site / "portal_assets").exists()
    assert not (venv.site / "scripts").exists()
    assert (venv.site / ASSETS_IN_WHEEL / "index.html").is_file()
    probe = (
        "import importlib.util, authctl, server.web.assets as a; "
        "print(authctl.__file__); print(a.ASSETS_DIR); print(importlib.util.find_spec('pyotp'))"
    )
    out = run(venv.bin / "python", "-c", probe, cwd=tmp_path, env=venv.env(tmp_path)).stdout
    module, assets, pyotp = out.splitlines()
    assert Path(module).is_relative_to(venv.site)
    assert Path(assets) == venv.site / ASSETS_IN_WHEEL
    assert pyotp == "None"


class Served:
    """``authctl serve`` from the venv on a free loopback port."""

    def __init__(self, venv: Venv, home: Path, config: Path) -> None:
        self.proc = subprocess.Popen(
            [venv.bin / "authctl", "serve", "--address", "127.0.0.1:0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=home,
            env=venv.env(home, AUTHCTL_CONFIG=str(config)),
        )
        assert self.proc.stderr is not None
        seen = []
        for line in self.proc.stderr:
            seen.append(line)
            found = re.search(r"serving on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                return
        self.proc.wait()
        raise AssertionError(f"serve exited {self.proc.returncode}:\n{''.join(seen)}")

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Host": "auth.example.com"})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.stderr is not None:
                self.proc.stderr.close()


@pytest.fixture
def configured(venv: Venv, tmp_path: Path) -> Path:
    """``authctl init`` and ``user add`` with the installed CLI: the config's path."""
    env = venv.env(tmp_path)
    folder = tmp_path / "etc"
    run(venv.bin / "authctl", "init", folder, cwd=tmp_path, env=env)
    config = folder / "authctl.toml"
    password = secrets.token_urlsafe(18)
    add = ("--config", config, "user", "add", "alice", "--group", "admins", "--password-stdin")
    run(venv.bin / "authctl", *add, input=password + "\n", cwd=tmp_path, env=env)
    return config


def test_installed_cli_serves_the_portal(venv: Venv, tmp_path: Path, configured: Path) -> None:
    """init, user add and serve from the wheel: the portal page and its stylesheet answer 200
    with the page's security headers, and SIGTERM stops the server cleanly."""
    server = Served(venv, tmp_path, configured)
    try:
        status, headers, body = server.get("/")
        assert status == 200
        assert "script-src 'self'" in headers["Content-Security-Policy"]
        assert body.lower().startswith(b"<!doctype html>")
        assert body == (ROOT / "portal_assets" / "index.html").read_bytes()
        assert server.get("/static/portal.css")[0] == 200
        assert server.get("/api/health")[0] == 200
    finally:
        assert server.stop() == 0


def test_installed_server_refuses_a_missing_page(
    venv: Venv, tmp_path: Path, configured: Path
) -> None:
    """Delete a page from the installed package: serve stops at once with exit status 3 and
    one line naming the file and the fix, instead of answering 404 later."""
    page = venv.site / ASSETS_IN_WHEEL / "2fa.html"
    aside = page.with_suffix(".aside")
    page.rename(aside)
    try:
        started = time.monotonic()
        done = subprocess.run(
            [venv.bin / "authctl", "--config", configured, "serve", "--address", "127.0.0.1:0"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env=venv.env(tmp_path),
            timeout=30,
        )
    finally:
        aside.rename(page)
    assert done.returncode == 3, done.stderr
    assert str(page) in done.stderr
    assert "reinstall authctl" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < 20


def test_man_finds_the_installed_pages(venv: Venv, tmp_path: Path) -> None:
    """With the venv's share/man on MANPATH, ``man authctl`` and ``man 5 authctl.toml`` open the
    installed pages (man-db: scripts/install-e2e-deps.sh installs it)."""
    env = venv.env(tmp_path, MANPATH=str(venv.root / "share" / "man"), MANWIDTH="80")
    where = run("man", "-w", "authctl", env=env).stdout.strip()
    assert Path(where) == venv.root / "share" / "man" / "man1" / "authctl.1"
    where = run("man", "-w", "5", "authctl.toml", env=env).stdout.strip()
    assert Path(where) == venv.root / "share" / "man" / "man5" / "authctl.toml.5"
    page = run("man", "-P", "cat", "authctl-serve", env=env).stdout
    assert "authctl-serve - " in page.replace("\u2010", "-")
    assert "--address" in page.replace("\u2010", "-")
