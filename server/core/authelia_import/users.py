"""Authelia's ``users_database.yml`` to authctl's ``users.toml``.

Names are canonicalised as authctl does everywhere (NFKC, then case folding); display name,
e-mail, groups and ``disabled`` are kept; the password hash is copied verbatim when authctl's
own users-file check accepts it (argon2id, and Authelia's legacy schemes once authctl verifies
them), so nobody has to choose a new password. A user authctl cannot hold is left out and
reported, never written half-right: one bad entry would make the whole file refuse to load.
"""

from __future__ import annotations

import typing as t

import tomli_w

from server.core.authelia_import.report import Report
from server.core.authelia_import.tomltext import tidy_toml
from server.core.names import check_display_text
from server.core.names import check_group
from server.core.names import check_username
from server.core.passwords import check_hash
from server.core.users import END_MARKER

#: Keys of an Authelia user authctl has no field for (reported once per key, with a count).
_PROFILE_KEYS = (
    "given_name", "middle_name", "family_name", "nickname", "gender", "birthdate", "website",
    "profile", "picture", "zoneinfo", "locale", "phone_number", "phone_extension", "address",
    "extra",
)  # fmt: skip

HEADER = """\
# authctl users file, written by `authctl import authelia` from Authelia's users database.
# Edit it with `authctl user add|passwd|disable|...` (see users.toml.example). Keep it 0600.
"""

PREFIX = "users_database"


def convert_users(data: object, report: Report) -> dict[str, dict[str, t.Any]]:
    """The ``[users.NAME]`` tables for Authelia's parsed users database.

    Raises:
        ValueError: the top level has no ``users`` mapping.
    """
    if data == {}:
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("users", {}), dict):
        raise ValueError("expected a top-level 'users' mapping")
    out: dict[str, dict[str, t.Any]] = {}
    unknown: dict[str, int] = {}
    for raw_name, entry in (data.get("users") or {}).items():
        key = f"{PREFIX}.users.{raw_name}"
        user = _user(key, str(raw_name), entry, report, unknown)
        if user is None:
            continue
        name, fields = user
        if name in out:
            report.attend(
                key,
                f"is the same authctl user as an earlier entry ({name!r}: names are compared "
                "after case folding): left out",
            )
            continue
        if name != raw_name:
            report.attend(key, f"is {name!r} in authctl (user names are case-folded)")
        out[name] = fields
        report.map(key, f"users.{name}")
    for name, count in unknown.items():
        reason = "authctl keeps no such profile field"
        if name not in _PROFILE_KEYS:
            reason = "not a users-database key authctl knows"
        report.drop(f"{PREFIX}.users.*.{name}", f"{reason} (set for {count} of the users)")
    for top in data:
        if top != "users":
            report.drop(f"{PREFIX}.{top}", "not a users-database key authctl knows")
    return out


def _user(
    key: str, raw_name: str, entry: object, report: Report, unknown: dict[str, int]
) -> tuple[str, dict[str, t.Any]] | None:
    if not isinstance(entry, dict):
        report.attend(key, "is not a mapping: left out")
        return None
    try:
        name = check_username(raw_name)
    except ValueError as exc:
        report.attend(key, f"{exc}: left out (add the user again under another name)")
        return None
    password = entry.get("password")
    if not isinstance(password, str):
        report.attend(key, "has no password hash: left out")
        return None
    if (why := check_hash(password)) is not None:
        scheme = password.split("$")[1] if password.startswith("$") and "$" in password[1:] else ""
        report.attend(
            f"{key}.password",
            f"the hash {why.split(';')[0]}"
            + (f" ({scheme})" if scheme and scheme not in why else "")
            + ": this authctl cannot verify it, so the user was left out; add them with "
            "`authctl user add` (they choose a new password)",
        )
        return None
    fields: dict[str, t.Any] = {}
    if entry.get("disabled") is True:
        fields["disabled"] = True
    elif entry.get("disabled") not in (None, False):
        report.attend(f"{key}.disabled", "is not true or false: the user was written disabled")
        fields["disabled"] = True
    fields["password"] = password
    groups = entry.get("groups") or []
    if isinstance(groups, str):
        groups = [groups]
    kept = []
    for i, group in enumerate(groups if isinstance(groups, list) else []):
        try:
            kept.append(check_group(str(group)))
        except ValueError as exc:
            report.attend(f"{key}.groups[{i}]", f"{exc}: this group was left out")
    if not isinstance(groups, list):
        report.attend(f"{key}.groups", "is not a list: no groups written")
    fields["groups"] = list(dict.fromkeys(kept))
    for field in ("displayname", "email"):
        value = entry.get(field)
        if field == "email" and isinstance(value, list):
            if len(value) > 1:
                report.attend(f"{key}.email", "authctl keeps one e-mail address: the first")
            value = value[0] if value else None
        if value is None:
            continue
        try:
            fields[field] = check_display_text(str(value), f"the {field} of {name!r}")
        except ValueError as exc:
            report.attend(f"{key}.{field}", f"{exc}: left out")
    for field in entry:
        if field not in ("disabled", "password", "groups", "displayname", "email"):
            unknown[field] = unknown.get(field, 0) + 1
    return name, fields


def render_users(users: dict[str, dict[str, t.Any]]) -> str:
    """The text of ``users.toml`` for ``users`` (header, entries, authctl's end marker)."""
    body = tidy_toml(tomli_w.dumps({"users": users})) if users else "[users]\n"
    return HEADER + body.rstrip("\n") + "\n\n" + END_MARKER + "\n"
