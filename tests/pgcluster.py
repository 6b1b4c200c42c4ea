"""A throwaway PostgreSQL 15 cluster for tests (SPEC §7.8), and fixtures to use it.

Usage in a test module::

    from tests.pgcluster import PgCluster, pg_cluster, pg_dsn  # noqa: F401 - fixtures

    def test_x(pg_cluster: PgCluster, pg_dsn: str) -> None:
        config = pg_cluster.postgres_config(pg_dsn)      # a PostgresConfig for authctl
        ...

- ``pg_cluster`` (session scope): one cluster for the whole run, started on first use:
  Debian's ``initdb``/``pg_ctl`` from ``/usr/lib/postgresql/15/bin`` in a temp folder, run as
  the ``postgres`` system user (``runuser -u postgres --`` when the tests run as root), on a
  free loopback port, its unix socket in the temp folder, fsync off. Never stop it from a
  test: for fault tests start a cluster of your own with :meth:`PgCluster.create` (about a
  second) and use :meth:`stop`, :meth:`start`, :meth:`restart` on it.
- ``pg_dsn`` (function scope): a fresh, empty schema on ``pg_cluster`` owned by the role
  ``authctl`` (a new schema takes milliseconds, a new database most of a second), as a
  libpq DSN without password whose ``options`` make it the connection's ``search_path``
  (the password is in :attr:`PgCluster.password_file`, as ``[storage.postgres]
  password_file`` wants it). :meth:`PgCluster.create_database` makes a whole database.
- Missing PostgreSQL binaries FAIL the test with the command that installs them (never skip).

Clients reach the cluster over TCP on 127.0.0.1 with the role ``authctl`` and a password
(scram-sha-256); :meth:`PgCluster.admin` connects as the superuser over the unix socket.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from server.core.config import PostgresConfig

#: Where Debian's postgresql-15 puts initdb, pg_ctl and postgres.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: What to run when they are missing.
INSTALL = "apt-get update && apt-get install -y postgresql (or scripts/install-e2e-deps.sh)"
#: The role authctl connects as, and its password (in :attr:`PgCluster.password_file`).
ROLE = "authctl"
PASSWORD = "pg-test-password-7f3a9c"
#: The database :meth:`PgCluster.create_schema` makes its schemas in.
SHARED_DB = "authctl"
#: Settings for a fast, disposable cluster: no fsync (the data survives a crash of the server,
#: :meth:`PgCluster.stop` ``immediate``, but not one of the machine); commits stay synchronous,
#: or a crash of the server would lose the last ones.
FAST = ("fsync=off", "full_page_writes=off", "max_connections=200")

_names = itertools.count(1)


def _binaries() -> None:
    """Fail (never skip) when PostgreSQL 15 is not installed."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / b).exists()]
    if missing:
        pytest.fail(
            f"PostgreSQL 15 is missing ({', '.join(missing)} not in {PG_BIN}); install it: "
            f"{INSTALL}",
            pytrace=False,
        )


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One PostgreSQL cluster in a temp folder; see the module docstring."""

    def __init__(self, base: Path, port: int) -> None:
        self.base = base
        self.data = base / "data"
        self.socket_dir = base
        self.port = port
        self.log = base / "postgres.log"
        self.password_file = base / "authctl.password"

    # ------------------------------------------------------------------ life cycle

    @classmethod
    def create(cls) -> PgCluster:
        """initdb a new cluster in a new temp folder and start it (the caller calls
        :meth:`destroy`)."""
        _binaries()
        base = Path(tempfile.mkdtemp(prefix="authctl-pg-"))
        cluster = cls(base, free_port())
        try:
            cluster._init()
            cluster.start()
            with cluster.admin() as conn:
                conn.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{PASSWORD}'")
                conn.execute(f"CREATE DATABASE {SHARED_DB} OWNER {ROLE}")
        except BaseException:
            cluster.destroy()
            raise
        return cluster

    def _run(self, *args: str, timeout: float = 60) -> None:
        """Run a PostgreSQL program as the ``postgres`` user (as root: via runuser)."""
        command = [str(PG_BIN / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr}\n{log}"
            )

    def _init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
        self.base.chmod(0o700)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        self.password_file.write_text(PASSWORD + "\n", encoding="utf-8")
        self.password_file.chmod(0o600)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = " ".join(
            [f"-p {self.port}", f"-k {self.socket_dir}", "-c listen_addresses=127.0.0.1"]
            + [f"-c {setting}" for setting in FAST]
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients and stop; ``immediate``: a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port (every client connection is cut)."""
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        """Stop the server if it runs and remove the folder."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    # ------------------------------------------------------------------ use

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A superuser connection (autocommit) over the unix socket."""
        return psycopg.connect(
            host=str(self.socket_dir),
            port=self.port,
            user="postgres",
            dbname=dbname,
            autocommit=True,
        )

    def dsn(self, dbname: str) -> str:
        """A libpq DSN for ``dbname`` as the role ``authctl`` over TCP, without password."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database owned by ``authctl``; its DSN."""
        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        with self.admin() as conn:
            conn.execute(f"CREATE DATABASE {name} OWNER {ROLE} STRATEGY FILE_COPY")
        return self.dsn(name)

    def create_schema(self, prefix: str = "s") -> str:
        """A new empty schema owned by ``authctl`` in the shared database ``authctl``; a DSN
        whose connections see only it (``options=-csearch_path=…``)."""
        name = f"{prefix}_{os.getpid()}_{next(_names)}"
        with self.admin(SHARED_DB) as conn:
            conn.execute(f"CREATE SCHEMA {name} AUTHORIZATION {ROLE}")
        return f"{self.dsn(SHARED_DB)}?options=-csearch_path%3D{name}"

    def drop_schema(self, dsn: str) -> None:
        """Drop the schema of a :meth:`create_schema` DSN and everything in it."""
        name = dsn.rsplit("%3D", 1)[1]
        with self.admin(SHARED_DB) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    def drop_database(self, dsn: str) -> None:
        """Drop the database of ``dsn`` (its connections are cut first)."""
        name = dsn.rsplit("/", 1)[1]
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def postgres_config(self, dsn: str, *, timeout: int = 5, pool_size: int = 4) -> PostgresConfig:
        """``[storage.postgres]`` for ``dsn`` with this cluster's password file."""
        return PostgresConfig(
            dsn=dsn, password_file=self.password_file, pool_size=pool_size, timeout=timeout
        )


#: The session's cluster, shared by every module that imports the fixture (pytest makes a
#: session fixture imported into two modules two fixtures: both return this one).
_shared: PgCluster | None = None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One PostgreSQL 15 cluster for the whole session (never stop it from a test)."""
    global _shared  # one cluster per test process, by design
    if _shared is None:
        _shared = PgCluster.create()
    yield _shared
    if _shared is not None:  # the first teardown at the end of the session removes it
        _shared.destroy()
        _shared = None


@pytest.fixture
def pg_dsn(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh, empty schema of its own on the session cluster (milliseconds, where a new
    database costs most of a second), dropped after the test; its DSN (the schema is the
    connection's ``search_path``)."""
    dsn = pg_cluster.create_schema()
    yield dsn
    pg_cluster.drop_schema(dsn)
