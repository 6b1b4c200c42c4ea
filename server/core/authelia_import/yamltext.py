"""Read Authelia's YAML files with YAML 1.2 semantics in safe mode.

ruamel.yaml's safe loader builds plain dicts, lists and scalars only (no Python objects), and
under YAML 1.2 ``yes``, ``on`` or ``no`` stay strings, as Go's yaml.v3 reads them where
Authelia expects a string; a duplicate key is an error, as in Authelia.
"""

from __future__ import annotations

import re
import typing as t
from pathlib import Path

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.error import YAMLError

from server.core.errors import FileProblemError
from server.core.errors import Problem


class AutheliaInputError(FileProblemError):
    """An Authelia file cannot be read, is not YAML, or does not have the expected shape."""


def problem(path: Path | None, key: str, message: str, hint: str = "") -> AutheliaInputError:
    """One problem with an input file, as the error the CLI turns into exit 3."""
    return AutheliaInputError([Problem(path, key, message, hint)])


def load_yaml(text: str, path: Path | None = None) -> t.Any:
    """Parse ``text`` (YAML 1.2, safe); an empty document is ``{}``.

    Raises:
        AutheliaInputError: not YAML, with the line and column.
    """
    loader = YAML(typ="safe", pure=True)
    loader.version = (1, 2)
    try:
        data = loader.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        # A duplicate key's message quotes both values, which may be secrets: keep the key.
        message = re.sub(r' with value ".*', "", message, flags=re.S)
        raise AutheliaInputError(
            [
                Problem(
                    path,
                    "",
                    f"not valid YAML: {message or exc}",
                    "fix the YAML syntax (Authelia would refuse it too)",
                    line=mark.line + 1 if mark else None,
                    column=mark.column + 1 if mark else None,
                )
            ]
        ) from None
    except YAMLError as exc:
        raise problem(path, "", f"not valid YAML: {exc}") from None
    return {} if data is None else data


def read_yaml(path: Path) -> t.Any:
    """Read and parse the YAML file at ``path``.

    Raises:
        AutheliaInputError: missing, unreadable, not UTF-8 or not YAML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise problem(path, "", "is not UTF-8 text") from None
    except OSError as exc:
        raise problem(path, "", f"cannot be read: {exc.strerror}") from None
    return load_yaml(text, path)
