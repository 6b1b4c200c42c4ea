"""Benchmark: one ``AccessControl.evaluate`` over 1,000 rules (SPEC §5: under 100 µs).

A script that prints numbers, not a test (timed unit tests are flaky by nature). It writes
a config with 1,000 rules — exact hosts, wildcards, resources, methods, networks, a few
subject rules — loads it through the real config loader, and times requests that match the
LAST rule (the worst case for a first-match scan), one that matches nothing (default policy),
and, for comparison, the same 1,000 rules as ``domain_regex`` (which cannot be indexed).

    .venv/bin/python bench/bench_rules.py [--rules N] [--repeat R]
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import tempfile
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from server.core.config import load_config  # noqa: E402
from server.core.rules import AccessControl  # noqa: E402
from server.core.rules import AccessRequest  # noqa: E402

HEAD = """\
[session]
store = "memory"

[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com"

[access_control]
default_policy = "deny"
networks = { internal = ["10.0.0.0/8", "192.168.0.0/16"] }
"""


def rules_toml(count: int, *, regex: bool = False) -> str:
    """``count`` rules of mixed kinds; the last one matches ``last.example.com/api/x``."""
    out = [HEAD]
    for i in range(count - 1):
        kind = i % 5
        if regex:
            out.append(f'[[access_control.rules]]\ndomain_regex = ["^app{i}\\\\.example\\\\.com$"]')
        elif kind == 0:
            out.append(f'[[access_control.rules]]\ndomain = "app{i}.example.com"')
        elif kind == 1:
            out.append(f'[[access_control.rules]]\ndomain = "*.zone{i}.example.com"')
        elif kind == 2:
            out.append(
                f'[[access_control.rules]]\ndomain = ["svc{i}.example.com", "alt{i}.example.com"]'
                f'\nresources = ["^/api{i}([/?].*)?$"]'
            )
        elif kind == 3:
            out.append(
                f'[[access_control.rules]]\ndomain = "m{i}.example.com"\nmethods = ["POST", "PUT"]'
                '\nnetworks = ["internal"]'
            )
        else:
            out.append(
                f'[[access_control.rules]]\ndomain = "team{i}.example.com"'
                f'\nsubject = ["group:g{i}", ["user:u{i}", "group:dev"]]'
            )
        out.append('policy = "one_factor"\n')
    last_domain = (
        'domain_regex = ["^last\\\\.example\\\\.com$"]' if regex else 'domain = "last.example.com"'
    )
    out.append(
        f"[[access_control.rules]]\n{last_domain}\n"
        'resources = ["^/api([/?].*)?$"]\nmethods = ["GET", "HEAD"]\npolicy = "two_factor"\n'
    )
    return "\n".join(out)


def build(count: int, *, regex: bool = False) -> AccessControl:
    """Write and load the generated config through ``load_config``."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "authctl.toml"
        path.write_text(rules_toml(count, regex=regex), encoding="utf-8")
        config = load_config(path)
    assert len(config.access_control.rules) == count
    return AccessControl(config.access_control)


def per_call_us(engine: AccessControl, request: AccessRequest, repeat: int, number: int) -> float:
    """Best-of-``repeat`` microseconds per ``evaluate`` call."""
    timer = timeit.Timer(lambda: engine.evaluate(request))
    return min(timer.repeat(repeat=repeat, number=number)) / number * 1e6


def main() -> None:
    """Build the rule sets, check the decisions, print µs per evaluate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()

    ip = ipaddress.ip_address("10.1.2.3")
    last = AccessRequest("last.example.com", "/api/x", "a=1", "GET", ip, "alice", ("dev",))
    anonymous = AccessRequest("last.example.com", "/api/x", "", "GET", ip)
    miss = AccessRequest("nowhere.example.com", "/", "", "GET", ip, "alice", ("dev",))

    indexed = build(args.rules)
    regex = build(args.rules, regex=True)
    last_index = args.rules - 1
    assert indexed.evaluate(last).rule == last_index
    assert indexed.evaluate(anonymous).rule == last_index
    assert indexed.evaluate(miss).rule is None
    assert regex.evaluate(last).rule == last_index

    print(f"{args.rules} rules, best of {args.repeat} x {args.number} calls")
    rows = [
        ("match at the last rule (signed in)", indexed, last),
        ("match at the last rule (anonymous)", indexed, anonymous),
        ("no match -> default_policy", indexed, miss),
        ("all domain_regex, match at the last", regex, last),
    ]
    for label, engine, request in rows:
        number = args.number
        print(f"  {label:<40} {per_call_us(engine, request, args.repeat, number):8.2f} µs")

    # The per-host candidate cache makes repeated hosts cheap; show the cold cost too (a
    # host seen for the first time, or a flood of random subdomains).
    for label, engine, number in (
        ("match at the last rule, cold host cache", indexed, 2000),
        ("all domain_regex, cold host cache", regex, 200),
    ):

        def cold(engine: AccessControl = engine) -> None:
            engine._candidates.cache_clear()
            engine.evaluate(last)

        cold_us = min(timeit.repeat(cold, repeat=args.repeat, number=number)) / number * 1e6
        print(f"  {label:<40} {cold_us:8.2f} µs")


if __name__ == "__main__":
    main()
