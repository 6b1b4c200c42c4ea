"""The portal asset loader: it finds its folder installed or in a checkout, and refuses to
start on an incomplete one instead of answering 404 for a page at run time."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from server.core.errors import AuthError
from server.web import assets
from server.web.assets import ASSETS_DIR
from server.web.assets import PAGES
from server.web.assets import MissingAssetError
from server.web.assets import find_assets_dir
from server.web.assets import load_assets
from tests.conftest import ROOT


@pytest.fixture
def portal(tmp_path: Path) -> Path:
    """A private copy of the checkout's portal_assets/ to break."""
    copy = tmp_path / "portal_assets"
    shutil.copytree(ROOT / "portal_assets", copy)
    return copy


def test_checkout_uses_the_top_level_folder() -> None:
    """In a checkout (editable install) the pages come from the repository's portal_assets/."""
    assert ROOT / "portal_assets" == ASSETS_DIR
    assert not (Path(assets.__file__).parent / "portal_assets").exists()


def test_installed_package_uses_its_own_folder(tmp_path: Path) -> None:
    """Installed from the wheel, the folder sits inside the package (server/web/portal_assets),
    and is preferred over anything beside site-packages."""
    package = tmp_path / "site-packages" / "server" / "web"
    (package / "portal_assets").mkdir(parents=True)
    (tmp_path / "site-packages" / "portal_assets").mkdir()
    assert find_assets_dir(package) == package / "portal_assets"


def test_checkout_layout_is_found(tmp_path: Path) -> None:
    """Without a folder in the package, the one two levels up (the checkout's) is used."""
    package = tmp_path / "repo" / "server" / "web"
    package.mkdir(parents=True)
    assert find_assets_dir(package) == tmp_path / "repo" / "portal_assets"


def test_complete_folder_loads_every_route() -> None:
    """The repository's folder serves every portal route and its static files."""
    loaded = load_assets()
    assert set(PAGES) <= set(loaded)
    assert {"/static/portal.css", "/static/portal.js", "/static/favicon.svg"} <= set(loaded)


@pytest.mark.parametrize("name", sorted(PAGES.values()))
def test_missing_page_refuses_to_start(portal: Path, name: str) -> None:
    """Every page is required: a missing one stops start-up, naming the file and the fix."""
    (portal / name).unlink()
    with pytest.raises(MissingAssetError) as caught:
        load_assets(portal)
    message = str(caught.value)
    assert str(portal / name) in message
    assert "reinstall authctl" in message
    # the CLI turns AuthError into one line and exit status 3 (authctl/cmd_serve.py)
    assert isinstance(caught.value, AuthError)


def test_page_that_is_a_folder_refuses_to_start(portal: Path) -> None:
    """A directory where a page should be is as missing as no file at all."""
    (portal / "2fa.html").unlink()
    (portal / "2fa.html").mkdir()
    with pytest.raises(MissingAssetError, match=r"2fa\.html"):
        load_assets(portal)


def test_missing_folder_refuses_to_start(tmp_path: Path) -> None:
    """No folder at all is named once, not as five missing pages."""
    with pytest.raises(MissingAssetError) as caught:
        load_assets(tmp_path / "nowhere")
    message = str(caught.value)
    assert f"{tmp_path / 'nowhere'} is missing" in message
    assert message.count("\n") == 0


def test_missing_static_file_refuses_to_start(portal: Path) -> None:
    """A stylesheet or script a page links to is required too (a page without it is broken)."""
    (portal / "static" / "portal.js").unlink()
    with pytest.raises(MissingAssetError) as caught:
        load_assets(portal)
    message = str(caught.value)
    assert "/static/portal.js" in message
    assert "index.html" in message


def test_every_problem_is_reported_at_once(portal: Path) -> None:
    """Two missing pages are both named, so one fix round is enough."""
    (portal / "index.html").unlink()
    (portal / "settings.html").unlink()
    with pytest.raises(MissingAssetError) as caught:
        load_assets(portal)
    assert "index.html" in str(caught.value)
    assert "settings.html" in str(caught.value)


def test_static_folder_is_optional_when_no_page_links_to_it(tmp_path: Path) -> None:
    """Pages that link to no static file need no static/ folder."""
    for name in PAGES.values():
        (tmp_path / name).write_text("<!doctype html><title>x</title>", encoding="utf-8")
    assert set(load_assets(tmp_path)) == set(PAGES)


def test_static_symlinks_and_folders_are_not_served(portal: Path, tmp_path: Path) -> None:
    """Only regular files under static/ are served: a symlink (which could point anywhere)
    and a folder are skipped; a binary file gets its type without a charset."""
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web", encoding="utf-8")
    (portal / "static" / "link.txt").symlink_to(secret)
    (portal / "static" / "fonts").mkdir()
    (portal / "static" / "fonts" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    loaded = load_assets(portal)
    assert "/static/link.txt" not in loaded
    assert "/static/fonts" not in loaded
    assert loaded["/static/fonts/logo.png"].content_type == "image/png"
    assert loaded["/static/portal.css"].content_type == "text/css; charset=utf-8"
