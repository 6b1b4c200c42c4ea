"""``python -m authctl``."""

from __future__ import annotations

from authctl.cli import main

main()
