"""The text ``authctl init`` writes: a commented starter config and an empty users file.

Kept apart from the command so that a test can load it with ``server.core.config.load_config``
(a starter that does not load would be the first thing a new user sees). Every section of
SPEC §2.1 appears with its default value.
"""

from __future__ import annotations

_TEMPLATE = """\
# authctl configuration, written by `authctl init`.
# Durations: "30s", "5m", "1h", "2d", "1w", "1M" (30 days), "1y" or a number of seconds.
# Relative paths resolve against the folder of this file.
# Check it with `authctl rules check`; see `man authctl.toml` for every key.

[server]
address = "127.0.0.1:9091"              # host:port, or "unix:/path/to.sock"
trusted_proxies = ["127.0.0.1/32", "::1/128"]   # only these peers may set X-Forwarded-*
threads = 8

[users]
file = "users.toml"                     # edit with `authctl user add|passwd|disable|...`
watch = true                            # reload on change; a broken file keeps the last good copy
# argon2id parameters for NEW hashes (memory in KiB); existing hashes keep their own.
password_hash = { memory_kib = 65536, iterations = 3, parallelism = 4 }

[storage]
path = "authctl.db"                     # SQLite: TOTP secrets, auth log, bans, one-time codes
encryption_key_file = "secrets/storage.key"     # encrypts TOTP secrets; keep it secret

[session]
name = "authctl_session"
same_site = "lax"                       # lax | strict | none
expiration = "1h"                       # hard limit of a session
inactivity = "5m"                       # signed out after this long without a request
remember_me = "1M"                      # "0" hides the "remember me" checkbox
store = "sqlite"                        # memory | sqlite | redis
# redis_url = "redis://127.0.0.1:6379/0"        # when store = "redis"

# One entry per protected root domain: https sites on it and its subdomains are protected.
[[session.cookies]]
domain = "example.com"
portal_url = "https://auth.example.com@PORT@"         # must be https and inside the domain
default_redirect_url = "https://www.example.com@PORT@"

[totp]
issuer = "authctl"                      # the name shown in authenticator apps
algorithm = "SHA1"                      # SHA1 | SHA256 | SHA512 (most apps only do SHA1)
digits = 6                              # 6 or 8
period = 30
skew = 1                                # accept codes one period early or late

[regulation]
max_retries = 3                         # failed logins before a ban; 0 disables bans
find_time = "2m"                        # ... within this window
ban_time = "5m"
modes = ["user"]                        # "user" and/or "ip"

[notifier]
filesystem = "notifications.txt"        # one-time codes and reset links land here
# For real mail, replace the line above with:
# [notifier.smtp]
# host = "smtp.example.com"
# port = 587
# username = "authctl"
# password_file = "secrets/smtp.password"
# sender = "authctl <auth@example.com>"
# starttls = true

[password_policy]
min_length = 8
max_length = 128
check_common = true                     # refuse very common passwords

[log]
level = "info"                          # debug | info | warning | error
format = "text"                         # text | json

[access_control]
default_policy = "deny"                 # bypass | one_factor | two_factor | deny
networks = { internal = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] }

# Rules are tried in order; the first that matches decides.
[[access_control.rules]]
domain = ["public.example.com"]
policy = "bypass"

[[access_control.rules]]
domain = "*.example.com"
resources = ["^/admin([/?].*)?$"]
subject = ["group:admins"]
policy = "two_factor"

[[access_control.rules]]
domain = "*.example.com"
policy = "one_factor"
"""


def starter_config(port: int = 443) -> str:
    """The starter config for a proxy whose public HTTPS port is ``port``.

    The port goes into ``portal_url`` and ``default_redirect_url`` (the addresses browsers are
    sent to), written only when it is not 443.
    """
    return _TEMPLATE.replace("@PORT@", "" if port == 443 else f":{port}")


#: The starter config for a proxy on port 443 (what ``authctl init`` writes by default).
STARTER_CONFIG = starter_config()

STARTER_USERS = """\
# authctl users file, written by `authctl init`. Add accounts with
#   authctl user add NAME --group admins
# (see users.toml.example for the format). Keep this file mode 0600.
[users]
"""
