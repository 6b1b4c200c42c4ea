"""Real ``redis-server`` and ``redis-sentinel`` processes for tests, on free loopback ports.

Importable by any test (the Redis store tests, the HA suite)::

    from tests.redis_services import RedisServer, SentinelCluster, free_port

- ``RedisServer(folder, port=None, password=None, replica_of=None)``: one throw-away
  ``redis-server`` (no persistence) on 127.0.0.1; ``.url``, ``.client()``, ``.stop(sig)``,
  ``.start()`` (again on the same port). With ``password`` it has ``requirepass`` (and
  ``masterauth``, so it can follow a primary that has the same password).
- ``SentinelCluster(folder, password=None)``: a primary, one replica and three
  ``redis-sentinel`` processes monitoring ``MASTER_NAME`` with a quorum of 2 and short
  timeouts (``DOWN_AFTER_MS``, ``FAILOVER_TIMEOUT_MS``), so a failover takes a few seconds.
  The constructor returns once every Sentinel knows the replica and the other two.
  ``.nodes`` (``[(host, port)]``), ``.nodes_toml`` (for ``[session.redis_sentinel]``),
  ``.primary`` (the ``RedisServer`` the Sentinels name now), ``.kill_primary()`` (SIGKILL;
  returns the killed server), ``.wait_for_promotion(old, timeout)`` (seconds until the
  Sentinels name another primary and it answers as master), ``.write_password_file(path)``,
  ``.client()`` (a client of the current primary) and ``.stop()``.

Nothing is mocked and nothing is skipped: without ``redis-server``/``redis-sentinel`` the
tests fail with the command to install them (``apt-get install -y redis-server
redis-sentinel``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_SENTINEL = shutil.which("redis-sentinel") or "/usr/bin/redis-sentinel"
HOST = "127.0.0.1"
#: The name the Sentinels monitor the primary under.
MASTER_NAME = "authctl"
#: Milliseconds without an answer before a Sentinel holds the primary down.
DOWN_AFTER_MS = 1000
#: Sentinel's failover-timeout (also the wait before a failed failover is tried again / 2).
FAILOVER_TIMEOUT_MS = 3000


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _require(binary: str, package: str) -> None:
    if not Path(binary).exists():
        pytest.fail(
            f"{Path(binary).name} is not installed: apt-get install -y {package} "
            "(the Redis store is tested against real servers, never skipped)"
        )


def _wait_until_up(proc: subprocess.Popen[bytes], port: int, password: str | None) -> None:
    client = redis.Redis(
        host=HOST, port=port, password=password, socket_connect_timeout=0.2, socket_timeout=0.5
    )
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                if client.ping():
                    return
            except redis.RedisError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError(f"redis on port {port} did not start") from None
                time.sleep(0.05)
    finally:
        client.close()


class RedisServer:
    """A throw-away ``redis-server`` (no persistence) on 127.0.0.1."""

    def __init__(
        self,
        folder: Path,
        port: int | None = None,
        *,
        password: str | None = None,
        replica_of: int | None = None,
    ) -> None:
        _require(REDIS_SERVER, "redis-server")
        self.folder = folder
        self.port = port or free_port()
        self.password = password
        self.replica_of = replica_of
        self.url = f"redis://{HOST}:{self.port}/0"
        self.start()

    def start(self) -> None:
        """Start (or restart) the server on the same port and wait until it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        options = {
            "port": str(self.port),
            "bind": HOST,
            "save": "",
            "appendonly": "no",
            "dir": str(self.folder),
            "loglevel": "warning",
        }
        if self.password is not None:
            options["requirepass"] = self.password
            options["masterauth"] = self.password
        argv = [REDIS_SERVER]
        for name, value in options.items():
            argv += [f"--{name}", value]
        if self.replica_of is not None:
            argv += ["--replicaof", HOST, str(self.replica_of)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until_up(self.proc, self.port, self.password)

    def client(self) -> redis.Redis:
        """A plain client for looking at what the store wrote."""
        return redis.Redis(host=HOST, port=self.port, password=self.password, socket_timeout=2)

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server (SIGCONT first, in case a test paused it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


class SentinelCluster:
    """A primary, one replica and three Sentinels (quorum 2) on loopback; see the module
    docstring. ``password``: ``requirepass`` on every Redis and Sentinel (and the
    ``auth-pass``/``sentinel-pass`` they use between them)."""

    def __init__(self, folder: Path, *, password: str | None = None) -> None:
        _require(REDIS_SENTINEL, "redis-sentinel")
        self.folder = folder
        self.password = password
        first = RedisServer(folder / "redis-a", password=password)
        second = RedisServer(folder / "redis-b", password=password, replica_of=first.port)
        self.servers = [first, second]
        self.sentinel_procs: list[subprocess.Popen[bytes]] = []
        self.nodes: list[tuple[str, int]] = []
        try:
            for number in range(3):
                self._start_sentinel(folder / f"sentinel-{number}", first.port)
            self.wait_until_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def nodes_toml(self) -> str:
        """``nodes`` as the TOML array ``[session.redis_sentinel]`` takes."""
        return "[" + ", ".join(f'"{host}:{port}"' for host, port in self.nodes) + "]"

    def write_password_file(self, path: Path) -> Path:
        """Write the cluster's password to ``path`` (mode 0600), for redis_password_file."""
        assert self.password is not None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.password + "\n", encoding="utf-8")
        path.chmod(0o600)
        return path

    def _start_sentinel(self, folder: Path, primary: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        lines = [
            f"port {port}",
            f"bind {HOST}",
            f"dir {folder}",
            "loglevel warning",
            f"sentinel monitor {MASTER_NAME} {HOST} {primary} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if self.password is not None:
            lines += [
                f"sentinel auth-pass {MASTER_NAME} {self.password}",
                f"requirepass {self.password}",
                f"sentinel sentinel-pass {self.password}",
            ]
        config = folder / "sentinel.conf"
        config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        proc = subprocess.Popen(
            [REDIS_SENTINEL, str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.sentinel_procs.append(proc)
        self.nodes.append((HOST, port))
        _wait_until_up(proc, port, self.password)

    def sentinel(self, index: int = 0) -> redis.Redis:
        """A client of one Sentinel."""
        host, port = self.nodes[index]
        return redis.Redis(
            host=host, port=port, password=self.password, socket_timeout=1, decode_responses=True
        )

    def _master_port(self, index: int) -> int | None:
        with self.sentinel(index) as client:
            try:
                address = client.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
            except redis.RedisError:
                return None
        return int(address[1]) if address else None

    def wait_until_ready(self, timeout: float = 30.0) -> None:
        """Wait until every Sentinel knows the replica and the two other Sentinels."""
        deadline = time.monotonic() + timeout
        while True:
            ready = True
            for index in range(len(self.nodes)):
                with self.sentinel(index) as client:
                    try:
                        info = client.sentinel_master(MASTER_NAME)
                    except redis.RedisError:
                        ready = False
                        continue
                if int(info["num-slaves"]) < 1 or int(info["num-other-sentinels"]) < 2:
                    ready = False
            if ready:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the Sentinels did not find each other and the replica")
            time.sleep(0.1)

    @property
    def primary(self) -> RedisServer:
        """The server the first Sentinel names as primary now."""
        port = self._master_port(0)
        for server in self.servers:
            if server.port == port:
                return server
        raise AssertionError(f"the Sentinels name an unknown primary on port {port}")

    def client(self) -> redis.Redis:
        """A plain client of the current primary."""
        return self.primary.client()

    def replicate(self) -> None:
        """Wait until the replica has every write the primary acknowledged (WAIT)."""
        with self.client() as client:
            assert int(client.execute_command("WAIT", 1, 5000)) >= 1

    def kill_primary(self) -> RedisServer:
        """SIGKILL the current primary; the killed server (``start()`` brings it back as a
        replica once the Sentinels reconfigure it)."""
        old = self.primary
        old.stop(signal.SIGKILL)
        return old

    def wait_for_promotion(self, old: RedisServer, timeout: float = 30.0) -> float:
        """Seconds until every Sentinel names a primary other than ``old`` and it answers as
        master."""
        started = time.monotonic()
        while True:
            ports = {self._master_port(index) for index in range(len(self.nodes))}
            if len(ports) == 1 and old.port not in ports and None not in ports:
                port = ports.pop()
                new = next(s for s in self.servers if s.port == port)
                with contextlib.suppress(redis.RedisError), new.client() as client:
                    role = client.execute_command("ROLE")
                    if role[0] in (b"master", "master"):
                        return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"no failover within {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop every process."""
        for proc in self.sentinel_procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=10)
        for server in self.servers:
            server.stop()
