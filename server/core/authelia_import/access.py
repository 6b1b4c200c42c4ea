"""Authelia's ``access_control`` (and ``definitions.network``) to authctl's, rule for rule.

The criteria and their semantics are the same (SPEC §2.1 follows Authelia), so each rule is
copied criterion by criterion, in order. A rule that cannot be copied faithfully (a template,
a value of the wrong type, a regex RE2 refuses, an ``oauth2:client:`` subject) is not skipped,
which would let a later rule decide requests it used to decide: it becomes a ``deny`` rule for
the same domains (fail closed), reported as needing attention.
"""

from __future__ import annotations

import ipaddress
import re
import typing as t

from server.core.authelia_import.walk import Source
from server.core.names import check_group
from server.core.names import check_username
from server.core.regex import RegexError
from server.core.regex import compile_rule_regex

_NETWORK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_POLICIES = ("bypass", "one_factor", "two_factor", "deny")
_OPERATORS = ("present", "absent", "equal", "not equal", "pattern", "not pattern")


class _Unfaithful(Exception):
    """A criterion that cannot be copied as Authelia reads it; the message says why."""


def _networks(src: Source) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Named networks: (those written as [access_control.networks], those inlined).

    ``definitions.network`` (4.38+) is a mapping name -> list; the older
    ``access_control.networks`` is a list of ``{name, networks}``. A name authctl cannot
    spell is kept out of the table and its networks are written into the rules instead.
    """
    named: dict[str, list[str]] = {}
    inlined: dict[str, list[str]] = {}
    found: list[tuple[str, str, object]] = []
    defs = src.raw("definitions.network")
    if isinstance(defs, dict):
        found += [(f"definitions.network.{n}", str(n), v) for n, v in defs.items()]
    elif defs is not None:
        src.report.attend("definitions.network", "expected a mapping of names: not imported")
    old = src.raw("access_control.networks")
    if isinstance(old, list):
        for i, item in enumerate(old):
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                found.append((f"access_control.networks[{i}]", item["name"], item.get("networks")))
            else:
                src.report.attend(f"access_control.networks[{i}]", "needs name and networks")
    elif old is not None:
        src.report.attend("access_control.networks", "expected a list: not imported")
    for key, name, value in found:
        items = src.strings(key, value)
        if items is None:
            continue
        cidrs = []
        for item in items:
            try:
                cidrs.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                src.report.attend(key, f"{item!r} is not an IP or CIDR: left out")
        if name in named or name in inlined:
            src.report.attend(key, f"the network name {name!r} is defined twice: first kept")
            continue
        if _NETWORK_NAME.fullmatch(name):
            named[name] = cidrs
            src.report.map(key, f"access_control.networks.{name}")
        else:
            inlined[name] = cidrs
            src.report.map(key, "access_control.rules[].networks (inlined)")
            src.report.attend(
                key,
                f"authctl cannot name a network {name!r}: its CIDRs were written into the "
                "rules that use it",
            )
    return named, inlined


def _regexes(src: Source, key: str, value: object) -> list[str]:
    items = _strings(src, key, value)
    for text in items:
        try:
            compile_rule_regex(text)
        except RegexError as exc:
            raise _Unfaithful(f"{key}: RE2 refuses {text!r} ({exc.reason})") from None
    return items


def _strings(src: Source, key: str, value: object) -> list[str]:
    texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    if any(isinstance(v, str) and "{{" in v for v in texts):
        raise _Unfaithful(f"{key} holds an Authelia template ({{{{ … }}}})")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _Unfaithful(f"{key} is not a string or a list of strings")
    return list(items)


def _subject(src: Source, key: str, value: object) -> list[t.Any]:
    outer = [value] if isinstance(value, str) else value
    if not isinstance(outer, list):
        raise _Unfaithful(f"{key} is not a string or a list")
    out: list[t.Any] = []
    dropped_clients = []
    for item in outer:
        inner = [item] if isinstance(item, str) else item
        if not isinstance(inner, list) or not all(isinstance(i, str) for i in inner):
            raise _Unfaithful(f"{key} holds something other than subject strings")
        if any(i.startswith("oauth2:client:") for i in inner):
            dropped_clients += [i for i in inner if i.startswith("oauth2:client:")]
            continue  # authctl has no OIDC clients: this alternative never matches a user
        for entry in inner:
            kind, _, name = entry.partition(":")
            try:
                if kind == "user":
                    check_username(name)
                elif kind == "group":
                    check_group(name)
                else:
                    raise ValueError(f"{entry!r} is not user:NAME or group:NAME")
            except ValueError as exc:
                raise _Unfaithful(f"{key}: {exc}") from None
        out.append(inner[0] if isinstance(item, str) else inner)
    if dropped_clients:
        if not out:
            raise _Unfaithful(
                f"{key} names only OpenID Connect clients ({', '.join(dropped_clients)}), "
                "which authctl does not have"
            )
        src.report.attend(
            key,
            "the OpenID Connect client subjects "
            + ", ".join(dropped_clients)
            + " were left out (authctl has no OIDC clients); the user and group subjects stay",
        )
    return out


def _query(src: Source, key: str, value: object) -> list[list[dict[str, str]]]:
    outer = value if isinstance(value, list) else None
    if outer is None:
        raise _Unfaithful(f"{key} is not a list of lists")
    out = []
    for i, inner in enumerate(outer):
        items = inner if isinstance(inner, list) else [inner]
        group = []
        for j, item in enumerate(items):
            here = f"{key}[{i}][{j}]"
            if not isinstance(item, dict) or not isinstance(item.get("key"), str):
                raise _Unfaithful(f"{here} needs a key")
            cond: dict[str, str] = {"key": item["key"]}
            value_raw = item.get("value")
            if isinstance(value_raw, bool | dict | list) or (
                isinstance(value_raw, str) and "{{" in value_raw
            ):
                raise _Unfaithful(f"{here}.value is not a plain value")
            operator = item.get("operator")
            if operator is None:
                operator = "equal" if value_raw is not None else "present"
            if operator not in _OPERATORS:
                raise _Unfaithful(f"{here}.operator {operator!r} is not an Authelia operator")
            cond["operator"] = operator
            if value_raw is not None:
                cond["value"] = str(value_raw)
                if operator in ("pattern", "not pattern"):
                    _regexes(src, f"{here}.value", cond["value"])
            group.append(cond)
        out.append(group)
    return out


def _rule_networks(
    key: str, value: object, named: dict[str, list[str]], inlined: dict[str, list[str]]
) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise _Unfaithful(f"{key} is not a string or a list of strings")
    out: list[str] = []
    for item in items:
        if item in named:
            out.append(item)
        elif item in inlined:
            out += inlined[item]
        else:
            try:
                out.append(str(ipaddress.ip_network(item.strip(), strict=False)))
            except ValueError:
                raise _Unfaithful(
                    f"{key}: {item!r} is neither a network name nor an IP or CIDR"
                ) from None
    return list(dict.fromkeys(out))


def _rule(
    src: Source,
    key: str,
    raw: dict[str, t.Any],
    named: dict[str, list[str]],
    inlined: dict[str, list[str]],
) -> dict[str, t.Any]:
    rule: dict[str, t.Any] = {}
    if "domain" in raw:
        rule["domain"] = _strings(src, f"{key}.domain", raw["domain"])
    if "domain_regex" in raw:
        rule["domain_regex"] = _regexes(src, f"{key}.domain_regex", raw["domain_regex"])
    if not rule.get("domain") and not rule.get("domain_regex"):
        raise _Unfaithful(f"{key} has neither domain nor domain_regex")
    try:
        if "resources" in raw:
            rule["resources"] = _regexes(src, f"{key}.resources", raw["resources"])
        if "methods" in raw:
            rule["methods"] = _strings(src, f"{key}.methods", raw["methods"])
        if "networks" in raw:
            rule["networks"] = _rule_networks(f"{key}.networks", raw["networks"], named, inlined)
        if "subject" in raw:
            rule["subject"] = _subject(src, f"{key}.subject", raw["subject"])
        if "query" in raw:
            rule["query"] = _query(src, f"{key}.query", raw["query"])
        policy = raw.get("policy")
        if policy not in _POLICIES:
            raise _Unfaithful(f"{key}.policy {policy!r} is not a policy")
        rule["policy"] = policy
    except _Unfaithful as exc:
        closed: dict[str, t.Any] = {k: rule[k] for k in ("domain", "domain_regex") if k in rule}
        src.report.attend(
            key,
            f"{exc}: replaced by a deny rule for the same domains (fail closed); write the "
            "rule by hand",
        )
        return {**closed, "policy": "deny"}
    for name in raw:
        if name in rule:
            src.report.map(f"{key}.{name}", f"{key}.{name}")
        elif name != "policy":
            src.report.drop(f"{key}.{name}", "not a rule criterion Authelia knows")
    return rule


def convert_access_control(src: Source) -> dict[str, t.Any]:
    """The ``[access_control]`` table for Authelia's ``access_control`` section."""
    out: dict[str, t.Any] = {}
    default = src.raw("access_control.default_policy")
    if default is not None:
        if default in _POLICIES:
            out["default_policy"] = default
            src.report.map("access_control.default_policy", "access_control.default_policy")
        else:
            out["default_policy"] = "deny"
            src.report.attend(
                "access_control.default_policy", f"{default!r} is not a policy: deny written"
            )
    named, inlined = _networks(src)
    if named:
        out["networks"] = named
    raw_rules = src.raw("access_control.rules")
    if not raw_rules and out.get("default_policy", "deny") in ("deny", "bypass"):
        # Authelia refuses this too; authctl cannot load it. Ask for the most.
        src.report.attend(
            "access_control",
            "no rules and a default policy of deny or bypass, which Authelia refuses too: "
            'default_policy = "two_factor" was written (every site needs two factors); '
            "write your rules",
        )
        out["default_policy"] = "two_factor"
    if raw_rules is None:
        return out
    if not isinstance(raw_rules, list):
        src.report.attend("access_control.rules", "expected a list: default policy deny written")
        out["default_policy"] = "deny"
        return out
    rules = []
    for i, raw in enumerate(raw_rules):
        key = f"access_control.rules[{i}]"
        try:
            if not isinstance(raw, dict):
                raise _Unfaithful(f"{key} is not a mapping")
            rules.append(_rule(src, key, raw, named, inlined))
        except _Unfaithful as exc:
            # Skipping it would let the rules below decide its requests: stop here instead,
            # so they fall to a deny default (fail closed).
            src.report.attend(
                key,
                f"{exc}: neither it nor the {len(raw_rules) - i - 1} rules after it were "
                "written, and default_policy is deny; write them by hand",
            )
            for j in range(i + 1, len(raw_rules)):
                src.report.drop(f"access_control.rules[{j}]", f"follows {key}, not written")
            out["default_policy"] = "deny"
            break
    if rules:
        out["rules"] = rules
    return out
