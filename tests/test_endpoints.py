"""``server.core.endpoints`` is the one home of authctl's HTTP paths: the proxy snippets and the
web tier use it rather than spelling a path again (issue 14 §3)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from server.core import endpoints

SNIPPETS = ["caddy", "envoy", "haproxy", "nginx", "traefik"]


def test_paths_are_unique_api_paths() -> None:
    """Every path is under /api/, none is listed twice."""
    paths = [*endpoints.AUTHZ, *endpoints.PORTAL_API]
    assert len(set(paths)) == len(paths)
    assert all(p.startswith(endpoints.API_PREFIX) for p in paths)


def _path_literals(path: Path) -> list[str]:
    """String constants in ``path`` that look like API paths, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and node.value.lstrip("'{").startswith("/api/")
    ]


@pytest.mark.parametrize("name", SNIPPETS)
def test_snippets_take_paths_from_core(name: str) -> None:
    """A snippet module spells no API path of its own."""
    module = importlib.import_module(f"authctl.snippets.{name}")
    assert module.__file__ is not None
    assert _path_literals(Path(module.__file__)) == []
    used = {
        value for key, value in vars(module).items() if key.isupper() and value in endpoints.AUTHZ
    }
    assert used, f"{name} does not use server.core.endpoints"


WEB_MODULES = sorted(Path(endpoints.__file__).parents[1].joinpath("web").glob("*.py"))


@pytest.mark.parametrize("path", WEB_MODULES, ids=lambda p: p.name)
def test_web_tier_takes_paths_from_core(path: Path) -> None:
    """No module of ``server/web/`` spells an API path: routes and prefixes come from core."""
    assert _path_literals(path) == []


def test_web_tier_modules_are_scanned() -> None:
    """The glob above finds the web tier (an empty parametrize would pass silently)."""
    assert {"app.py", "authz.py", "portal.py", "selfservice.py", "routes.py"} <= {
        p.name for p in WEB_MODULES
    }


def test_route_table_serves_exactly_the_portal_api(tmp_path: Path) -> None:
    """The app's route table and ``PORTAL_API`` name the same paths: none missing, none extra."""
    from tests.apphelpers import build
    from tests.conftest import Clock

    app = build(tmp_path, Clock()).app
    assert {route.path for route in app.routes} == set(endpoints.PORTAL_API)


def test_literal_scan_finds_a_spelt_path(tmp_path: Path) -> None:
    """The scan above would catch a path written out (so its passing means something)."""
    sample = tmp_path / "x.py"
    sample.write_text('"""Doc /api/x."""\nA = "/api/authz/auth-request"\nB = f"{A}"\n')
    assert _path_literals(sample) == ["/api/authz/auth-request"]
