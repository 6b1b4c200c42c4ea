"""Hatch build hook: what the wheel carries besides the ``authctl`` and ``server`` packages.

- The portal's files: the repository keeps them at the top (``portal_assets/``); the wheel puts
  them inside the web package (``server/web/portal_assets``), where ``server/web/assets.py``
  looks first, so nothing but ``authctl`` and ``server`` lands at the top of site-packages.
- The man pages: ``man/NAME.N`` goes to ``share/man/manN/NAME.N`` of the environment (so
  ``man authctl`` works in a venv whose ``share/man`` is on MANPATH). Hatch's static
  ``shared-data`` maps a folder to one folder, and the pages of sections 1 and 5 share one.

Only the standard wheel gets them: an editable install runs from the checkout and reads the
files there, so copies in site-packages would only go stale. ``tests/test_wheel.py`` checks
the result.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

_PAGE = re.compile(r"^[a-z0-9][a-z0-9._-]*\.([1-8])$")


def man_pages(root: Path) -> dict[str, str]:
    """``man/NAME.N`` -> ``share/man/manN/NAME.N`` (shared-data paths) for every page."""
    found = {}
    for path in sorted((root / "man").iterdir()):
        match = _PAGE.match(path.name)
        if match and path.is_file():
            found[f"man/{path.name}"] = f"share/man/man{match.group(1)}/{path.name}"
    if not found:
        raise RuntimeError(f"no man pages in {root / 'man'}: the wheel would ship none")
    return found


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    """Adds the portal's files and the man pages to a standard (not editable) wheel."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version != "standard":
            return
        root = Path(self.root)
        build_data["force_include"][str(root / "portal_assets")] = "server/web/portal_assets"
        build_data["shared_data"].update(man_pages(root))
