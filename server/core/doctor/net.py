"""The network edge of ``doctor``: one HTTP(S) request, one TLS handshake, every wait bounded.

``Resolver`` maps names to addresses the way ``curl --resolve`` does, so a deployment can be
checked before its DNS is in place (and the tests reach ``*.example.test`` on 127.0.0.1).
Redirects are never followed: where they point is what the checks judge.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import typing as t
from dataclasses import dataclass
from dataclasses import field
from urllib.parse import urlsplit

#: Seconds for each connect and each read.
TIMEOUT = 5.0
#: A body larger than this is cut: the checks only look for short markers.
MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Resolver:
    """``(name, address)`` rules; a name ``*.example.com`` matches every subdomain."""

    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, specs: t.Iterable[str]) -> Resolver:
        """``NAME:ADDRESS`` each (the address may be IPv6).

        Raises:
            ValueError: a spec without ``:`` or with an empty part.
        """
        rules = []
        for spec in specs:
            name, sep, address = spec.partition(":")
            if not sep or not name or not address:
                raise ValueError(f"{spec!r} is not NAME:ADDRESS (e.g. '*.example.com:127.0.0.1')")
            rules.append((name.lower().rstrip("."), address.strip("[]")))
        return cls(tuple(rules))

    def address(self, host: str) -> str:
        """The address to connect to for ``host`` (``host`` itself without a rule)."""
        host = host.lower().rstrip(".")
        for name, address in self.rules:
            if name == host or (name.startswith("*.") and host.endswith(name[1:])):
                return address
        return host


@dataclass(frozen=True, slots=True)
class Answer:
    """A response, read whole (up to :data:`MAX_BODY`); header names lowercase."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""

    def header(self, name: str) -> str | None:
        """The first value of ``name``, or None."""
        name = name.lower()
        return next((v for n, v in self.headers if n == name), None)

    def headers_named(self, name: str) -> list[str]:
        """Every value of ``name``."""
        name = name.lower()
        return [v for n, v in self.headers if n == name]


@dataclass(slots=True)
class Client:
    """HTTP(S) requests through a :class:`Resolver`, TLS checked with ``context``."""

    resolver: Resolver = field(default_factory=Resolver)
    context: ssl.SSLContext = field(default_factory=ssl.create_default_context)
    timeout: float = TIMEOUT

    def request(
        self,
        url: str,
        *,
        method: str = "GET",
        headers: t.Sequence[tuple[str, str]] = (),
        body: bytes | None = None,
    ) -> Answer:
        """One request to ``url``; redirects are returned, not followed.

        Raises:
            OSError: cannot connect, TLS failed (``ssl.SSLError``), or timed out.
            http.client.HTTPException: the answer is not HTTP.
        """
        parts = urlsplit(url)
        host = parts.hostname or ""
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        conn = self._connection(host, port, https)
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.putrequest(method, target, skip_accept_encoding=True)
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read(MAX_BODY)
            pairs = tuple((n.lower(), v) for n, v in resp.getheaders())
            return Answer(resp.status, pairs, data)
        finally:
            conn.close()

    def _connection(self, host: str, port: int, https: bool) -> http.client.HTTPConnection:
        address = self.resolver.address(host)
        timeout = self.timeout
        if not https:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
            conn.sock = socket.create_connection((address, port), timeout)
            return conn
        context = self.context
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        raw = socket.create_connection((address, port), timeout)
        try:
            conn.sock = context.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        return conn

    def unix_request(self, socket_path: str, path: str) -> Answer:
        """``GET path`` over the unix socket at ``socket_path`` (``server.address = unix:``).

        Raises:
            OSError, http.client.HTTPException: as :meth:`request`.
        """
        conn = http.client.HTTPConnection("localhost", timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(socket_path)
        except BaseException:
            sock.close()
            raise
        conn.sock = sock
        try:
            conn.request("GET", path, headers={"Accept": "application/json"})
            resp = conn.getresponse()
            return Answer(resp.status, tuple((n.lower(), v) for n, v in resp.getheaders()),
                          resp.read(MAX_BODY))  # fmt: skip
        finally:
            conn.close()

    def peer_certificate(self, host: str, port: int) -> tuple[bytes | None, ssl.SSLError | None]:
        """The DER certificate ``host:port`` presents, and the verification error (None when
        it verifies with ``context``). An unverified second handshake fetches the
        certificate of a server that fails verification, so its dates and names can still be
        reported.

        Raises:
            OSError: cannot connect, or the handshake fails for another reason than trust.
        """
        address = self.resolver.address(host)
        try:
            return self._handshake(address, host, port, self.context), None
        except ssl.SSLCertVerificationError as exc:
            error: ssl.SSLError = exc
        unverified = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        unverified.check_hostname = False
        unverified.verify_mode = ssl.CERT_NONE
        return self._handshake(address, host, port, unverified), error

    def _handshake(self, address: str, host: str, port: int, context: ssl.SSLContext) -> bytes:
        with (
            socket.create_connection((address, port), self.timeout) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
        if der is None:  # pragma: no cover - a TLS server always presents one to a client
            raise ssl.SSLError("the server presented no certificate")
        return der
