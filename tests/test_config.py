"""Tests for ``server.core.config``: every malformed config is refused with its key path and line,
and a valid one loads with SPEC §2.1's defaults."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from server.core.config import KEYS
from server.core.config import Config
from server.core.config import CookieConfig
from server.core.config import SessionConfig
from server.core.config import WebAuthnConfig
from server.core.config import load_config
from server.core.config import normalise_domain
from server.core.config import parse_config
from server.core.config import parse_network
from server.core.config import read_toml
from server.core.errors import ConfigError
from server.core.errors import Problem
from server.core.errors import UserStoreError
from tests.conftest import BASE_CONFIG

#: A 2048-bit RSA key for the OIDC issuer (tests only).
OIDC_KEY = Path(__file__).parent / "data" / "oidc-rs256.pem"

WriteConfig = Callable[[str], Path]

#: Marks the line a problem must be reported on (a TOML comment, so it changes nothing).
MARK = "#<"


def edit(*pairs: tuple[str, str], append: str = "", base: str = BASE_CONFIG) -> str:
    """``base`` with each ``old`` (which must occur exactly once) replaced, then ``append``."""
    text = base
    for old, new in pairs:
        assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times"
        text = text.replace(old, new)
    return text + append


def rule(body: str, base: str = BASE_CONFIG) -> str:
    """``base`` (BASE_CONFIG: then the rule's index is 3) with one more rule made of ``body``."""
    return edit(append=f"\n[[access_control.rules]]\n{body}\n", base=base)


def rule_at_header(body: str) -> str:
    """Like :func:`rule`, with the mark on the rule's header line."""
    return edit(append=f"\n[[access_control.rules]]  {MARK}\n{body}\n")


COOKIE_BLOCK = """\
[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"
default_redirect_url = "https://www.example.com"
"""


def cookie(old: str, new: str) -> str:
    """BASE_CONFIG with one line of its cookie entry changed."""
    return edit((COOKIE_BLOCK, COOKIE_BLOCK.replace(old, new)))


#: The smallest valid config: one cookie domain, no rules, a one-factor default.
MINIMAL = """\
[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"

[access_control]
default_policy = "one_factor"
"""

SMTP = '\n[notifier.smtp]\nhost = "smtp.example.com"\nsender = "authctl <auth@example.com>"\n'

NETWORKS = 'networks = { internal = ["10.0.0.0/8", "192.168.0.0/16"] }'

NO_SESSION = edit(
    (BASE_CONFIG[BASE_CONFIG.index("[session]") : BASE_CONFIG.index("[access_control]")], "")
)
NO_COOKIES = edit((COOKIE_BLOCK, ""))

# (id, config text, key path of the problem, words the message or fix must contain).
# The problem must be reported on the line carrying MARK, or with no line if none does.
BAD_CONFIGS: list[tuple[str, str, str, str]] = [
    # --- unknown keys, at every level, with a did-you-mean
    ("unknown-section", edit(append=f"\n[sever]  {MARK}\n"), "sever", "did you mean 'server'"),
    (
        "unknown-server-key",
        edit(("threads = 4", f'threads = 4\nadress = "x"  {MARK}')),
        "server.adress",
        "did you mean 'address'",
    ),
    (
        "unknown-inline-table-key",
        edit(("parallelism = 1 }", f"parallelism = 1, memroy_kib = 8 }}  {MARK}")),
        "users.password_hash.memroy_kib",
        "did you mean 'memory_kib'",
    ),
    (
        "unknown-cookie-key",
        cookie('domain = "example.com"', f'domian = "example.com"  {MARK}\ndomain = "example.com"'),
        "session.cookies[0].domian",
        "did you mean 'domain'",
    ),
    (
        "unknown-rule-key",
        rule(f'domain = "x.example.com"\npolicy = "deny"\npolcy = "deny"  {MARK}'),
        "access_control.rules[3].polcy",
        "did you mean 'policy'",
    ),
    (
        "unknown-query-key",
        rule(
            'domain = "x.example.com"\npolicy = "deny"\n'
            f'query = [[{{ key = "a", oprator = "present" }}]]  {MARK}'
        ),
        "access_control.rules[3].query[0][0].oprator",
        "did you mean 'operator'",
    ),
    (
        "unknown-smtp-key",
        edit(append=SMTP + f'hots = "x"  {MARK}\n'),
        "notifier.smtp.hots",
        "did you mean 'host'",
    ),
    (
        "unknown-key-no-close-match",
        edit(append=f"\n[log]\nzzz = 1  {MARK}\n"),
        "log.zzz",
        "known keys: level, format",
    ),
    # --- wrong types
    (
        "section-not-a-table",
        f'log = "debug"  {MARK}\n' + BASE_CONFIG,
        "log",
        "expected a table, got a string",
    ),
    (
        "threads-string",
        edit(("threads = 4", f'threads = "4"  {MARK}')),
        "server.threads",
        "expected an integer, got a string",
    ),
    (
        "threads-boolean",
        edit(("threads = 4", f"threads = true  {MARK}")),
        "server.threads",
        "expected an integer, got a boolean",
    ),
    (
        "address-integer",
        edit(('address = "127.0.0.1:9091"', f"address = 9091  {MARK}")),
        "server.address",
        "put the text in double quotes",
    ),
    (
        "watch-string",
        edit(("watch = true", f'watch = "yes"  {MARK}')),
        "users.watch",
        "expected a boolean, got a string",
    ),
    (
        "trusted-proxies-string",
        edit(('trusted_proxies = ["127.0.0.1/32", "::1/128"]', f'trusted_proxies = "::1"  {MARK}')),
        "server.trusted_proxies",
        "expected a list of strings, got a string",
    ),
    (
        "trusted-proxies-element-int",
        edit(('trusted_proxies = ["127.0.0.1/32", "::1/128"]', f"trusted_proxies = [1]  {MARK}")),
        "server.trusted_proxies[0]",
        "expected a string, got an integer",
    ),
    (
        "cookies-string",
        edit(
            (COOKIE_BLOCK, ""),
            ('store = "memory"', f'store = "memory"\ncookies = "example.com"  {MARK}'),
        ),
        "session.cookies",
        "must be an array of tables",
    ),
    (
        "cookie-domain-int",
        cookie('domain = "example.com"', f"domain = 5  {MARK}"),
        "session.cookies[0].domain",
        "expected a string, got an integer",
    ),
    (
        "digits-float",
        edit(append=f"\n[totp]\ndigits = 6.0  {MARK}\n"),
        "totp.digits",
        "got a number with a fraction",
    ),
    ("rules-string", MINIMAL + f'rules = "x"  {MARK}\n', "access_control.rules", "array of tables"),
    (
        "rule-not-a-table",
        MINIMAL + f'rules = ["x"]  {MARK}\n',
        "access_control.rules[0]",
        "expected a table, got a string",
    ),
    (
        "subject-int",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nsubject = 5  {MARK}'),
        "access_control.rules[3].subject",
        "expected a string or list",
    ),
    (
        "query-string",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nquery = "debug"  {MARK}'),
        "access_control.rules[3].query",
        "expected a list of lists of tables",
    ),
    (
        "networks-not-a-table",
        edit((NETWORKS, f'networks = ["10.0.0.0/8"]  {MARK}')),
        "access_control.networks",
        "expected a table",
    ),
    (
        "named-network-not-a-list",
        edit((NETWORKS, f"networks = {{ internal = 5 }}  {MARK}")),
        "access_control.networks.internal",
        "non-empty list",
    ),
    (
        "smtp-not-a-table",
        edit(append=f'\n[notifier]\nsmtp = "x"  {MARK}\n'),
        "notifier.smtp",
        "expected a table",
    ),
    # --- durations
    (
        "duration-words",
        edit(('expiration = "1h"', f'expiration = "1 hour"  {MARK}')),
        "session.expiration",
        "is not a duration",
    ),
    (
        "duration-negative",
        edit(('inactivity = "5m"', f"inactivity = -5  {MARK}")),
        "session.inactivity",
        "cannot be negative",
    ),
    (
        "duration-unknown-unit",
        edit(('remember_me = "1M"', f'remember_me = "5x"  {MARK}')),
        "session.remember_me",
        "is not a duration",
    ),
    (
        "duration-unicode-digits",
        edit(('remember_me = "1M"', f'remember_me = "\u0663m"  {MARK}')),
        "session.remember_me",
        "is not a duration",
    ),
    (
        "duration-boolean",
        edit(('expiration = "1h"', f"expiration = true  {MARK}")),
        "session.expiration",
        "got a boolean",
    ),
    (
        "duration-float",
        edit(('expiration = "1h"', f"expiration = 1.5  {MARK}")),
        "session.expiration",
        "expected a duration",
    ),
    (
        "duration-below-minimum",
        edit(append=f'\n[regulation]\nfind_time = "0"  {MARK}\n'),
        "regulation.find_time",
        "must be at least 1s",
    ),
    (
        "expiration-zero",
        edit(('expiration = "1h"', f"expiration = 0  {MARK}")),
        "session.expiration",
        "must be at least 1s",
    ),
    # --- portal_url and default_redirect_url
    (
        "portal-http",
        cookie('"https://auth.example.com"', f'"http://auth.example.com"  {MARK}'),
        "session.cookies[0].portal_url",
        "must be an https:// URL",
    ),
    (
        "portal-outside-domain",
        cookie('"https://auth.example.com"', f'"https://auth.example.org"  {MARK}'),
        "session.cookies[0].portal_url",
        "outside the cookie domain",
    ),
    (
        "portal-lookalike-suffix",
        cookie('"https://auth.example.com"', f'"https://authexample.com"  {MARK}'),
        "session.cookies[0].portal_url",
        "outside the cookie domain",
    ),
    (
        "portal-query",
        cookie('"https://auth.example.com"', f'"https://auth.example.com/?x=1"  {MARK}'),
        "session.cookies[0].portal_url",
        "query or fragment",
    ),
    (
        "portal-userinfo",
        cookie('"https://auth.example.com"', f'"https://evil@auth.example.com"  {MARK}'),
        "session.cookies[0].portal_url",
        "user information",
    ),
    (
        "portal-ip",
        cookie('"https://auth.example.com"', f'"https://10.0.0.1"  {MARK}'),
        "session.cookies[0].portal_url",
        "not an IP address",
    ),
    (
        "portal-bad-port",
        cookie('"https://auth.example.com"', f'"https://auth.example.com:99999"  {MARK}'),
        "session.cookies[0].portal_url",
        "invalid port",
    ),
    (
        "portal-port-zero",
        cookie('"https://auth.example.com"', f'"https://auth.example.com:0"  {MARK}'),
        "session.cookies[0].portal_url",
        "invalid port",
    ),
    (
        "portal-backslash",
        cookie('"https://auth.example.com"', f'"https://auth.example.com\\\\@evil.com"  {MARK}'),
        "session.cookies[0].portal_url",
        "backslash",
    ),
    (
        "portal-no-host",
        cookie('"https://auth.example.com"', f'"https:///path"  {MARK}'),
        "session.cookies[0].portal_url",
        "has no host",
    ),
    (
        "portal-missing",
        cookie('portal_url = "https://auth.example.com"\n', "").replace(
            "[[session.cookies]]", f"[[session.cookies]]  {MARK}"
        ),
        "session.cookies[0].portal_url",
        "is required",
    ),
    (
        "default-redirect-outside",
        cookie('"https://www.example.com"', f'"https://www.example.org"  {MARK}'),
        "session.cookies[0].default_redirect_url",
        "outside the cookie domain",
    ),
    (
        "default-redirect-http",
        cookie('"https://www.example.com"', f'"http://www.example.com"  {MARK}'),
        "session.cookies[0].default_redirect_url",
        "https://",
    ),
    # --- cookie domains
    (
        "cookie-domain-ip",
        cookie('domain = "example.com"', f'domain = "192.168.1.1"  {MARK}'),
        "session.cookies[0].domain",
        "cannot be a cookie domain",
    ),
    (
        "cookie-domain-short-ip",
        cookie('domain = "example.com"', f'domain = "127.1"  {MARK}'),
        "session.cookies[0].domain",
        "cannot be a cookie domain",
    ),
    (
        "cookie-domain-ipv6",
        cookie('domain = "example.com"', f'domain = "[::1]"  {MARK}'),
        "session.cookies[0].domain",
        "cannot be a cookie domain",
    ),
    (
        "cookie-domain-localhost",
        cookie('domain = "example.com"', f'domain = "localhost"  {MARK}'),
        "session.cookies[0].domain",
        "cannot be a cookie domain",
    ),
    (
        "cookie-domain-bare-tld",
        cookie('domain = "example.com"', f'domain = "com"  {MARK}'),
        "session.cookies[0].domain",
        "bare top-level domain",
    ),
    (
        "cookie-domain-trailing-dot",
        cookie('domain = "example.com"', f'domain = "example.com."  {MARK}'),
        "session.cookies[0].domain",
        "ends with a dot",
    ),
    (
        "cookie-domain-underscore",
        cookie('domain = "example.com"', f'domain = "exa_mple.com"  {MARK}'),
        "session.cookies[0].domain",
        "not a valid host name",
    ),
    (
        "cookie-domain-empty",
        cookie('domain = "example.com"', f'domain = ""  {MARK}'),
        "session.cookies[0].domain",
        "empty",
    ),
    (
        "cookie-domains-overlap",
        edit(
            (
                COOKIE_BLOCK,
                COOKIE_BLOCK
                + f'[[session.cookies]]\ndomain = "app.example.com"  {MARK}\n'
                + 'portal_url = "https://auth.app.example.com"\n',
            )
        ),
        "session.cookies[1].domain",
        "overlaps the cookie domain 'example.com'",
    ),
    (
        "cookie-domains-duplicate",
        edit(
            (
                COOKIE_BLOCK,
                COOKIE_BLOCK + COOKIE_BLOCK.replace('"example.com"', f'"Example.COM"  {MARK}'),
            )
        ),
        "session.cookies[1].domain",
        "overlaps",
    ),
    (
        "cookies-empty-list",
        edit(
            (COOKIE_BLOCK, ""),
            ('store = "memory"', f'store = "memory"\ncookies = []  {MARK}'),
        ),
        "session.cookies",
        "at least one",
    ),
    ("no-session-section", NO_SESSION, "session.cookies", "at least one [[session.cookies]]"),
    # --- regular expressions
    (
        "bad-domain-regex",
        rule(f'domain_regex = ["("]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].domain_regex[0]",
        "invalid regular expression",
    ),
    (
        "bad-resource-regex",
        rule(f'domain = "x.example.com"\nresources = ["^/ok", "["]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].resources[1]",
        "invalid regular expression",
    ),
    (
        "bad-query-pattern",
        rule(
            'domain = "x.example.com"\npolicy = "deny"\n'
            f'query = [[{{ key = "a", operator = "pattern", value = "(" }}]]  {MARK}'
        ),
        "access_control.rules[3].query[0][0].value",
        "invalid regular expression",
    ),
    # --- networks
    (
        "bad-trusted-proxy-cidr",
        edit(('["127.0.0.1/32", "::1/128"]', f'["127.0.0.1/32", "10.0.0.0/33"]  {MARK}')),
        "server.trusted_proxies[1]",
        "not an IP address or CIDR",
    ),
    (
        "bad-rule-network",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nnetworks = ["300.1.1.1"]  {MARK}'),
        "access_control.rules[3].networks[0]",
        "neither an IP, a CIDR nor a name",
    ),
    (
        "bad-named-network",
        edit(('"192.168.0.0/16"] }', f'"192.168.0.0/40"] }}  {MARK}')),
        "access_control.networks.internal[1]",
        "not an IP address or CIDR",
    ),
    (
        "named-network-item-int",
        edit(('"192.168.0.0/16"] }', f"1] }}  {MARK}")),
        "access_control.networks.internal[1]",
        "not an IP address or CIDR",
    ),
    (
        "bad-named-network-name",
        edit((NETWORKS, f'networks = {{ "10.0.0.1" = ["10.0.0.1"] }}  {MARK}')),
        "access_control.networks.10.0.0.1",
        "not a usable network name",
    ),
    (
        "unknown-named-network",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nnetworks = ["internl"]  {MARK}'),
        "access_control.rules[3].networks[0]",
        "did you mean 'internal'",
    ),
    # --- bypass rules that depend on the user
    (
        "bypass-with-subject",
        rule(f'domain = "x.example.com"\nsubject = "user:alice"\npolicy = "bypass"  {MARK}'),
        "access_control.rules[3].policy",
        "a bypass rule cannot depend on who the user is",
    ),
    (
        "bypass-with-user-group-regex",
        rule(
            f'domain_regex = ["^(?P<User>\\\\w+)\\\\.example\\\\.com$"]\npolicy = "bypass"  {MARK}'
        ),
        "access_control.rules[3].policy",
        "a bypass rule cannot depend on who the user is",
    ),
    (
        "bypass-with-user-domain",
        rule(f'domain = "{{user}}.example.com"\npolicy = "bypass"  {MARK}'),
        "access_control.rules[3].policy",
        "a bypass rule cannot depend on who the user is",
    ),
    # --- the rule list and policies
    (
        "no-rules-default-bypass",
        MINIMAL.replace('"one_factor"', f'"bypass"  {MARK}'),
        "access_control.default_policy",
        "let everyone in",
    ),
    (
        "no-rules-default-deny",
        MINIMAL.replace('"one_factor"', f'"deny"  {MARK}'),
        "access_control.default_policy",
        "refuse every request",
    ),
    (
        "no-access-control-section",
        MINIMAL.replace('[access_control]\ndefault_policy = "one_factor"\n', ""),
        "access_control.default_policy",
        "refuse every request",
    ),
    (
        "default-policy-unknown",
        edit(('default_policy = "deny"', f'default_policy = "allow"  {MARK}')),
        "access_control.default_policy",
        "is not one of bypass, one_factor, two_factor, deny",
    ),
    (
        "rule-without-domain",
        rule_at_header('policy = "deny"'),
        "access_control.rules[3]",
        "a rule needs domain or domain_regex",
    ),
    (
        "rule-with-empty-domain-lists",
        rule_at_header('domain = []\ndomain_regex = []\npolicy = "deny"'),
        "access_control.rules[3]",
        "a rule needs domain or domain_regex",
    ),
    (
        "rule-bad-domain",
        rule(f'domain = ["ok.example.com", "app..example.com"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].domain[1]",
        "not a valid host name",
    ),
    (
        "rule-domain-trailing-dot",
        rule(f'domain = "*.example.com."  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].domain[0]",
        "ends with a dot",
    ),
    (
        "rule-without-policy",
        rule_at_header('domain = "x.example.com"'),
        "access_control.rules[3].policy",
        "is required",
    ),
    (
        "rule-policy-typo",
        rule(f'domain = "x.example.com"\npolicy = "one-factor"  {MARK}'),
        "access_control.rules[3].policy",
        "did you mean 'one_factor'",
    ),
    # --- methods
    (
        "method-lowercase",
        rule(f'domain = "x.example.com"\nmethods = ["get"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].methods[0]",
        "write 'GET'",
    ),
    (
        "method-unknown",
        rule(f'domain = "x.example.com"\nmethods = ["FETCH"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].methods[0]",
        "is not an HTTP method",
    ),
    (
        "method-duplicate",
        rule(f'domain = "x.example.com"\nmethods = ["GET", "GET"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].methods[1]",
        "listed twice",
    ),
    # --- subjects
    (
        "subject-without-prefix",
        rule(f'domain = "x.example.com"\nsubject = ["admin"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].subject[0]",
        'write "user:admin" or "group:admin"',
    ),
    (
        "subject-empty-name",
        rule(f'domain = "x.example.com"\nsubject = ["user:"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].subject[0]",
        "is not a subject",
    ),
    (
        "subject-invalid-user",
        rule(f'domain = "x.example.com"\nsubject = ["user:-bad"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].subject[0]",
        "user name '-bad' is invalid",
    ),
    (
        "subject-group-with-comma",
        rule(f'domain = "x.example.com"\nsubject = ["group:a,b"]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].subject[0]",
        "comma",
    ),
    (
        "subject-inner-invalid",
        rule(
            f'domain = "x.example.com"\nsubject = [["user:alice", "admins"]]  {MARK}\n'
            'policy = "deny"'
        ),
        "access_control.rules[3].subject[0][1]",
        "is not a subject",
    ),
    (
        "subject-inner-empty",
        rule(f'domain = "x.example.com"\nsubject = [["user:a"], []]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].subject[1]",
        "cannot be empty",
    ),
    (
        "subject-inner-int",
        rule(f'domain = "x.example.com"\nsubject = [["user:a", 5]]  {MARK}\npolicy = "deny"'),
        "access_control.rules[3].subject[0][1]",
        "expected a string, got an integer",
    ),
    # --- query conditions
    (
        "query-equal-without-value",
        rule(
            'domain = "x.example.com"\npolicy = "deny"\n'
            f'query = [[{{ key = "a", operator = "equal" }}]]  {MARK}'
        ),
        "access_control.rules[3].query[0][0].value",
        "operator 'equal' needs a value",
    ),
    (
        "query-present-with-value",
        rule(
            'domain = "x.example.com"\npolicy = "deny"\n'
            f'query = [[{{ key = "a", operator = "present", value = "1" }}]]  {MARK}'
        ),
        "access_control.rules[3].query[0][0].value",
        "takes no value",
    ),
    (
        "query-operator-typo",
        rule(
            'domain = "x.example.com"\npolicy = "deny"\n'
            f'query = [[{{ key = "a", operator = "equals", value = "1" }}]]  {MARK}'
        ),
        "access_control.rules[3].query[0][0].operator",
        "did you mean 'equal'",
    ),
    (
        "query-without-key",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nquery = [[{{ value = "1" }}]]  {MARK}'),
        "access_control.rules[3].query[0][0].key",
        "is required",
    ),
    (
        "query-empty-condition",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nquery = [[{{}}]]  {MARK}'),
        "access_control.rules[3].query[0][0].key",
        "is required",
    ),
    (
        "query-empty-key",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nquery = [[{{ key = "" }}]]  {MARK}'),
        "access_control.rules[3].query[0][0].key",
        "cannot be empty",
    ),
    (
        "query-inner-empty",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nquery = [[]]  {MARK}'),
        "access_control.rules[3].query[0]",
        "cannot be empty",
    ),
    (
        "query-condition-not-a-table",
        rule(f'domain = "x.example.com"\npolicy = "deny"\nquery = [["debug"]]  {MARK}'),
        "access_control.rules[3].query[0][0]",
        "expected a table",
    ),
    # --- numeric bounds
    (
        "threads-zero",
        edit(("threads = 4", f"threads = 0  {MARK}")),
        "server.threads",
        "use a number from 1 to 256",
    ),
    (
        "threads-huge",
        edit(("threads = 4", f"threads = 1000  {MARK}")),
        "server.threads",
        "out of range",
    ),
    (
        "argon2-memory-too-low",
        edit(
            ("memory_kib = 8,", "memory_kib = 4,"),
            ("parallelism = 1 }", f"parallelism = 1 }}  {MARK}"),
        ),
        "users.password_hash.memory_kib",
        "out of range",
    ),
    (
        "argon2-memory-too-high",
        edit(
            ("memory_kib = 8,", "memory_kib = 4194304,"),
            ("parallelism = 1 }", f"parallelism = 1 }}  {MARK}"),
        ),
        "users.password_hash.memory_kib",
        "use a number from 8 to 1048576",
    ),
    (
        "argon2-iterations-too-high",
        edit(
            ("iterations = 1,", "iterations = 100,"),
            ("parallelism = 1 }", f"parallelism = 1 }}  {MARK}"),
        ),
        "users.password_hash.iterations",
        "out of range",
    ),
    (
        "argon2-parallelism-zero",
        edit(("parallelism = 1 }", f"parallelism = 0 }}  {MARK}")),
        "users.password_hash.parallelism",
        "out of range",
    ),
    (
        "argon2-memory-per-lane",
        edit(("parallelism = 1 }", f"parallelism = 4 }}  {MARK}")),
        "users.password_hash.memory_kib",
        "8 KiB per lane",
    ),
    (
        "totp-digits-seven",
        edit(append=f"\n[totp]\ndigits = 7  {MARK}\n"),
        "totp.digits",
        "6 or 8",
    ),
    (
        "totp-algorithm",
        edit(append=f'\n[totp]\nalgorithm = "MD5"  {MARK}\n'),
        "totp.algorithm",
        "is not one of SHA1, SHA256, SHA512",
    ),
    (
        "totp-period",
        edit(append=f"\n[totp]\nperiod = 5  {MARK}\n"),
        "totp.period",
        "out of range",
    ),
    (
        "totp-issuer-colon",
        edit(append=f'\n[totp]\nissuer = "a:b"  {MARK}\n'),
        "totp.issuer",
        "':'",
    ),
    (
        "regulation-unknown-mode",
        edit(append=f'\n[regulation]\nmodes = ["user", "usr"]  {MARK}\n'),
        "regulation.modes[1]",
        "is not a mode",
    ),
    (
        "regulation-no-modes",
        edit(append=f"\n[regulation]\nmodes = []  {MARK}\n"),
        "regulation.modes",
        "at least one mode",
    ),
    (
        "regulation-negative-retries",
        edit(append=f"\n[regulation]\nmax_retries = -1  {MARK}\n"),
        "regulation.max_retries",
        "out of range",
    ),
    (
        "same-site-case",
        edit(('store = "memory"', f'same_site = "Lax"  {MARK}')),
        "session.same_site",
        "did you mean 'lax'",
    ),
    (
        "session-store-unknown",
        edit(('store = "memory"', f'store = "files"  {MARK}')),
        "session.store",
        "use one of 'memory', 'sqlite' or 'redis'",
    ),
    (
        "session-name-space",
        edit(('name = "authctl_session"', f'name = "my session"  {MARK}')),
        "session.name",
        "not a valid cookie name",
    ),
    (
        "redis-url-http",
        edit(('store = "memory"', f'redis_url = "http://127.0.0.1"  {MARK}')),
        "session.redis_url",
        "is not a redis URL",
    ),
    (
        "address-without-port",
        edit(('address = "127.0.0.1:9091"', f'address = "localhost"  {MARK}')),
        "server.address",
        "is not host:port",
    ),
    (
        "address-port-too-big",
        edit(('address = "127.0.0.1:9091"', f'address = "127.0.0.1:70000"  {MARK}')),
        "server.address",
        "is not host:port",
    ),
    (
        "address-relative-unix-socket",
        edit(('address = "127.0.0.1:9091"', f'address = "unix:run/a.sock"  {MARK}')),
        "server.address",
        "must be absolute",
    ),
    (
        "address-empty",
        edit(('address = "127.0.0.1:9091"', f'address = ""  {MARK}')),
        "server.address",
        "cannot be empty",
    ),
    (
        "users-file-empty",
        edit(('file = "users.toml"', f'file = "  "  {MARK}')),
        "users.file",
        "cannot be empty",
    ),
    (
        "password-policy-min-above-max",
        edit(append=f"\n[password_policy]\nmin_length = 20  {MARK}\nmax_length = 10\n"),
        "password_policy.min_length",
        "larger than max_length",
    ),
    (
        "log-level",
        edit(append=f'\n[log]\nlevel = "verbose"  {MARK}\n'),
        "log.level",
        "is not one of debug, info, warning, error",
    ),
    # --- the notifier
    (
        "smtp-tls-and-starttls",
        edit(append=SMTP + f"starttls = true\ntls = true  {MARK}\n"),
        "notifier.smtp.tls",
        "exclude each other",
    ),
    (
        "smtp-and-filesystem",
        edit(append=f'\n[notifier]\nfilesystem = "n.txt"  {MARK}\n' + SMTP),
        "notifier.filesystem",
        "both filesystem and smtp are set",
    ),
    (
        "smtp-username-without-password-file",
        edit(append=SMTP + f'username = "auth"  {MARK}\n'),
        "notifier.smtp.username",
        "has no meaning without password_file",
    ),
    (
        "smtp-password-file-without-username",
        edit(append=SMTP + f'password_file = "smtp.pass"  {MARK}\n'),
        "notifier.smtp.password_file",
        "has no meaning without username",
    ),
    (
        "smtp-bad-sender",
        edit(append=SMTP.replace('"authctl <auth@example.com>"', f'"nobody"  {MARK}')),
        "notifier.smtp.sender",
        "not an email address",
    ),
    (
        "smtp-without-host",
        edit(
            append=SMTP.replace('host = "smtp.example.com"\n', "").replace(
                "[notifier.smtp]", f"[notifier.smtp]  {MARK}"
            )
        ),
        "notifier.smtp.host",
        "is required",
    ),
    (
        "smtp-empty-host",
        edit(append=SMTP.replace('"smtp.example.com"', f'""  {MARK}')),
        "notifier.smtp.host",
        "cannot be empty",
    ),
]


def _marked_line(text: str) -> int | None:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if MARK in line]
    assert len(lines) <= 1, f"more than one {MARK} in the case"
    return lines[0] if lines else None


def _problems(write_config: WriteConfig, text: str) -> list[Problem]:
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.problems


def test_enough_bad_configs() -> None:
    """The table of malformed configs is large and its ids are unique."""
    ids = [case[0] for case in BAD_CONFIGS]
    assert len(ids) >= 25
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [case[1:] for case in BAD_CONFIGS],
    ids=[case[0] for case in BAD_CONFIGS],
)
def test_bad_config(write_config: WriteConfig, text: str, key: str, words: str) -> None:
    """A malformed config is refused with a problem naming the file, key path and line."""
    path = write_config(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    found = [p for p in info.value.problems if p.key == key]
    assert found, f"no problem for {key!r} in:\n{message}"
    problem = found[0]
    assert words in f"{problem.message} (fix: {problem.hint})", message
    assert problem.file == path
    assert f"{path}" in message
    assert f": {key}: " in message
    assert problem.line == _marked_line(text), message
    if problem.line is not None:
        assert f"{path}:{problem.line}:" in message
    assert problem.hint, f"no fix offered for {key}"


# (id, file content, key path being written there, line, column, words in the message).
SYNTAX_ERRORS: list[tuple[str, bytes, str, int, int, str]] = [
    (
        "truncated-in-a-string",
        BASE_CONFIG[: BASE_CONFIG.index("users.toml")].encode(),
        "users.file",
        7,
        9,
        "Unterminated string",
    ),
    (
        "truncated-in-an-array",
        BASE_CONFIG[: BASE_CONFIG.index(', "::1/128"')].encode(),
        "server.trusted_proxies[0]",
        3,
        34,
        "Unclosed array",
    ),
    (
        "truncated-header",
        b"[server]\nthreads = 4\n[sess\n",
        "server.threads",
        3,
        6,
        "Expected ']'",
    ),
    (
        "duplicate-key",
        edit(("threads = 4", "threads = 4\nthreads = 2")).encode(),
        "server.threads",
        5,
        12,
        "a key is set twice",
    ),
    (
        "duplicate-table",
        (BASE_CONFIG + "\n[server]\nthreads = 2\n").encode(),
        "server",
        45,
        8,
        "a table is declared twice",
    ),
    (
        "unquoted-string",
        edit(('store = "memory"', "store = memory")).encode(),
        "session.store",
        20,
        9,
        "Invalid value",
    ),
    (
        "capitalised-boolean",
        edit(("watch = true", "watch = True")).encode(),
        "users.watch",
        8,
        9,
        "write true/false in lower case",
    ),
    (
        "control-character",
        edit(('name = "authctl_session"', 'name = "authctl\x01session"')).encode(),
        "session.name",
        16,
        16,
        "Illegal character",
    ),
    (
        "inline-table-over-two-lines",
        edit(("parallelism = 1 }", "parallelism = 1\n}")).encode(),
        "users.password_hash.parallelism",
        9,
        66,
        "an inline table must fit on one line",
    ),
    (
        "utf8-bom",
        b"\xef\xbb\xbf" + BASE_CONFIG.encode(),
        "",
        1,
        1,
        "byte-order mark",
    ),
    (
        "not-utf8",
        edit(('name = "authctl_session"', 'name = "caf\udce9"')).encode("utf-8", "surrogateescape"),
        "",
        16,
        12,
        "is not valid UTF-8",
    ),
]


@pytest.mark.parametrize(
    ("raw", "key", "line", "column", "words"),
    [case[1:] for case in SYNTAX_ERRORS],
    ids=[case[0] for case in SYNTAX_ERRORS],
)
def test_syntax_error(
    tmp_path: Path, raw: bytes, key: str, line: int, column: int, words: str
) -> None:
    """A file that is not valid UTF-8 TOML is refused with its line, column and (if known) key."""
    path = tmp_path / "authctl.toml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 1
    problem = info.value.problems[0]
    assert (problem.key, problem.line, problem.column) == (key, line, column), str(info.value)
    assert words in f"{problem.message} (fix: {problem.hint})"
    assert str(info.value).startswith(f"{path}:{line}:{column}: ")
    assert problem.hint


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (None, "file not found"),
        ("dir", "is a directory"),
        ("", "is empty"),
        ("\n \t\n", "is empty"),
    ],
    ids=["missing", "directory", "empty", "only-white-space"],
)
def test_unreadable_file(tmp_path: Path, content: str | None, words: str) -> None:
    """A missing, directory or empty config file is refused with the file's name and a fix."""
    path = tmp_path / "authctl.toml"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    (problem,) = info.value.problems
    assert problem.file == path
    assert words in problem.message
    assert problem.hint
    assert str(info.value).startswith(f"{path}: ")


def test_unreadable_permissions(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A config the process may not read is refused as such, not as a crash."""
    if os.geteuid() != 0:
        config_file.chmod(0)
    else:  # root reads any file, so make reading fail the way it would for anyone else

        def refuse(self: Path) -> bytes:
            raise PermissionError(13, "Permission denied", str(self))

        monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(ConfigError, match="permission denied"):
        load_config(config_file)


def test_other_os_error(tmp_path: Path) -> None:
    """Any other OS error while reading is reported with its reason."""
    path = tmp_path / ("x" * 300)
    with pytest.raises(ConfigError, match="cannot be read: File name too long"):
        load_config(path)


def test_read_toml_raises_the_given_error(tmp_path: Path) -> None:
    """``read_toml`` raises the error class its caller asks for (the users loader's, say)."""
    path = tmp_path / "users.toml"
    path.write_text("[users.alice\n", encoding="utf-8")
    with pytest.raises(UserStoreError, match=r"users.toml:1:13: invalid TOML"):
        read_toml(path, UserStoreError)


def test_every_problem_is_reported_in_file_order(write_config: WriteConfig) -> None:
    """All problems of a file come in one error, sorted by line, so one run fixes them all."""
    text = edit(
        ("threads = 4", "threads = 0"),
        ('store = "memory"', 'store = "files"'),
        ('policy = "one_factor"', 'policy = "one-factor"'),
    )
    problems = _problems(write_config, text)
    assert [p.key for p in problems] == [
        "server.threads",
        "session.store",
        "access_control.rules[2].policy",
    ]
    assert [p.line for p in problems] == [4, 20, 43]


def test_problem_columns_point_at_list_elements(write_config: WriteConfig) -> None:
    """A bad element of a one-line list is reported at its own column."""
    text = edit(('["127.0.0.1/32", "::1/128"]', '["127.0.0.1/32", "nope"]'))
    (problem,) = _problems(write_config, text)
    assert (problem.line, problem.column) == (3, 36)


# --------------------------------------------------------------------------- valid configs


def test_base_config_loads(config_file: Path) -> None:
    """The shared BASE_CONFIG loads into the expected objects."""
    config = load_config(config_file)
    assert isinstance(config, Config)
    assert config.path == config_file
    assert config.base_dir == config_file.parent
    assert config.server.threads == 4
    assert config.users.password_hash.memory_kib == 8
    assert config.session.store == "memory"
    assert config.session.cookies == (
        CookieConfig("example.com", "https://auth.example.com", "https://www.example.com"),
    )
    rules = config.access_control.rules
    assert [r.policy for r in rules] == ["bypass", "two_factor", "one_factor"]
    assert [r.domain for r in rules] == [
        ("public.example.com",),
        ("app.example.com",),
        ("*.example.com",),
    ]
    assert [r.line for r in rules] == [31, 35, 41]
    assert rules[1].resources[0].search("/admin/x")
    assert rules[1].subject == (("group:admins",),)
    assert dict(config.access_control.networks)["internal"] == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.0.0/16"),
    )


def test_spec_defaults(write_config: WriteConfig) -> None:
    """Every key left out takes the default SPEC §2.1 gives it."""
    path = write_config(MINIMAL)
    c = load_config(path)
    base = path.parent
    assert c.server.address == "127.0.0.1:9091"
    assert (c.server.host, c.server.port, c.server.unix_socket) == ("127.0.0.1", 9091, None)
    assert c.server.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("::1/128"),
    )
    assert c.server.threads == 8
    assert c.users.file == base / "users.toml"
    assert c.users.watch is True
    assert (
        c.users.password_hash.memory_kib,
        c.users.password_hash.iterations,
        c.users.password_hash.parallelism,
    ) == (65536, 3, 4)
    assert c.storage.path == base / "authctl.db"
    assert c.storage.encryption_key_file == base / "secrets" / "storage.key"
    s = c.session
    assert s.name == "authctl_session"
    assert s.same_site == "lax"
    assert (s.expiration, s.inactivity, s.remember_me) == (3600, 300, 30 * 86400)
    assert s.store == "sqlite"
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.cookies[0].default_redirect_url is None
    assert (c.totp.issuer, c.totp.algorithm, c.totp.digits, c.totp.period, c.totp.skew) == (
        "authctl",
        "SHA1",
        6,
        30,
        1,
    )
    g = c.regulation
    assert (g.max_retries, g.find_time, g.ban_time, g.modes) == (3, 120, 300, ("user",))
    assert c.notifier.filesystem == base / "notifications.txt"
    assert c.notifier.smtp is None
    assert c.access_control.default_policy == "one_factor"
    assert c.access_control.rules == ()
    assert c.access_control.networks == ()
    assert (c.password_policy.min_length, c.password_policy.max_length) == (8, 128)
    assert (c.log.level, c.log.format) == ("info", "text")


def test_default_policy_is_deny(write_config: WriteConfig) -> None:
    """With rules and no default_policy, requests no rule matches are denied."""
    text = MINIMAL.replace(
        'default_policy = "one_factor"\n',
        '\n[[access_control.rules]]\ndomain = "*.example.com"\npolicy = "one_factor"\n',
    )
    assert load_config(write_config(text)).access_control.default_policy == "deny"


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative paths are taken from the config's folder, not the working directory."""
    folder = tmp_path / "etc" / "authctl"
    folder.mkdir(parents=True)
    (folder / "authctl.toml").write_text(
        MINIMAL
        + '\n[users]\nfile = "data/users.toml"\n'
        + '\n[storage]\npath = "../db/authctl.db"\nencryption_key_file = "/abs/storage.key"\n'
        + SMTP
        + 'username = "auth"\npassword_file = "smtp.pass"\n',
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(Path("../etc/authctl/authctl.toml"))
    assert config.path.is_absolute()
    assert config.users.file == folder / "data" / "users.toml"
    assert config.storage.path == tmp_path / "etc" / "db" / "authctl.db"
    assert config.storage.encryption_key_file == Path("/abs/storage.key")
    assert config.notifier.smtp is not None
    assert config.notifier.smtp.password_file == folder / "smtp.pass"


def test_home_is_expanded(write_config: WriteConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path starting with ``~`` is in the home folder."""
    monkeypatch.setenv("HOME", "/home/auth")
    config = load_config(write_config(MINIMAL + '\n[users]\nfile = "~/users.toml"\n'))
    assert config.users.file == Path("/home/auth/users.toml")


def test_subjects_are_canonical(write_config: WriteConfig) -> None:
    """``user:Alice`` is stored as ``user:alice``; outer lists OR, inner lists AND."""
    text = rule(
        'domain = "x.example.com"\n'
        'subject = ["user:Alice", ["user:\uff22\uff2f\uff22", "group:Dev"], "group:admins"]\n'
        'policy = "one_factor"'
    )
    subject = load_config(write_config(text)).access_control.rules[3].subject
    assert subject == (("user:alice",), ("user:bob", "group:Dev"), ("group:admins",))


def test_subject_as_one_string(write_config: WriteConfig) -> None:
    """A single subject may be written as a plain string."""
    text = rule('domain = "x.example.com"\nsubject = "user:bob"\npolicy = "deny"')
    assert load_config(write_config(text)).access_control.rules[3].subject == (("user:bob",),)


def test_ipv4_mapped_networks_become_ipv4(write_config: WriteConfig) -> None:
    """IPv4-mapped IPv6 networks are stored as the IPv4 networks they stand for."""
    text = rule(
        'domain = "x.example.com"\nnetworks = ["::ffff:203.0.113.7"]\npolicy = "deny"',
        base=edit(
            ('["127.0.0.1/32", "::1/128"]', '["::ffff:127.0.0.1", "::ffff:10.0.0.0/104"]'),
            ('"192.168.0.0/16"]', '"::ffff:192.168.0.0/112"]'),
        ),
    )
    config = load_config(write_config(text))
    assert config.server.trusted_proxies == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("10.0.0.0/8"),
    )
    assert dict(config.access_control.networks)["internal"][1] == ipaddress.ip_network(
        "192.168.0.0/16"
    )
    (ref,) = config.access_control.rules[3].networks
    assert (ref.text, ref.networks) == (
        "::ffff:203.0.113.7",
        (ipaddress.ip_network("203.0.113.7/32"),),
    )


def test_named_networks_are_resolved_in_rules(write_config: WriteConfig) -> None:
    """A rule naming a network carries that network's CIDRs, and a lone string is a list."""
    text = rule(
        'domain = "x.example.com"\nnetworks = ["internal", "::1"]\npolicy = "deny"',
        base=edit((NETWORKS, 'networks = { internal = "10.0.0.0/8" }')),
    )
    refs = load_config(write_config(text)).access_control.rules[3].networks
    assert [(r.text, r.networks) for r in refs] == [
        ("internal", (ipaddress.ip_network("10.0.0.0/8"),)),
        ("::1", (ipaddress.ip_network("::1/128"),)),
    ]


def test_idna_domains(write_config: WriteConfig) -> None:
    """Unicode domains are IDNA-encoded and lowercased everywhere they are compared."""
    text = (
        '[[session.cookies]]\ndomain = "B\u00fccher.Example"\n'
        'portal_url = "https://Auth.B\u00fccher.example/login/"\n'
        'default_redirect_url = "https://www.b\u00fccher.example/caf\u00e9?q=\u00e9"\n'
        "\n[[access_control.rules]]\n"
        'domain = ["*.B\u00fccher.example", "{user}.b\u00fccher.example"]\n'
        'policy = "one_factor"\n'
    )
    config = load_config(write_config(text))
    (cookie,) = config.session.cookies
    assert cookie.domain == "xn--bcher-kva.example"
    assert cookie.portal_url == "https://auth.xn--bcher-kva.example/login"
    assert cookie.default_redirect_url == ("https://www.xn--bcher-kva.example/caf%C3%A9?q=%C3%A9")
    assert config.access_control.rules[0].domain == (
        "*.xn--bcher-kva.example",
        "{user}.xn--bcher-kva.example",
    )
    # An upper-case non-ASCII letter is a spelling a request may not use (server.core.urls):
    # refused here too, with the spelling to write.
    with pytest.raises(ConfigError) as info:
        load_config(write_config(text.replace("*.B\u00fccher", "*.B\u00dcCHER")))
    assert info.value.problems[0].hint == "write '*.b\u00fccher.example'"


def test_portal_url_keeps_port_and_drops_trailing_slash(write_config: WriteConfig) -> None:
    """The portal URL is stored without a trailing slash, with its explicit port."""
    text = cookie('"https://auth.example.com"', '"https://auth.example.com:8443/"')
    assert load_config(write_config(text)).session.cookies[0].portal_url == (
        "https://auth.example.com:8443"
    )


def test_several_cookie_domains(write_config: WriteConfig) -> None:
    """Disjoint cookie domains load, and ``cookie_for`` picks the one covering a host."""
    text = edit(
        (
            COOKIE_BLOCK,
            COOKIE_BLOCK
            + '[[session.cookies]]\ndomain = "example.org"\n'
            + 'portal_url = "https://example.org/auth"\n',
        )
    )
    session = load_config(write_config(text)).session
    assert [c.domain for c in session.cookies] == ["example.com", "example.org"]
    assert session.cookie_for("a.b.example.org") is session.cookies[1]
    assert session.cookie_for("example.com") is session.cookies[0]
    assert session.cookie_for("badexample.com") is None
    assert session.cookie_for("example.net") is None


def test_cookie_covers() -> None:
    """A cookie domain covers itself and its subdomains, never a look-alike suffix."""
    c = CookieConfig("example.com", "https://auth.example.com")
    assert c.covers("example.com")
    assert c.covers("a.b.example.com")
    assert not c.covers("notexample.com")
    assert not c.covers("example.com.evil.net")
    assert SessionConfig(cookies=(c,)).cookie_for("x.example.com") is c


def test_rule_criteria(write_config: WriteConfig) -> None:
    """Every criterion of a rule is parsed: regexes compiled, query operators defaulted."""
    text = rule(
        'domain_regex = "^(?P<User>\\\\w+)\\\\.example\\\\.com$"\n'
        'resources = "^/api"\n'
        'methods = ["GET", "PROPFIND"]\n'
        "query = [\n"
        '  [{ key = "debug" }, { key = "v", value = "2" }],\n'
        '  { key = "q", operator = "not pattern", value = "^x" },\n'
        "]\n"
        'policy = "two_factor"'
    )
    r = load_config(write_config(text)).access_control.rules[3]
    assert r.domain == ()
    assert r.domain_regex[0].captures("alice.example.com") == {"User": "alice"}
    assert r.resources[0].pattern == "^/api"
    assert r.methods == ("GET", "PROPFIND")
    first, second = r.query
    assert [(q.key, q.operator, q.value) for q in first] == [
        ("debug", "present", None),
        ("v", "equal", "2"),
    ]
    (q,) = second
    assert (q.key, q.operator, q.value) == ("q", "not pattern", "^x")
    assert q.pattern is not None
    assert q.pattern.search("xyz")


def test_smtp_settings(write_config: WriteConfig) -> None:
    """SMTP defaults to STARTTLS on 587; ``tls = true`` means implicit TLS on 465."""
    config = load_config(write_config(edit(append=SMTP)))
    smtp = config.notifier.smtp
    assert smtp is not None
    assert config.notifier.filesystem is None
    assert (smtp.host, smtp.port, smtp.starttls, smtp.tls) == ("smtp.example.com", 587, True, False)
    assert (smtp.username, smtp.password_file, smtp.timeout, smtp.startup_check) == (
        None,
        None,
        10,
        True,
    )
    smtp = load_config(write_config(edit(append=SMTP + "tls = true\n"))).notifier.smtp
    assert smtp is not None
    assert (smtp.port, smtp.starttls, smtp.tls) == (465, False, True)


def test_server_addresses(write_config: WriteConfig) -> None:
    """An IPv6 host:port and a unix socket are both understood."""
    text = edit(('address = "127.0.0.1:9091"', 'address = "[::1]:8080"'))
    server = load_config(write_config(text)).server
    assert (server.host, server.port, server.unix_socket) == ("::1", 8080, None)
    text = edit(('address = "127.0.0.1:9091"', 'address = "unix:/run/authctl.sock"'))
    server = load_config(write_config(text)).server
    assert server.unix_socket == "/run/authctl.sock"


def test_empty_trusted_proxies_trusts_nobody(write_config: WriteConfig) -> None:
    """``trusted_proxies = []`` is kept empty rather than replaced by the default."""
    text = edit(('["127.0.0.1/32", "::1/128"]', "[]"))
    assert load_config(write_config(text)).server.trusted_proxies == ()


def test_regulation_modes(write_config: WriteConfig) -> None:
    """Regulation modes may be a string or a list, and repeats collapse."""
    text = edit(append='\n[regulation]\nmodes = ["ip", "user", "ip"]\nmax_retries = 0\n')
    regulation = load_config(write_config(text)).regulation
    assert (regulation.modes, regulation.max_retries) == (("ip", "user"), 0)
    text = edit(append='\n[regulation]\nmodes = "ip"\n')
    assert load_config(write_config(text)).regulation.modes == ("ip",)


def test_parse_config_without_a_file() -> None:
    """``parse_config`` validates already parsed data (as ``rules check`` may do)."""
    import tomllib

    config = parse_config(MINIMAL, tomllib.loads(MINIMAL), Path("/etc/authctl/authctl.toml"))
    assert config.users.file == Path("/etc/authctl/users.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.1", "10.0.0.1/32"),
        (" 10.0.0.0/8 ", "10.0.0.0/8"),
        ("10.1.2.3/8", "10.0.0.0/8"),
        ("::1", "::1/128"),
        ("::ffff:10.0.0.1", "10.0.0.1/32"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("2001:db8::/32", "2001:db8::/32"),
    ],
)
def test_parse_network(text: str, expected: str) -> None:
    """Addresses and CIDRs parse to networks, host bits cleared, mapped IPv6 made IPv4."""
    assert parse_network(text) == ipaddress.ip_network(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", "example.com"),
        ("b\u00fccher.example", "xn--bcher-kva.example"),
        ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ("a-b.c", "a-b.c"),
    ],
)
def test_normalise_domain(text: str, expected: str) -> None:
    """Host names are lowercased and IDNA-encoded."""
    assert normalise_domain(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "example.com.",
        "a..b",
        "-a.com",
        "a_b.com",
        "a b.com",
        "x" * 64 + ".com",
        "a.b/c",
        "a%2eb",
    ],
)
def test_normalise_domain_refuses(text: str) -> None:
    """Anything but dot-separated letter-digit-hyphen labels is refused."""
    with pytest.raises(ValueError, match=r"host name|ends with a dot|empty"):
        normalise_domain(text)


#: A small valid SVG logo (with an XML declaration, a comment and a DOCTYPE before the root).
SVG_LOGO = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<!-- logo -->\n'
    '<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
    '"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n'
    '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="32">'
    '<rect width="32" height="32" fill="#06c"/></svg>\n'
)

#: A config that sets every key the loader knows (SMTP rather than the file notifier).
FULL_CONFIG = """\
[server]
address = "0.0.0.0:9091"
trusted_proxies = ["10.0.0.0/8"]
threads = 16
shutdown_grace = "5s"
inline_authz = false
watch_config = true

[users]
file = "users.toml"
watch = false
password_hash = { memory_kib = 1024, iterations = 2, parallelism = 2 }

[storage]
backend = "postgres"
path = "authctl.db"
encryption_key_file = "storage.key"

[storage.postgres]
dsn = "host=db1,db2 dbname=authctl user=authctl target_session_attrs=read-write"
password_file = "secrets/postgres.password"
pool_size = 4
timeout = "3s"

[session]
name = "sso"
same_site = "strict"
expiration = "2h"
inactivity = "10m"
remember_me = "0"
store = "redis"
redis_url = "rediss://redis.example.com:6380/1"
redis_password_file = "secrets/redis.password"
redis_sentinel = { master_name = "authctl", nodes = ["10.0.0.1:26379", "[::1]:26380"] }

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"
default_redirect_url = "https://example.com/home"

[totp]
issuer = "Example SSO"
algorithm = "SHA256"
digits = 8
period = 60
skew = 0

[regulation]
max_retries = 5
find_time = "10m"
ban_time = "1h"
modes = ["user", "ip"]

[notifier.smtp]
host = "smtp.example.com"
port = 2525
username = "authctl"
password_file = "smtp.pass"
sender = "Example SSO <sso@example.com>"
starttls = false
tls = true
timeout = "30s"
startup_check = false

[password_policy]
min_length = 12
max_length = 64
check_common = false

[log]
level = "debug"
format = "json"
audit_file = "logs/audit.log"

[telemetry.metrics]
enable = true
address = "[::1]:9960"

[portal]
title = "Example SSO"
logo_file = "branding/logo.svg"
custom_css_file = "branding/custom.css"
theme = "dark"

[webauthn]
enable = false
display_name = "Example SSO"
rp_id = "example.com"
attestation = "direct"
user_verification = "required"
timeout = "2m"
passkey_login = false
passkey_uv_two_factor = false

[identity_providers.oidc]
enable = true
issuer_private_key_file = "secrets/oidc.pem"
access_token_lifespan = "30m"
authorize_code_lifespan = "30s"
id_token_lifespan = "15m"
refresh_token_lifespan = "2h"
enforce_pkce = "always"

[[identity_providers.oidc.clients]]
client_id = "grafana"
client_name = "Grafana"
client_secret = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$\
MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTI"
public = false
redirect_uris = ["https://grafana.example.com/login/generic_oauth"]
scopes = ["openid", "profile", "email", "groups", "offline_access"]
authorization_policy = "one_factor"
consent_mode = "pre-configured"
pre_configured_consent_duration = "1w"
token_endpoint_auth_method = "client_secret_post"

[access_control]
default_policy = "two_factor"
networks = { internal = ["10.0.0.0/8"] }

[[access_control.rules]]
domain = "*.example.com"
domain_regex = ["^(?P<User>[a-z]+)\\\\.example\\\\.com$"]
resources = ["^/admin"]
methods = ["POST"]
networks = ["internal"]
subject = ["group:admins"]
query = [[{ key = "debug", operator = "equal", value = "1" }]]
policy = "deny"
"""


def _key_table(data: dict[str, object], table: str = "") -> set[tuple[str, str]]:
    """Every ``(table, key)`` written in parsed TOML, spelled as in ``KEYS``."""
    out = set()
    for name, value in data.items():
        out.add((table, name))
        path = f"{table}.{name}" if table else name
        if table == "access_control" and name == "networks":
            continue  # its keys are the network names the user chose
        if isinstance(value, dict):
            out |= _key_table(value, path)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    out |= _key_table(item, f"{path}[]")
                elif isinstance(item, list):
                    for cell in item:
                        assert isinstance(cell, dict)
                        out |= _key_table(cell, f"{path}[][]")
    return out


def test_keys_table_is_exactly_what_the_reader_accepts(write_config: WriteConfig) -> None:
    """A config using every key of ``KEYS`` loads, and uses no key ``KEYS`` lacks."""
    import tomllib

    path = write_config(FULL_CONFIG)
    (path.parent / "branding").mkdir()
    (path.parent / "branding" / "logo.svg").write_text(SVG_LOGO, encoding="utf-8")
    (path.parent / "branding" / "custom.css").write_text("h1 { color: teal; }\n")
    (path.parent / "secrets").mkdir()
    (path.parent / "secrets" / "oidc.pem").write_bytes(OIDC_KEY.read_bytes())
    config = load_config(path)
    written = _key_table(tomllib.loads(FULL_CONFIG))
    written.add(("notifier", "filesystem"))  # excludes smtp; tested in test_spec_defaults
    assert written == {(table, key) for table, keys in KEYS.items() for key in keys}
    assert config.server.threads == 16
    assert config.server.shutdown_grace == 5
    assert config.server.inline_authz is False
    assert config.session.remember_me == 0
    assert config.totp.digits == 8
    assert config.notifier.smtp is not None
    assert config.notifier.smtp.port == 2525
    assert config.access_control.rules[0].query[0][0].value == "1"
    assert config.storage.backend == "postgres"
    assert config.storage.postgres is not None
    assert config.storage.postgres.pool_size == 4
    assert config.storage.postgres.timeout == 3
    assert config.storage.postgres.password_file is not None
    assert config.storage.postgres.password_file.name == "postgres.password"
    assert config.session.redis_password_file is not None
    assert config.session.redis_sentinel is not None
    assert config.session.redis_sentinel.nodes == (("10.0.0.1", 26379), ("::1", 26380))
    assert config.server.watch_config is True
    assert config.log.audit_file == path.parent / "logs" / "audit.log"
    assert config.telemetry.metrics.enable is True
    assert (config.telemetry.metrics.host, config.telemetry.metrics.port) == ("::1", 9960)
    assert config.portal.title == "Example SSO"
    assert config.portal.theme == "dark"
    assert config.portal.logo_type == "image/svg+xml"
    assert config.portal.logo == SVG_LOGO.encode()
    assert config.portal.custom_css == "h1 { color: teal; }\n"
    assert config.webauthn == WebAuthnConfig(
        enable=False,
        display_name="Example SSO",
        rp_id="example.com",
        attestation="direct",
        user_verification="required",
        timeout=120,
        passkey_login=False,
        passkey_uv_two_factor=False,
    )
    oidc = config.identity_providers.oidc
    assert (oidc.enable, oidc.enforce_pkce, oidc.authorize_code_lifespan) == (True, "always", 30)
    assert oidc.issuer_key_pem == OIDC_KEY.read_bytes()
    assert oidc.clients[0].token_endpoint_auth_method == "client_secret_post"
    assert oidc.clients[0].pre_configured_consent_duration == 7 * 86400


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ('[storage]\nbackend = "postgres"\n', "storage.postgres", "needs a [storage.postgres]"),
        ('[storage]\nbackend = "mysql"\n', "storage.backend", "not one of"),
        (
            '[storage.postgres]\ndsn = "postgresql://authctl:hunter2@db/authctl"\n',
            "storage.postgres.dsn",
            "holds a password",
        ),
        (
            '[storage.postgres]\ndsn = "host=db password=hunter2"\n',
            "storage.postgres.dsn",
            "holds a password",
        ),
        ('[storage.postgres]\ndsn = " "\n', "storage.postgres.dsn", "cannot be empty"),
        ("[storage.postgres]\npool_size = 3\n", "storage.postgres.dsn", "is required"),
        (
            '[storage.postgres]\ndsn = "host=db"\npool_size = 0\n',
            "storage.postgres.pool_size",
            "out of range",
        ),
        (
            '[session.redis_sentinel]\nmaster_name = "m"\nnodes = ["h"]\n',
            "session.redis_sentinel.nodes[0]",
            "not host:port",
        ),
        (
            '[session.redis_sentinel]\nmaster_name = "m"\nnodes = [26379]\n',
            "session.redis_sentinel.nodes[0]",
            "not host:port",
        ),
        (
            '[session.redis_sentinel]\nmaster_name = "m"\nnodes = []\n',
            "session.redis_sentinel.nodes",
            "lists no Sentinel",
        ),
        (
            '[session.redis_sentinel]\nmaster_name = ""\nnodes = ["h:1"]\n',
            "session.redis_sentinel.master_name",
            "cannot be empty",
        ),
        (
            '[session.redis_sentinel]\nnodes = ["h:1"]\n',
            "session.redis_sentinel.master_name",
            "is required",
        ),
        ("[session]\nredis_sentinel = 3\n", "session.redis_sentinel", "expected a table"),
        ("[storage]\npostgres = 3\n", "storage.postgres", "expected a table"),
    ],
)
def test_many_hosts_keys_are_checked(
    write_config: WriteConfig, body: str, field: str, words: str
) -> None:
    """[storage.postgres] and [session.redis_sentinel] name the field and the fix (SPEC §7.2)."""
    problems = _problems(write_config, body)
    assert any(p.key == field and words in p.message for p in problems), problems


#: A PNG signature and the start of an IHDR chunk: enough for the check by content.
PNG_LOGO = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(17)


def _put(name: str, content: bytes) -> Callable[[Path], None]:
    def put(folder: Path) -> None:
        (folder / name).write_bytes(content)

    return put


def _fifo(folder: Path) -> None:
    os.mkfifo(folder / "logo.svg")


def _folder(folder: Path) -> None:
    (folder / "logo.svg").mkdir()


def _nothing(folder: Path) -> None:
    del folder


@pytest.mark.parametrize(
    ("body", "setup", "field", "words", "fix"),
    [
        ("[server]\nwatch_config = 1\n", _nothing, "server.watch_config", "boolean", "true"),
        ("[log]\naudit_file = 3\n", _nothing, "log.audit_file", "expected a string", "audit"),
        ("[telemetry]\nmetrics = 3\n", _nothing, "telemetry.metrics", "expected a table", "["),
        ("[telemetry]\nmetric = {}\n", _nothing, "telemetry.metric", "unknown key", "metrics"),
        (
            '[telemetry.metrics]\nenable = "yes"\n',
            _nothing,
            "telemetry.metrics.enable",
            "got a string",
            "true or false",
        ),
        (
            '[telemetry.metrics]\naddress = "localhost"\n',
            _nothing,
            "telemetry.metrics.address",
            "not host:port",
            "127.0.0.1:9959",
        ),
        (
            '[telemetry.metrics]\naddress = "127.0.0.1:70000"\n',
            _nothing,
            "telemetry.metrics.address",
            "not host:port",
            "127.0.0.1:9959",
        ),
        (
            '[telemetry.metrics]\nenable = true\naddress = "127.0.0.1:9091"\n',
            _nothing,
            "telemetry.metrics.address",
            "the server's own address",
            "another port",
        ),
        ('[portal]\ntitle = ""\n', _nothing, "portal.title", "cannot be empty", "title ="),
        ('[portal]\ntitle = "a\\nb"\n', _nothing, "portal.title", "control characters", "line"),
        ('[portal]\ntitle = "a\\u0085b"\n', _nothing, "portal.title", "control characters", "line"),
        (f'[portal]\ntitle = "{"x" * 65}"\n', _nothing, "portal.title", "limit is 64", "shorten"),
        ('[portal]\ntheme = "darkk"\n', _nothing, "portal.theme", "not one of", "'dark'"),
        ("[portal]\ntheme = 1\n", _nothing, "portal.theme", "expected a string", "auto"),
        (
            '[portal]\nlogo_file = "logo.svg"\n',
            _nothing,
            "portal.logo_file",
            "does not exist",
            "config file's folder",
        ),
        (
            '[portal]\nlogo_file = "logo.svg"\n',
            _folder,
            "portal.logo_file",
            "not a regular file",
            "name a file",
        ),
        (
            '[portal]\nlogo_file = "logo.svg"\n',
            _fifo,
            "portal.logo_file",
            "not a regular file",
            "name a file",
        ),
        (
            '[portal]\nlogo_file = "logo.svg/x"\n',
            _put("logo.svg", b"<svg/>"),
            "portal.logo_file",
            "cannot be opened",
            "readable",
        ),
        (
            '[portal]\nlogo_file = "logo.gif"\n',
            _put("logo.gif", b"GIF89a" + bytes(20)),
            "portal.logo_file",
            "neither an SVG nor a PNG",
            "convert",
        ),
        (
            '[portal]\nlogo_file = "logo.svg"\n',
            _put("logo.svg", b"<html><body><svg></svg><script>alert(1)</script></body></html>"),
            "portal.logo_file",
            "neither an SVG nor a PNG",
            "convert",
        ),
        (
            '[portal]\nlogo_file = "logo.svg"\n',
            _put("logo.svg", b"<svgx/>"),
            "portal.logo_file",
            "neither an SVG nor a PNG",
            "convert",
        ),
        (
            '[portal]\nlogo_file = "logo.svg"\n',
            _put("logo.svg", b"\xff\xfe<\x00s\x00v\x00g\x00"),
            "portal.logo_file",
            "neither an SVG nor a PNG",
            "convert",
        ),
        (
            '[portal]\nlogo_file = "logo.png"\n',
            _put("logo.png", PNG_LOGO + bytes(256 * 1024)),
            "portal.logo_file",
            "larger than 256 KiB",
            "shrink",
        ),
        (
            '[portal]\ncustom_css_file = "custom.css"\n',
            _put("custom.css", b"body { color: \xff; }"),
            "portal.custom_css_file",
            "not UTF-8",
            "UTF-8",
        ),
        (
            '[portal]\ncustom_css_file = "custom.css"\n',
            _put("custom.css", b"body {}\x00"),
            "portal.custom_css_file",
            "NUL",
            "plain UTF-8",
        ),
        (
            '[portal]\ncustom_css_file = "custom.css"\n',
            _put("custom.css", b"/*" + b"x" * (128 * 1024) + b"*/"),
            "portal.custom_css_file",
            "larger than 128 KiB",
            "shrink",
        ),
        (
            '[portal]\ncustom_css_file = "nowhere/custom.css"\n',
            _nothing,
            "portal.custom_css_file",
            "does not exist",
            "remove the key",
        ),
        ("[portal]\nlogo_file = 3\n", _nothing, "portal.logo_file", "expected a string", "logo"),
        (
            '[portal]\nlogo_file = "/proc/self/mem"\n',
            _nothing,
            "portal.logo_file",
            "cannot be read",
            "readable",
        ),
    ],
)
def test_operations_keys_are_checked(
    write_config: WriteConfig,
    body: str,
    setup: Callable[[Path], None],
    field: str,
    words: str,
    fix: str,
) -> None:
    """[telemetry.metrics], [log] audit_file, [portal] and watch_config name the field, what is
    wrong and the fix (SPEC §7.4); the logo is judged by its content, a FIFO does not hang."""
    path = write_config(MINIMAL + body)
    setup(path.parent)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = info.value.problems
    assert any(p.key == field and words in p.message and fix in p.hint for p in problems), problems


def test_operations_defaults(write_config: WriteConfig) -> None:
    """Without the §7.4 keys: no metrics listener (its default address kept), no audit log, no
    watching, and the portal as shipped."""
    config = load_config(write_config(MINIMAL))
    assert config.server.watch_config is False
    assert config.log.audit_file is None
    assert config.telemetry.metrics.enable is False
    assert config.telemetry.metrics.address == "127.0.0.1:9959"
    assert (config.telemetry.metrics.host, config.telemetry.metrics.port) == ("127.0.0.1", 9959)
    portal = config.portal
    assert (portal.title, portal.theme, portal.logo_file, portal.custom_css_file) == (
        "authctl",
        "auto",
        None,
        None,
    )
    assert (portal.logo_type, portal.logo, portal.custom_css) == ("", b"", "")


def test_empty_branding_paths_are_off(write_config: WriteConfig) -> None:
    """``audit_file = ""``, ``logo_file = ""`` and ``custom_css_file = ""`` (the SPEC's
    defaults written out) turn each off; the metrics address may equal the server's while
    metrics are off, or when the server listens on a Unix socket."""
    text = MINIMAL + (
        '[log]\naudit_file = ""\n[portal]\nlogo_file = ""\ncustom_css_file = ""\n'
        '[telemetry.metrics]\naddress = "127.0.0.1:9091"\n'
    )
    config = load_config(write_config(text))
    assert config.log.audit_file is None
    assert config.portal.logo_file is None
    assert config.portal.custom_css_file is None
    unix = '[server]\naddress = "unix:/run/a.sock"\n' + MINIMAL
    unix += '[telemetry.metrics]\nenable = true\naddress = "127.0.0.1:9091"\n'
    assert load_config(write_config(unix)).telemetry.metrics.port == 9091


@pytest.mark.parametrize(
    ("name", "content", "media_type"),
    [
        ("logo.png", PNG_LOGO, "image/png"),
        ("logo.svg", SVG_LOGO.encode(), "image/svg+xml"),
        ("logo.svg", b"\xef\xbb\xbf<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        ("logo.svg", b"\n  <svg\n viewBox='0 0 1 1'></svg>", "image/svg+xml"),
        ("logo.png", b'<?xml version="1.0"?><?xml-stylesheet x?><svg>', "image/svg+xml"),
        ("logo.bin", PNG_LOGO + bytes(256 * 1024 - len(PNG_LOGO)), "image/png"),
    ],
    ids=["png", "svg-prolog", "svg-bom", "svg-space", "svg-named-png", "png-at-limit"],
)
def test_logo_type_is_judged_by_content(
    write_config: WriteConfig, name: str, content: bytes, media_type: str
) -> None:
    """The logo's type comes from its bytes, whatever its name; up to 256 KiB is accepted."""
    path = write_config(MINIMAL + f'[portal]\nlogo_file = "branding/{name}"\n')
    (path.parent / "branding").mkdir()
    (path.parent / "branding" / name).write_bytes(content)
    portal = load_config(path).portal
    assert portal.logo_type == media_type
    assert portal.logo == content
    assert portal.logo_file == path.parent / "branding" / name


@pytest.mark.parametrize(
    ("body", "field", "words", "fix"),
    [
        ('[webauthn]\nattestation = "packed"\n', "webauthn.attestation", "not one of", "none"),
        (
            '[webauthn]\nuser_verification = "always"\n',
            "webauthn.user_verification",
            "not one of",
            "required",
        ),
        ('[webauthn]\ntimeout = "1s"\n', "webauthn.timeout", "at least", "duration"),
        ('[webauthn]\ntimeout = "1h"\n', "webauthn.timeout", "at most 10 minutes", "60s"),
        ('[webauthn]\ntimeout = "soon"\n', "webauthn.timeout", "", "30s"),
        ('[webauthn]\ndisplay_name = "a\\nb"\n', "webauthn.display_name", "one line", "write"),
        ('[webauthn]\ndisplay_name = " "\n', "webauthn.display_name", "cannot be empty", "write"),
        (f'[webauthn]\ndisplay_name = "{"x" * 65}"\n', "webauthn.display_name", "at most 64", ""),
        ('[webauthn]\nrp_id = "other.org"\n', "webauthn.rp_id", "does not cover", "leave it"),
        ('[webauthn]\nrp_id = "192.0.2.1"\n', "webauthn.rp_id", "IP address", "rp_id"),
        ('[webauthn]\nrp_id = "exa mple.com"\n', "webauthn.rp_id", "", ""),
        ("[webauthn]\nenable = 1\n", "webauthn.enable", "boolean", "true or false"),
        ('[webauthn]\npasskey_login = "yes"\n', "webauthn.passkey_login", "", "true"),
        ("[webauthn]\nrp_id = 3\n", "webauthn.rp_id", "string", "rp_id"),
        ('[webauthn]\nrelying_party = "x"\n', "webauthn.relying_party", "unknown", ""),
    ],
)
def test_webauthn_keys_are_checked(
    write_config: WriteConfig, body: str, field: str, words: str, fix: str
) -> None:
    """[webauthn] values are checked at load, naming the field, what is wrong and the fix
    (SPEC §7.1); an rp_id that does not cover a portal host is found here, not at sign-in."""
    problems = _problems(write_config, MINIMAL + body)
    assert any(p.key == field and words in p.message and fix in p.hint for p in problems), problems


def test_webauthn_defaults(write_config: WriteConfig) -> None:
    """Without [webauthn]: SPEC §7.1's defaults; rp_id "" (each portal's host); a parent
    domain of the portal host is a valid rp_id, in canonical (lower-case) form."""
    assert load_config(write_config(MINIMAL)).webauthn == WebAuthnConfig()
    assert WebAuthnConfig().timeout == 60
    config = load_config(write_config(MINIMAL + '[webauthn]\nrp_id = "Example.COM"\n'))
    assert config.webauthn.rp_id == "example.com"
    config = load_config(write_config(MINIMAL + '[webauthn]\nrp_id = ""\n'))
    assert config.webauthn.rp_id == ""
