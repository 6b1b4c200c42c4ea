"""Time to load a users file of N users (SPEC §5: 10,000 users in under 0.5 s).

Run in a fresh interpreter by ``bench/run.py``: ``load_users`` caches hash checks, so a
warm process would flatter the number. Every user gets a distinct, well-formed argon2id
PHC string (random salt and tag; nothing is hashed), groups, a display name and an e-mail,
like a real file. Prints one JSON line with the median of three loads of fresh files.

    .venv/bin/python bench/users_load.py N
"""

from __future__ import annotations

import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from server.core.users import load_users


def b64(data: bytes) -> str:
    """Unpadded base64, as in PHC strings."""
    return base64.b64encode(data).decode("ascii").rstrip("=")


def users_text(count: int) -> str:
    """A users file of ``count`` users with distinct hashes."""
    out = []
    for i in range(count):
        phc = f"$argon2id$v=19$m=65536,t=3,p=4${b64(os.urandom(16))}${b64(os.urandom(32))}"
        out.append(
            f'[users.user{i}]\ndisplayname = "User Number {i}"\npassword = "{phc}"\n'
            f'email = "user{i}@example.com"\ngroups = ["staff", "team{i % 50}"]\n'
        )
    return "\n".join(out)


def main() -> None:
    """Three loads of three fresh files; the median."""
    count = int(sys.argv[1])
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for attempt in range(3):
            path = Path(folder) / f"users{attempt}.toml"
            path.write_text(users_text(count), encoding="utf-8")
            started = time.perf_counter()
            db = load_users(path)
            times.append(time.perf_counter() - started)
            assert len(db) == count
    print(json.dumps({"users": count, "seconds": statistics.median(times), "all": times}))


if __name__ == "__main__":
    main()
