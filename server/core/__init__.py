"""The core tier: configuration, users, rules, sessions, storage and the other pure logic.

It knows nothing of HTTP frameworks, servers or terminals; ``pyproject.toml``'s import-linter
contracts say which libraries it may use.
"""
