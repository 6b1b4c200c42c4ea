"""Reading ``[access_control]``: named networks and the ordered rules, each criterion checked
(domains, RE2 regexes, methods, networks, subjects, query conditions) and compiled."""

from __future__ import annotations

import difflib
import re
import typing as t

from server.core.config.model import HTTP_METHODS
from server.core.config.model import KEYS
from server.core.config.model import QUERY_OPERATORS
from server.core.config.model import AccessControlConfig
from server.core.config.model import IPNetwork
from server.core.config.model import NetworkRef
from server.core.config.model import QueryCondition
from server.core.config.model import RuleConfig
from server.core.config.values import DomainError
from server.core.config.values import Reader
from server.core.config.values import normalise_domain
from server.core.config.values import parse_network
from server.core.names import check_group
from server.core.names import check_username
from server.core.policy import POLICIES
from server.core.policy import Policy
from server.core.regex import Regex
from server.core.regex import RegexError
from server.core.regex import compile_rule_regex
from server.core.tomlpos import locate
from server.core.tomlread import MISSING as _MISSING
from server.core.tomlread import kind_of as _kind

_NETWORK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _regex(r: Reader, key: str, text: str) -> Regex | None:
    """``text`` compiled with RE2 (linear-time matching, Go's syntax as in Authelia)."""
    try:
        return compile_rule_regex(text)
    except RegexError as exc:
        r.error(key, f"invalid regular expression {text!r}: {exc.reason}", exc.fix)
        return None


def _rule_domain(r: Reader, key: str, text: str) -> str | None:
    stripped = text.strip()
    prefix = ""
    rest = stripped
    for special in ("*.", "{user}.", "{group}."):
        if stripped.lower().startswith(special):
            prefix, rest = special, stripped[len(special) :]
            break
    try:
        return prefix + normalise_domain(rest)
    except DomainError as exc:
        fix = (
            'write a host ("app.example.com"), a wildcard ("*.example.com") or "{user}.example.com"'
        )
        r.error(key, str(exc), f"write {prefix + exc.spelling!r}" if exc.spelling else fix)
        return None


def _subject(r: Reader, key: str, raw: object) -> tuple[tuple[str, ...], ...]:
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        r.error(
            key,
            f"expected a string or list, got {_kind(raw)}",
            'write ["user:alice", "group:admins"]',
        )
        return ()
    out: list[tuple[str, ...]] = []
    for i, item in enumerate(raw):
        inner = item if isinstance(item, list) else [item]
        if not inner:
            r.error(f"{key}[{i}]", "an inner subject list cannot be empty", "remove the []")
            continue
        group: list[str] = []
        for j, entry in enumerate(inner):
            here = f"{key}[{i}][{j}]" if isinstance(item, list) else f"{key}[{i}]"
            if not isinstance(entry, str):
                r.error(here, f"expected a string, got {_kind(entry)}", 'write "user:NAME"')
                continue
            kind, _, name = entry.partition(":")
            try:
                if kind == "user" and name:
                    group.append("user:" + check_username(name))
                elif kind == "group" and name:
                    group.append("group:" + check_group(name))
                else:
                    r.error(
                        here,
                        f"{entry!r} is not a subject",
                        f'write "user:{entry}" or "group:{entry}"'
                        if ":" not in entry
                        else 'write "user:NAME" or "group:NAME"',
                    )
            except ValueError as exc:
                r.error(here, str(exc), "fix the name; it must match the users file")
        if len(group) == len(inner):
            out.append(tuple(group))
    return tuple(out)


def _query(r: Reader, key: str, raw: object) -> tuple[tuple[QueryCondition, ...], ...]:
    if not isinstance(raw, list):
        r.error(
            key,
            f"expected a list of lists of tables, got {_kind(raw)}",
            'write [[{ key = "debug", operator = "present" }]]',
        )
        return ()
    out = []
    for i, inner in enumerate(raw):
        items = inner if isinstance(inner, list) else [inner]
        if not items:
            r.error(f"{key}[{i}]", "an inner query list cannot be empty", "remove the []")
            continue
        conditions = []
        for j, item in enumerate(items):
            here = f"{key}[{i}][{j}]" if isinstance(inner, list) else f"{key}[{i}]"
            tbl = r.table(item, here, KEYS["access_control.rules[].query[][]"])
            if not isinstance(item, dict):
                continue
            name = r.value(tbl, here, "key", str, hint='add key = "NAME"')
            value = r.value(tbl, here, "value", str, None)
            default_op = "equal" if value is not None else "present"
            operator = r.choice(tbl, here, "operator", QUERY_OPERATORS, default_op)
            if name is None or operator is None:
                continue
            if not name:
                r.error(f"{here}.key", "cannot be empty", 'write key = "NAME"')
                continue
            pattern = None
            if operator in ("present", "absent"):
                if value is not None:
                    r.error(
                        f"{here}.value",
                        f"operator {operator!r} takes no value",
                        "remove value, or use operator equal",
                    )
                    continue
            elif value is None:
                r.error(f"{here}.value", f"operator {operator!r} needs a value", 'add value = "…"')
                continue
            elif operator in ("pattern", "not pattern"):
                pattern = _regex(r, f"{here}.value", value)
                if pattern is None:
                    continue
            conditions.append(QueryCondition(name, operator, value, pattern))
        if conditions:
            out.append(tuple(conditions))
    return tuple(out)


def _networks(
    r: Reader, tbl: dict[str, t.Any], key: str, named: dict[str, tuple[IPNetwork, ...]]
) -> list[NetworkRef]:
    networks = []
    for i, text in enumerate(r.string_list(tbl, key, "networks")):
        if text in named:
            networks.append(NetworkRef(text, named[text]))
            continue
        try:
            networks.append(NetworkRef(text, (parse_network(text),)))
        except ValueError:
            close = difflib.get_close_matches(text, list(named), n=1)
            r.error(
                f"{key}.networks[{i}]",
                f"{text!r} is neither an IP, a CIDR nor a name from access_control.networks",
                f"did you mean {close[0]!r}?"
                if close
                else "define it under [access_control.networks] or write a CIDR such as 10.0.0.0/8",
            )
    return networks


def _methods(r: Reader, tbl: dict[str, t.Any], key: str) -> list[str]:
    methods: list[str] = []
    for i, text in enumerate(r.string_list(tbl, key, "methods")):
        if text not in HTTP_METHODS:
            r.error(
                f"{key}.methods[{i}]",
                f"{text!r} is not an HTTP method",
                f"write {text.upper()!r}"
                if text.upper() in HTTP_METHODS
                else f"use upper case: {', '.join(HTTP_METHODS[:9])}, …",
            )
        elif text in methods:
            r.error(f"{key}.methods[{i}]", f"{text!r} is listed twice", "remove the duplicate")
        else:
            methods.append(text)
    return methods


def _rule(
    r: Reader, raw: object, index: int, named: dict[str, tuple[IPNetwork, ...]]
) -> RuleConfig | None:
    key = f"access_control.rules[{index}]"
    tbl = r.table(raw, key, KEYS["access_control.rules[]"])
    if not isinstance(raw, dict):
        return None
    problems_before = len(r.problems)
    chosen = r.choice(tbl, key, "policy", POLICIES, _MISSING)
    policy = None if chosen is None else Policy(chosen)
    domains = []
    for i, text in enumerate(r.string_list(tbl, key, "domain")):
        domain = _rule_domain(r, f"{key}.domain[{i}]", text)
        if domain is not None:
            domains.append(domain)
    domain_regex = []
    for i, text in enumerate(r.string_list(tbl, key, "domain_regex")):
        pattern = _regex(r, f"{key}.domain_regex[{i}]", text)
        if pattern is not None:
            domain_regex.append(pattern)
    if all(tbl.get(name) in (None, []) for name in ("domain", "domain_regex")):
        # An empty list is no criterion at all: the rule would match every host.
        r.error(key, "a rule needs domain or domain_regex", 'add domain = "app.example.com"')
    resources = []
    for i, text in enumerate(r.string_list(tbl, key, "resources")):
        pattern = _regex(r, f"{key}.resources[{i}]", text)
        if pattern is not None:
            resources.append(pattern)
    methods = _methods(r, tbl, key)
    networks = _networks(r, tbl, key, named)
    subject = _subject(r, f"{key}.subject", tbl["subject"]) if "subject" in tbl else ()
    query = _query(r, f"{key}.query", tbl["query"]) if "query" in tbl else ()
    binds_subject = any(
        {"User", "Group"} & set(p.groupindex) for p in (*domain_regex, *resources)
    ) or any(d.startswith(("{user}.", "{group}.")) for d in domains)
    if policy is Policy.BYPASS and (subject or binds_subject):
        r.error(
            f"{key}.policy",
            "a bypass rule cannot depend on who the user is (subject, {user}/{group} or the "
            "named groups User/Group in domain_regex or resources): bypass lets anonymous "
            "requests through before anyone signs in",
            "remove the subject, or use policy one_factor",
        )
    if len(r.problems) != problems_before or policy is None:
        return None
    return RuleConfig(
        index=index,
        policy=policy,
        domain=tuple(domains),
        domain_regex=tuple(domain_regex),
        resources=tuple(resources),
        methods=tuple(methods),
        networks=tuple(networks),
        subject=subject,
        query=query,
        line=locate(r.text, key),
    )


def _named_networks(r: Reader, raw: object, key: str) -> dict[str, tuple[IPNetwork, ...]]:
    named: dict[str, tuple[IPNetwork, ...]] = {}
    nets = r.table(raw, key, raw if isinstance(raw, dict) else ())
    for name, value in nets.items():
        here = f"{key}.{name}"
        if not _NETWORK_NAME.fullmatch(name):
            r.error(
                here,
                f"{name!r} is not a usable network name",
                "use letters, digits, '_' and '-', starting with a letter",
            )
            continue
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            r.error(here, "expected a non-empty list of IPs or CIDRs", 'write ["10.0.0.0/8"]')
            continue
        parsed = []
        for i, item in enumerate(items):
            try:
                if not isinstance(item, str):
                    raise ValueError(item)
                parsed.append(parse_network(item))
            except ValueError:
                r.error(
                    f"{here}[{i}]",
                    f"{item!r} is not an IP address or CIDR",
                    'write "10.0.0.0/8"',
                )
        named[name] = tuple(parsed)
    return named


def access_control(r: Reader, data: dict[str, t.Any]) -> AccessControlConfig:
    key = "access_control"
    tbl = r.table(data.get(key, {}), key, KEYS[key])
    default_policy = Policy(r.option(tbl, key, "default_policy", POLICIES, Policy.DENY))
    named = _named_networks(r, tbl.get("networks", {}), f"{key}.networks")
    rules: list[RuleConfig] = []
    raw_rules = tbl.get("rules", [])
    if not isinstance(raw_rules, list):
        r.error(f"{key}.rules", "must be an array of tables", "write [[access_control.rules]]")
        raw_rules = None
    for index, raw in enumerate(raw_rules or ()):
        rule = _rule(r, raw, index, named)
        if rule is not None:
            rules.append(rule)
    if raw_rules == [] and default_policy in (Policy.BYPASS, Policy.DENY):
        r.error(
            f"{key}.default_policy",
            f"with no rules, default_policy {default_policy!r} would "
            + ("let everyone in" if default_policy is Policy.BYPASS else "refuse every request"),
            'add [[access_control.rules]] or set default_policy = "one_factor"',
        )
    return AccessControlConfig(default_policy, tuple(named.items()), tuple(rules))
