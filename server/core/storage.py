"""The storage database: TOTP secrets and replay history, the authentication log, bans,
one-time codes, shared rate limits, attempts in flight, WebAuthn credentials, personal
access tokens (their keyed digests) and each user's preferred second factor.

One interface, two engines (``[storage] backend``): a SQLite file (``[storage] path``) shared
by threads and worker processes of one host (:class:`server.core.sqlite_util.SQLiteDatabase`),
or PostgreSQL shared by any number of hosts (:class:`server.core.pg_util.PostgresDatabase`).
The SQL of each operation is written once here (``?`` placeholders); the schema and its
versions once in :mod:`server.core.storage_schema`. Either way the data survives restarts: the
replay guard and the bans must outlive a restart, or restarting the server (or waiting for a
worker to recycle) would reopen a used code or lift a ban.

Attacks and failures this module defends against:

- **A copied database or backup** (security.md §2.G): TOTP secrets are sealed with AES-256-GCM
  (:mod:`server.core.crypto`), the associated data binding each one to its table and user, so the
  file alone never yields a secret and a secret moved to another row does not decrypt.
- **A wrong or missing key file**: found when the storage opens (a key check value lives in
  ``meta``), with a message saying how to fix it; there is no plaintext fallback.
- **TOTP replay, also in parallel** (RFC 6238 §5.2, ASVS 2.8.4): :meth:`Storage.accept_totp_step`
  checks and moves the user's last accepted time step in one write transaction, so of many
  parallel submissions of one code exactly one wins, across threads and processes, and a
  restart remembers the step (Authelia's exists-then-save is check-then-act).
- **Schema drift**: the version lives in ``PRAGMA user_version`` (PostgreSQL: a ``meta`` row)
  and migrations run in order inside one transaction under a lock (``BEGIN IMMEDIATE``;
  ``pg_advisory_xact_lock``), so hosts starting together migrate once; a newer schema, or a
  database that is not an authctl storage database, is refused instead of being written to.
- **A one-time code or token used twice, also in parallel**: :meth:`Storage.redeem_one_time_code`
  reads the row, asks the caller's verdict and consumes it (or counts a wrong try) in one write
  transaction, so of many parallel submissions exactly one wins.
- **Local disclosure**: the folder is created 0700 and the file 0600 (SQLite gives its WAL and
  shared-memory files the same mode).

Every failure is raised as :class:`StorageError`; callers fail closed (deny), never allow.
"""

from __future__ import annotations

import enum
import logging
import time
import typing as t
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from server.core.crypto import SecretBox
from server.core.crypto import key_file_is_private
from server.core.crypto import read_key_file
from server.core.errors import StoreUnavailable
from server.core.sqlite_util import SQLiteDatabase
from server.core.storage_schema import APPLICATION_ID as APPLICATION_ID
from server.core.storage_schema import SCHEMA_VERSION as SCHEMA_VERSION
from server.core.storage_schema import TABLES
from server.core.storage_schema import TABLES_BY_NAME
from server.core.storage_schema import Database
from server.core.storage_schema import Table
from server.core.storage_schema import Tx
from server.core.storage_schema import migration

if t.TYPE_CHECKING:
    from server.core.config import StorageConfig

log = logging.getLogger("server.storage")

#: Seconds a connection waits for another writer (thread or worker) before failing.
BUSY_TIMEOUT = 5.0
#: Kinds of authentication attempts in the log.
ATTEMPT_KINDS = ("1FA", "TOTP", "BASIC")
#: Kinds of bans.
BAN_KINDS = ("user", "ip")
#: What to do about a key that does not match (also the start of the error message).
WRONG_KEY = "storage key does not match the database; restore the right secrets/storage.key"
#: The engines ``[storage] backend`` names.
BACKENDS = ("sqlite", "postgres")
#: Rows per INSERT when copying a table (below both engines' limits on parameters).
COPY_BATCH = 500
#: Second-factor methods a user may prefer (``user_preferences.second_factor_method``).
SECOND_FACTOR_METHODS = ("totp", "webauthn")


class StorageError(StoreUnavailable):
    """The storage failed (cannot open, newer schema, locked, corrupt, full, closed).

    Never means "no record" and never "allow": callers deny and log (fail closed); the API
    answers 503.
    """

    part = "storage"


class StorageKeyError(StorageError):
    """The storage key file is missing or invalid, or does not match the database."""


@dataclass(frozen=True, slots=True)
class TotpRecord:
    """A user's TOTP enrolment, secret decrypted (raw bytes, never logged)."""

    username: str
    secret: bytes = field(repr=False)
    algorithm: str
    digits: int
    period: int
    created_at: float
    last_used_at: float | None


@dataclass(frozen=True, slots=True)
class Attempt:
    """One row of the authentication log, as regulation reads it."""

    time: float
    success: bool


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban of a user (canonical name) or an IP until ``expires`` (unix time)."""

    kind: str
    value: str
    expires: float
    reason: str
    created: float


@dataclass(frozen=True, slots=True)
class OneTimeCode:
    """A row of ``one_time_codes``: a code or a token's ``jti`` (digests only, never the code)."""

    id: str
    username: str
    intent: str
    digest: bytes = field(repr=False)
    issued: float
    expires: float
    consumed: float | None
    attempts: int
    session_binding: bytes | None = field(repr=False)
    issued_ip: str | None
    consumed_ip: str | None


class Redemption(enum.Enum):
    """What :meth:`Storage.redeem_one_time_code` does with a row, as the caller judged it."""

    #: The right code or token: mark it used (now, by the given IP); redeem returns True.
    CONSUME = "consume"
    #: A wrong try at a live code: count one attempt; redeem returns False.
    WRONG = "wrong"
    #: Not this row's business (foreign, used, expired): leave it as it is; False.
    REFUSE = "refuse"


@dataclass(frozen=True, slots=True)
class WebAuthnCredential:
    """A user's WebAuthn credential (passkey or security key), as registration recorded it."""

    id: str  #: opaque random public id (the API's ``id``)
    username: str  #: canonical user name
    credential_id: bytes
    public_key: bytes = field(repr=False)  #: COSE key
    sign_count: int
    aaguid: str
    transports: tuple[str, ...]
    backup_eligible: bool
    backup_state: bool
    discoverable: bool
    description: str
    attestation_type: str
    created_at: float
    last_used_at: float | None


def _columns(table: str) -> str:
    """The column list of ``table`` in the order its schema entry gives (the row readers
    below index rows in that order, and ``storage migrate`` copies in it)."""
    return ", ".join(TABLES_BY_NAME[table].columns)


_WEBAUTHN_COLUMNS = _columns("webauthn_credentials")


def _webauthn_credential(row: t.Sequence[t.Any]) -> WebAuthnCredential:
    return WebAuthnCredential(
        row[0],
        row[1],
        bytes(row[2]),
        bytes(row[3]),
        int(row[4]),
        row[5],
        tuple(part for part in row[6].split(",") if part),
        bool(row[7]),
        bool(row[8]),
        bool(row[9]),
        row[10],
        row[11],
        float(row[12]),
        None if row[13] is None else float(row[13]),
    )


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A personal access token (SPEC §7.6) as stored: its keyed digest, never the token."""

    id: str  #: random public id (the API's and ``authctl token revoke``'s ``id``)
    username: str  #: canonical user name
    name: str
    digest: bytes = field(repr=False)  #: HMAC-SHA256 of the token (``server.core.tokens``)
    created_at: float
    last_used_at: float | None
    expires_at: float | None  #: None: never
    domains: tuple[str, ...]  #: hosts (each also covers its subdomains); empty: every host
    two_factor: bool  #: counts as two factors (``authctl token create --two-factor`` only)
    created_by: str  #: 'cli' or 'portal'
    revoked_at: float | None


_TOKEN_COLUMNS = _columns("tokens")  # the column names, not a secret
#: Who may make a token.
TOKEN_CREATORS = ("cli", "portal")


def _access_token(row: t.Sequence[t.Any]) -> AccessToken:
    return AccessToken(
        row[0],
        row[1],
        row[2],
        bytes(row[3]),
        float(row[4]),
        None if row[5] is None else float(row[5]),
        None if row[6] is None else float(row[6]),
        tuple(part for part in row[7].split(",") if part),
        bool(row[8]),
        row[9],
        None if row[10] is None else float(row[10]),
    )


_ONE_TIME_COLUMNS = _columns("one_time_codes")


def _one_time_code(row: t.Sequence[t.Any]) -> OneTimeCode:
    (row_id, username, intent, digest, issued, expires, consumed, attempts, binding) = row[:9]
    return OneTimeCode(
        row_id,
        username,
        intent,
        bytes(digest),
        issued,
        expires,
        consumed,
        attempts,
        None if binding is None else bytes(binding),
        row[9],
        row[10],
    )


def _totp_aad(username: str) -> bytes:
    return b"totp_configurations\x00" + username.encode("utf-8")


@dataclass(frozen=True, slots=True)
class OidcGrant:
    """What an OIDC authorization code or token was issued for (SPEC §7.3): the client, the
    user, the granted scopes (space-separated) and the sign-in behind it (``auth_time``,
    ``amr`` space-separated), and the token ``family`` of the grant."""

    client_id: str
    username: str
    scopes: str
    auth_time: float
    amr: str
    family: str


@dataclass(frozen=True, slots=True)
class OidcCode:
    """A stored authorization code (its digest; never the code)."""

    digest: bytes = field(repr=False)
    grant: OidcGrant
    redirect_uri: str
    code_challenge: str
    nonce: str
    issued: float
    expires: float
    used: bool = False


@dataclass(frozen=True, slots=True)
class OidcToken:
    """A stored access or refresh token (its digest; never the token)."""

    digest: bytes = field(repr=False)
    kind: str
    grant: OidcGrant
    issued: float
    expires: float
    used: bool = False
    revoked: bool = False


class CodeRedemption(enum.Enum):
    """What :meth:`Storage.redeem_oidc_code` found."""

    #: The code was live and is now used: the caller may issue tokens.
    REDEEMED = "redeemed"
    #: No such code, or it expired.
    UNKNOWN = "unknown"
    #: The code was used before: the tokens it issued were revoked (RFC 6749 §4.1.2).
    REPLAYED = "replayed"


class Rotation(enum.Enum):
    """What :meth:`Storage.rotate_oidc_refresh` found."""

    ROTATED = "rotated"
    UNKNOWN = "unknown"
    #: A rotated (or revoked) refresh token presented again: its family is revoked.
    REUSED = "reused"


_OIDC_CODE_COLUMNS = (
    "digest, client_id, username, scopes, auth_time, amr, family, redirect_uri, "
    "code_challenge, nonce, issued, expires, used"
)
_OIDC_TOKEN_COLUMNS = (  # column names, not a secret
    "digest, client_id, username, scopes, auth_time, amr, family, kind, issued, expires, "  # noqa: S105
    "used, revoked"
)


def _oidc_grant(row: t.Sequence[t.Any]) -> OidcGrant:
    return OidcGrant(row[1], row[2], row[3], float(row[4]), row[5], row[6])


def _oidc_code(row: t.Sequence[t.Any]) -> OidcCode:
    return OidcCode(
        bytes(row[0]), _oidc_grant(row), row[7], row[8], row[9], float(row[10]),
        float(row[11]), bool(row[12]),
    )  # fmt: skip


def _oidc_token(row: t.Sequence[t.Any]) -> OidcToken:
    return OidcToken(
        bytes(row[0]), row[7], _oidc_grant(row), float(row[8]), float(row[9]), bool(row[10]),
        bool(row[11]),
    )  # fmt: skip


class Storage:
    """The storage database at ``config.path``; secrets sealed with the key file's key.

    WAL mode, ``synchronous=NORMAL``, a busy timeout and one connection per thread (and a new
    one after ``fork``), like :class:`server.core.session_store.SQLiteStore`. With
    ``require_key=False`` the key file is not read (for ``authctl bans``): everything works
    except storing or reading TOTP secrets, which then raise :class:`StorageKeyError`.

    Raises (from the constructor and every method):
        StorageKeyError: the key file is missing, too short, or not the database's key.
        StorageError: the file cannot be opened, is not ours, has a newer schema, or SQLite
            failed.
    """

    def __init__(
        self,
        config: StorageConfig,
        now: Callable[[], float] = time.time,
        *,
        require_key: bool = True,
    ) -> None:
        if config.backend not in BACKENDS:
            raise StorageError(
                f"unknown storage backend {config.backend!r}; use one of {', '.join(BACKENDS)}"
            )
        self.backend = config.backend
        self.path = Path(config.path)
        self.key_file = Path(config.encryption_key_file)
        self._now = now
        #: Seconds to wait for a lock (:meth:`exclusive`) before failing.
        self.timeout = BUSY_TIMEOUT
        self._box: SecretBox | None = None
        if require_key:
            try:
                self._box = SecretBox(read_key_file(self.key_file))
            except ValueError as exc:
                raise StorageKeyError(str(exc)) from None
            if not key_file_is_private(self.key_file):
                log.warning(
                    "the storage key file %s can be read by others; run chmod 600 on it",
                    self.key_file,
                )
        self._db: Database = self._open_engine(config)
        try:
            self._db.set_up(self._apply_schema)
        except BaseException:
            self._db.close()
            raise

    def _open_engine(self, config: StorageConfig) -> Database:
        if config.backend == "postgres":
            if config.postgres is None:
                raise StorageError(
                    "[storage] backend is postgres but [storage.postgres] is missing; add it "
                    "with dsn = ..."
                )
            from server.core.pg_util import PostgresDatabase  # only when used: psycopg loads lazily

            self.timeout = float(config.postgres.timeout)
            return PostgresDatabase(config.postgres, error=StorageError)
        return SQLiteDatabase(
            self.path,
            name="storage database",
            error=StorageError,
            busy_timeout=BUSY_TIMEOUT,
            application_id=APPLICATION_ID,
        )

    def __repr__(self) -> str:
        return f"<Storage {self.describe()}>"

    # ------------------------------------------------------------------ connections

    def _apply_schema(self, tx: Tx) -> None:
        """Migrate to ``SCHEMA_VERSION`` and check the key, inside ``set_up``'s lock."""
        self._upgrade(tx)
        self._check_key(tx)

    def _upgrade(self, tx: Tx) -> None:
        version = self._db.read_version(tx)
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"{self.describe()} has schema version {version}, newer than this authctl "
                f"understands ({SCHEMA_VERSION}); upgrade authctl, or restore a backup made "
                "by this version"
            )
        if version == SCHEMA_VERSION:
            return  # nothing to write: a host on a read-only replica can still open it
        for step in range(version, SCHEMA_VERSION):
            for statement in migration(step, self._db.dialect):
                tx.execute(statement)
        self._db.write_version(tx, SCHEMA_VERSION)

    def _check_key(self, tx: Tx) -> None:
        """Store the key check value on first use; refuse a key that does not match it."""
        if self._box is None:
            return
        row = tx.execute("SELECT value FROM meta WHERE key = 'key_check'").fetchone()
        if row is None:
            if tx.execute("SELECT count(*) FROM totp_configurations").fetchone()[0]:
                raise StorageKeyError(
                    f"{self.describe()} holds encrypted secrets but no key check value; "
                    "restore it from a backup"
                )
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('key_check', ?)", (self._box.check_value,)
            )
        elif not self._box.matches(bytes(row[0])):
            raise StorageKeyError(
                f"{WRONG_KEY} (key file {self.key_file}, database {self.describe()})"
            )

    def _transaction(self) -> t.ContextManager[Tx]:
        """A write transaction: no check-then-act races (see the engine's ``transaction``)."""
        return self._db.transaction()

    def _read(self, sql: str, params: tuple[object, ...] = ()) -> list[t.Any]:
        return self._db.read(sql, params)

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        return self._db.write(sql, params)

    def _sealer(self) -> SecretBox:
        if self._box is None:
            raise StorageKeyError("the storage was opened without its key; TOTP secrets need it")
        return self._box

    def check(self) -> None:
        """Raise StorageError unless a trivial read works and the disk has room (health)."""
        self._db.check()

    def close(self) -> None:
        """Close every connection; later calls raise StorageError."""
        self._db.close()

    # ------------------------------------------------------------------ TOTP

    def save_totp(
        self,
        username: str,
        secret: bytes,
        *,
        algorithm: str,
        digits: int,
        period: int,
        replace: bool = False,
        last_step: int | None = None,
    ) -> bool:
        """Store ``username``'s TOTP secret (sealed); False if one exists and not ``replace``.

        A new secret starts a new replay history: ``last_step`` (the step of the code that
        confirmed the enrolment, as Authelia records it) or none.
        """
        sealed = self._sealer().seal(secret, _totp_aad(username))
        on_conflict = (
            "DO UPDATE SET secret = excluded.secret, algorithm = excluded.algorithm, "
            "digits = excluded.digits, period = excluded.period, "
            "created_at = excluded.created_at, last_used_at = NULL"
            if replace
            else "DO NOTHING"
        )
        with self._transaction() as conn:
            stored = conn.execute(
                "INSERT INTO totp_configurations "  # noqa: S608 - fixed fragments only
                "(username, secret, algorithm, digits, period, created_at, last_used_at) "
                f"VALUES (?, ?, ?, ?, ?, ?, NULL) ON CONFLICT (username) {on_conflict}",
                (username, sealed, algorithm, digits, period, self._now()),
            ).rowcount
            if not stored:
                return False
            conn.execute("DELETE FROM totp_history WHERE username = ?", (username,))
            if last_step is not None:
                conn.execute(
                    "INSERT INTO totp_history (username, last_step) VALUES (?, ?)",
                    (username, last_step),
                )
        return True

    def load_totp(self, username: str) -> TotpRecord | None:
        """``username``'s enrolment with the secret decrypted, or None.

        Raises:
            StorageError: the secret does not decrypt (altered, or moved from another row).
        """
        box = self._sealer()
        rows = self._read(
            "SELECT secret, algorithm, digits, period, created_at, last_used_at "
            "FROM totp_configurations WHERE username = ?",
            (username,),
        )
        if not rows:
            return None
        sealed, algorithm, digits, period, created_at, last_used_at = rows[0]
        try:
            secret = box.open(bytes(sealed), _totp_aad(username))
        except ValueError as exc:
            raise StorageError(f"cannot decrypt the TOTP secret of {username!r}: {exc}") from None
        return TotpRecord(username, secret, algorithm, digits, period, created_at, last_used_at)

    def has_totp(self, username: str) -> bool:
        """True when ``username`` has a TOTP enrolment (reads no secret; needs no key)."""
        return bool(self._read("SELECT 1 FROM totp_configurations WHERE username = ?", (username,)))

    def totp_users(self) -> list[str]:
        """The users with a TOTP enrolment, sorted."""
        return [r[0] for r in self._read("SELECT username FROM totp_configurations ORDER BY 1")]

    def delete_totp(self, username: str) -> bool:
        """Remove ``username``'s enrolment and replay history; True when there was one."""
        with self._transaction() as conn:
            removed = conn.execute(
                "DELETE FROM totp_configurations WHERE username = ?", (username,)
            ).rowcount
            conn.execute("DELETE FROM totp_history WHERE username = ?", (username,))
        return removed > 0

    def last_totp_step(self, username: str) -> int | None:
        """The last accepted time step of ``username``, or None."""
        rows = self._read("SELECT last_step FROM totp_history WHERE username = ?", (username,))
        return int(rows[0][0]) if rows else None

    def accept_totp_step(self, username: str, step: int) -> bool:
        """Record ``step`` as used if it is newer than the last accepted one; True if it was.

        Check and update are one statement in one write transaction, so of any number of
        parallel calls with one step (threads or processes) exactly one returns True. On
        success ``last_used_at`` moves to now in the same transaction.
        """
        with self._transaction() as conn:
            accepted = conn.execute(
                "INSERT INTO totp_history (username, last_step) VALUES (?, ?) "
                "ON CONFLICT (username) DO UPDATE SET last_step = excluded.last_step "
                "WHERE totp_history.last_step < excluded.last_step",
                (username, step),
            ).rowcount
            if accepted:
                conn.execute(
                    "UPDATE totp_configurations SET last_used_at = ? WHERE username = ?",
                    (self._now(), username),
                )
        return accepted > 0

    # ------------------------------------------------------------------ authentication log

    def append_log(
        self, when: float, username: str, ip: str, kind: str, success: bool, banned: bool = False
    ) -> None:
        """Append one authentication attempt to the log."""
        if kind not in ATTEMPT_KINDS:
            raise ValueError(f"unknown attempt kind {kind!r}")
        self._write(
            "INSERT INTO authentication_logs (time, username, ip, kind, success, banned) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (when, username, ip, kind, int(success), int(banned)),
        )

    def recent_attempts(
        self, *, by: str, value: str, kinds: Iterable[str], since: float, limit: int
    ) -> list[Attempt]:
        """The newest ``limit`` attempts not refused by a ban, of ``kinds``, after ``since``.

        ``by`` is ``"username"`` or ``"ip"``; newest first (ties: the later insert first).
        """
        if by not in ("username", "ip"):
            raise ValueError(f"cannot select attempts by {by!r}")
        kind_list = tuple(kinds)
        marks = ", ".join("?" * len(kind_list))
        rows = self._read(
            f"SELECT time, success FROM authentication_logs WHERE {by} = ? AND time > ? "  # noqa: S608
            f"AND banned = 0 AND kind IN ({marks}) ORDER BY time DESC, id DESC LIMIT ?",
            (value, since, *kind_list, limit),
        )
        return [Attempt(float(when), bool(success)) for when, success in rows]

    def purge_logs(self, before: float) -> int:
        """Remove log rows older than ``before``; how many."""
        return self._write("DELETE FROM authentication_logs WHERE time < ?", (before,))

    # ------------------------------------------------------------------ bans

    def save_ban(self, kind: str, value: str, expires: float, reason: str) -> None:
        """Ban ``value`` until ``expires``; an existing ban is only ever extended."""
        if kind not in BAN_KINDS:
            raise ValueError(f"unknown ban kind {kind!r}")
        self._write(
            "INSERT INTO bans (kind, value, expires, reason, created) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (kind, value) DO UPDATE SET expires = excluded.expires, "
            "reason = excluded.reason, created = excluded.created "
            "WHERE bans.expires < excluded.expires",
            (kind, value, expires, reason, self._now()),
        )

    def active_ban(self, targets: Iterable[tuple[str, str]], now: float) -> Ban | None:
        """The ban of any of ``targets`` (``(kind, value)`` pairs) still running at ``now``."""
        pairs = list(targets)
        if not pairs:
            return None
        where = " OR ".join("(kind = ? AND value = ?)" for _ in pairs)
        params = [item for pair in pairs for item in pair]
        rows = self._read(
            "SELECT kind, value, expires, reason, created FROM bans "  # noqa: S608
            f"WHERE expires > ? AND ({where}) ORDER BY expires DESC LIMIT 1",
            (now, *params),
        )
        return Ban(*rows[0]) if rows else None

    def list_bans(self, now: float) -> list[Ban]:
        """Bans still running at ``now``, the longest last."""
        rows = self._read(
            "SELECT kind, value, expires, reason, created FROM bans WHERE expires > ? "
            "ORDER BY expires, kind, value",
            (now,),
        )
        return [Ban(*row) for row in rows]

    def delete_bans(self, targets: Iterable[tuple[str, str]], now: float) -> list[Ban]:
        """Remove the bans of ``targets``; the ones that were still running."""
        removed: list[Ban] = []
        with self._transaction() as conn:
            for kind, value in targets:
                rows = conn.execute(
                    "DELETE FROM bans WHERE kind = ? AND value = ? "
                    "RETURNING kind, value, expires, reason, created",
                    (kind, value),
                ).fetchall()
                removed.extend(Ban(*found) for found in rows if found[2] > now)
        return removed

    def purge_bans(self, now: float) -> int:
        """Remove bans that ended by ``now``; how many."""
        return self._write("DELETE FROM bans WHERE expires <= ?", (now,))

    # ------------------------------------------------------------------ one-time codes

    def add_one_time_code(
        self,
        row_id: str,
        username: str,
        intent: str,
        digest: bytes,
        *,
        issued: float,
        expires: float,
        session_binding: bytes | None = None,
        ip: str | None = None,
    ) -> None:
        """Store a new code (or token ``jti``) ``row_id``: its digest, never the code."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO one_time_codes (id, username, intent, digest, issued, expires, "
                "session_binding, issued_ip) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row_id, username, intent, digest, issued, expires, session_binding, ip),
            )

    def redeem_one_time_code(
        self,
        row_id: str,
        judge: Callable[[OneTimeCode], Redemption],
        *,
        now: float,
        ip: str | None,
    ) -> bool:
        """Judge row ``row_id`` and act on the verdict, in one write transaction.

        ``judge`` (pure: digest comparisons, no I/O) sees the row as it is inside the
        transaction, so the check and the consumption cannot be split by another thread or
        process: of any number of parallel redemptions of one code exactly one returns True.
        False for an unknown ``row_id`` (``judge`` is not called).
        """
        with self._transaction() as conn:
            found = conn.execute(
                f"SELECT {_ONE_TIME_COLUMNS} FROM one_time_codes WHERE id = ?"  # noqa: S608
                f"{self._db.dialect.for_update}",
                (row_id,),
            ).fetchone()
            if found is None:
                return False
            verdict = judge(_one_time_code(found))
            if verdict is Redemption.CONSUME:
                conn.execute(
                    "UPDATE one_time_codes SET consumed = ?, consumed_ip = ? WHERE id = ?",
                    (now, ip, row_id),
                )
                return True
            if verdict is Redemption.WRONG:
                conn.execute(
                    "UPDATE one_time_codes SET attempts = attempts + 1 WHERE id = ?", (row_id,)
                )
        return False

    def revoke_one_time_code(self, row_id: str, now: float) -> bool:
        """Kill a live code without using it (``consumed_ip`` says 'revoked'); True if it was."""
        with self._transaction() as conn:
            changed = conn.execute(
                "UPDATE one_time_codes SET consumed = ?, consumed_ip = 'revoked' "
                "WHERE id = ? AND consumed IS NULL AND expires > ?",
                (now, row_id, now),
            ).rowcount
        return changed > 0

    def one_time_codes(self, username: str | None = None) -> list[OneTimeCode]:
        """The stored codes and tokens (of ``username``, or all), oldest first (for audits)."""
        where, params = ("WHERE username = ? ", (username,)) if username is not None else ("", ())
        rows = self._read(
            f"SELECT {_ONE_TIME_COLUMNS} FROM one_time_codes {where}"  # noqa: S608
            "ORDER BY issued, id",
            params,
        )
        return [_one_time_code(row) for row in rows]

    def purge_one_time_codes(self, before: float) -> int:
        """Remove codes and tokens that expired before ``before``; how many."""
        return self._write("DELETE FROM one_time_codes WHERE expires < ?", (before,))

    # ------------------------------------------------------------------ shared limits

    def hit_rate_limits(
        self, hits: Sequence[tuple[str, Sequence[tuple[int, float]]]], now: float
    ) -> float:
        """Count one hit of each key at ``now`` if every limit of every key allows it.

        ``hits`` pairs a key with its limits, ``(count, window)``: fewer than ``count`` hits
        of the key in the last ``window`` seconds. If all allow, one hit per key is recorded
        and 0.0 returned; otherwise nothing is recorded and the result is the longest wait in
        seconds (until the hit that must leave its window has left it). Check and record are
        one write transaction, so N workers or N hosts share one limit.
        """
        for _key, limits in hits:
            for count, window in limits:
                if count < 1:
                    raise ValueError(f"a rate limit count must be at least 1, not {count}")
                if not window > 0:
                    raise ValueError(f"a rate limit window must be positive, not {window}")
        with self._transaction() as conn:
            self._db.lock_keys(conn, sorted({key for key, _limits in hits}))
            wait = 0.0
            for key, limits in hits:
                for count, window in limits:
                    # the count-th newest hit inside the window, if there are that many
                    row = conn.execute(
                        "SELECT time FROM rate_limit_hits WHERE key = ? AND time > ? "
                        "ORDER BY time DESC LIMIT 1 OFFSET ?",
                        (key, now - window, count - 1),
                    ).fetchone()
                    if row is not None:
                        wait = max(wait, float(row[0]) + window - now)
            if wait > 0:
                return wait
            for key, _limits in hits:
                conn.execute("INSERT INTO rate_limit_hits (key, time) VALUES (?, ?)", (key, now))
        return 0.0

    def purge_rate_limits(self, before: float) -> int:
        """Remove rate-limit hits older than ``before``; how many."""
        return self._write("DELETE FROM rate_limit_hits WHERE time < ?", (before,))

    # ------------------------------------------------------------------ attempts in flight

    def add_inflight(
        self, token: str, counters: Sequence[tuple[str, str, str]], expires: float
    ) -> None:
        """Record attempt ``token`` as in flight for each counter until ``expires`` (a host
        that dies mid-attempt stops counting then); drops rows that expired by now."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM regulation_inflight WHERE expires <= ?", (self._now(),))
            for kind, target, value in counters:
                conn.execute(
                    "INSERT INTO regulation_inflight (token, kind, target, value, expires) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (token, kind, target, value) "
                    "DO UPDATE SET expires = excluded.expires",
                    (token, kind, target, value, expires),
                )

    def remove_inflight(self, token: str) -> None:
        """Attempt ``token`` is over: it no longer counts anywhere."""
        self._write("DELETE FROM regulation_inflight WHERE token = ?", (token,))

    def inflight_counts(
        self, counters: Sequence[tuple[str, str, str]], now: float
    ) -> dict[tuple[str, str, str], int]:
        """How many attempts not expired at ``now`` are in flight for each counter (0 too)."""
        counts = {tuple(counter): 0 for counter in counters}
        if not counts:
            return {}
        where = " OR ".join("(kind = ? AND target = ? AND value = ?)" for _ in counts)
        rows = self._read(
            "SELECT kind, target, value, count(*) FROM regulation_inflight "  # noqa: S608
            f"WHERE expires > ? AND ({where}) GROUP BY kind, target, value",
            (now, *(part for counter in counts for part in counter)),
        )
        for kind, target, value, number in rows:
            counts[(kind, target, value)] = int(number)
        return t.cast("dict[tuple[str, str, str], int]", counts)

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold the lock ``name`` for the block, across threads, processes and hosts.

        Waits at most the storage's timeout, then raises StorageError (fail closed).
        SQLite: a byte of ``<path>.lock`` (0600) next to the database; PostgreSQL: a session
        advisory lock on a connection held for the block.
        """
        with self._db.exclusive(name, self.timeout):
            yield

    # ------------------------------------------------------------------ WebAuthn

    def add_webauthn_credential(self, credential: WebAuthnCredential) -> bool:
        """Store a newly registered credential; False (nothing stored) when its credential id
        is already registered or its user already has one with that description."""
        c = credential
        if any("," in part or not part for part in c.transports):
            raise ValueError(f"bad WebAuthn transports {c.transports!r}")
        with self._transaction() as conn:
            taken = conn.execute(
                "SELECT 1 FROM webauthn_credentials WHERE username = ? AND description = ?",
                (c.username, c.description),
            ).fetchall()
            if taken:
                return False
            added = conn.execute(
                f"INSERT INTO webauthn_credentials ({_WEBAUTHN_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    c.id,
                    c.username,
                    c.credential_id,
                    c.public_key,
                    c.sign_count,
                    c.aaguid,
                    ",".join(c.transports),
                    int(c.backup_eligible),
                    int(c.backup_state),
                    int(c.discoverable),
                    c.description,
                    c.attestation_type,
                    c.created_at,
                    c.last_used_at,
                ),
            ).rowcount
        return added > 0

    def webauthn_credentials(self, username: str | None = None) -> list[WebAuthnCredential]:
        """The credentials of ``username`` (or everyone's), oldest first."""
        where, params = ("WHERE username = ? ", (username,)) if username is not None else ("", ())
        rows = self._read(
            f"SELECT {_WEBAUTHN_COLUMNS} FROM webauthn_credentials {where}"  # noqa: S608
            "ORDER BY created_at, id",
            params,
        )
        return [_webauthn_credential(row) for row in rows]

    def webauthn_credential(self, credential_id: bytes) -> WebAuthnCredential | None:
        """The credential an assertion names (by its credential id), or None."""
        rows = self._read(
            f"SELECT {_WEBAUTHN_COLUMNS} FROM webauthn_credentials "  # noqa: S608
            "WHERE credential_id = ?",
            (credential_id,),
        )
        return _webauthn_credential(rows[0]) if rows else None

    def use_webauthn_credential(
        self, credential_id: bytes, sign_count: int, *, now: float, backup_state: bool
    ) -> bool:
        """Record a verified assertion: the new sign count, backup state and time of use.

        One conditional UPDATE, so across hosts the count only ever grows: False (nothing
        changed) when the count does not grow while either count is non-zero (a possible
        cloned authenticator, or the same assertion twice), or the credential is unknown.
        """
        return (
            self._write(
                "UPDATE webauthn_credentials SET sign_count = ?, backup_state = ?, "
                "last_used_at = ? WHERE credential_id = ? "
                "AND (sign_count < ? OR (sign_count = 0 AND ? = 0))",
                (sign_count, int(backup_state), now, credential_id, sign_count, sign_count),
            )
            > 0
        )

    def rename_webauthn_credential(self, username: str, row_id: str, description: str) -> bool:
        """Give ``username``'s credential ``row_id`` a new description; False when there is
        no such credential or another of the user's has that description."""
        with self._transaction() as conn:
            taken = conn.execute(
                "SELECT 1 FROM webauthn_credentials WHERE username = ? AND description = ? "
                "AND id <> ?",
                (username, description, row_id),
            ).fetchall()
            if taken:
                return False
            changed = conn.execute(
                "UPDATE webauthn_credentials SET description = ? WHERE username = ? AND id = ?",
                (description, username, row_id),
            ).rowcount
        return changed > 0

    def delete_webauthn_credential(self, username: str, row_id: str) -> bool:
        """Remove ``username``'s credential ``row_id``; True when there was one."""
        return (
            self._write(
                "DELETE FROM webauthn_credentials WHERE username = ? AND id = ?",
                (username, row_id),
            )
            > 0
        )

    def delete_webauthn_credentials(self, username: str) -> int:
        """Remove every credential of ``username`` (the user was removed); how many."""
        return self._write("DELETE FROM webauthn_credentials WHERE username = ?", (username,))

    # ------------------------------------------------------------------ user preferences

    def second_factor_method(self, username: str) -> str | None:
        """The second factor ``username`` prefers (SPEC §7.1 ``method``); None: never chosen."""
        rows = self._read(
            "SELECT second_factor_method FROM user_preferences WHERE username = ?", (username,)
        )
        return str(rows[0][0]) if rows else None

    def set_second_factor_method(self, username: str, method: str) -> None:
        """Record the second factor ``username`` prefers (one row per user, replaced)."""
        if method not in SECOND_FACTOR_METHODS:
            raise ValueError(f"bad second-factor method {method!r}")
        self._write(
            "INSERT INTO user_preferences (username, second_factor_method, updated_at) "
            "VALUES (?, ?, ?) ON CONFLICT (username) DO UPDATE SET "
            "second_factor_method = excluded.second_factor_method, "
            "updated_at = excluded.updated_at",
            (username, method, self._now()),
        )

    def delete_user_preferences(self, username: str) -> bool:
        """Forget ``username``'s preferences (the user was removed); True when there were some."""
        return self._write("DELETE FROM user_preferences WHERE username = ?", (username,)) > 0

    # ------------------------------------------------------------------ access tokens

    def add_token(self, token: AccessToken) -> None:
        """Store a new personal access token (its digest; the token itself never reaches
        here)."""
        if any("," in part or not part for part in token.domains):
            raise ValueError(f"bad token domains {token.domains!r}")
        if token.created_by not in TOKEN_CREATORS:
            raise ValueError(f"bad token creator {token.created_by!r}")
        self._write(
            f"INSERT INTO tokens ({_TOKEN_COLUMNS}) "  # noqa: S608 - fixed fragments only
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.id,
                token.username,
                token.name,
                token.digest,
                token.created_at,
                token.last_used_at,
                token.expires_at,
                ",".join(token.domains),
                int(token.two_factor),
                token.created_by,
                token.revoked_at,
            ),
        )

    def tokens(self, username: str | None = None) -> list[AccessToken]:
        """The tokens not revoked (of ``username``, or everyone's), oldest first; expired
        ones too (their owners see that they expired)."""
        where, params = ("AND username = ? ", (username,)) if username is not None else ("", ())
        rows = self._read(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE revoked_at IS NULL "  # noqa: S608
            f"{where}ORDER BY created_at, id",
            params,
        )
        return [_access_token(row) for row in rows]

    def token_by_digest(self, digest: bytes) -> AccessToken | None:
        """The token (revoked ones too) whose digest is ``digest``: one indexed read."""
        rows = self._read(
            f"SELECT {_TOKEN_COLUMNS} FROM tokens WHERE digest = ?",  # noqa: S608
            (digest,),
        )
        return _access_token(rows[0]) if rows else None

    def revoke_token(self, token_id: str, now: float, username: str | None = None) -> str | None:
        """Revoke the live token ``token_id`` (only if it is ``username``'s, when given); its
        owner's name, or None when there is no such live token (another user's is none)."""
        owner = "AND username = ? " if username is not None else ""
        params = (token_id, username) if username is not None else (token_id,)
        with self._transaction() as conn:
            found = conn.execute(
                "SELECT username FROM tokens WHERE id = ? AND revoked_at IS NULL "  # noqa: S608
                f"{owner}{self._db.dialect.for_update}",
                params,
            ).fetchone()
            if found is None:
                return None
            conn.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (now, token_id))
        return str(found[0])

    def revoke_user_tokens(self, username: str, now: float) -> int:
        """Revoke every live token of ``username`` (the user was removed); how many."""
        return self._write(
            "UPDATE tokens SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL",
            (now, username),
        )

    def touch_token(self, token_id: str, now: float, interval: float) -> bool:
        """Record a use at ``now`` unless one was recorded less than ``interval`` seconds
        before (one conditional UPDATE: processes and hosts coalesce too); True if written."""
        return (
            self._write(
                "UPDATE tokens SET last_used_at = ? WHERE id = ? "
                "AND (last_used_at IS NULL OR last_used_at <= ?)",
                (now, token_id, now - interval),
            )
            > 0
        )

    # ------------------------------------------------------------------ OpenID Connect

    def oidc_subject(self, username: str, new: Callable[[], str]) -> str:
        """The user's opaque, stable ``sub``; made with ``new()`` the first time (two hosts
        racing keep the first one written)."""
        rows = self._read("SELECT subject FROM oidc_subjects WHERE username = ?", (username,))
        if rows:
            return str(rows[0][0])
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO oidc_subjects (username, subject) VALUES (?, ?) "
                "ON CONFLICT DO NOTHING",
                (username, new()),
            )
            row = conn.execute(
                "SELECT subject FROM oidc_subjects WHERE username = ?", (username,)
            ).fetchone()
        return str(row[0])

    def add_oidc_code(self, code: OidcCode) -> None:
        """Store a new authorization code (its digest)."""
        g = code.grant
        self._write(
            f"INSERT INTO oidc_codes ({_OIDC_CODE_COLUMNS}) "  # noqa: S608 - fixed names
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                code.digest, g.client_id, g.username, g.scopes, g.auth_time, g.amr, g.family,
                code.redirect_uri, code.code_challenge, code.nonce, code.issued, code.expires,
                int(code.used),
            ),
        )  # fmt: skip

    def redeem_oidc_code(self, digest: bytes, now: float) -> tuple[CodeRedemption, OidcCode | None]:
        """Use the code with ``digest`` once, in one write transaction: of any number of
        parallel redemptions exactly one is REDEEMED. A code used before is REPLAYED and every
        token of its family is revoked in the same transaction (RFC 6749 §4.1.2)."""
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_OIDC_CODE_COLUMNS} FROM oidc_codes WHERE digest = ?"  # noqa: S608
                f"{self._db.dialect.for_update}",
                (digest,),
            ).fetchone()
            if row is None:
                return CodeRedemption.UNKNOWN, None
            code = _oidc_code(row)
            if code.used:
                conn.execute(
                    "UPDATE oidc_tokens SET revoked = 1 WHERE family = ?", (code.grant.family,)
                )
                return CodeRedemption.REPLAYED, code
            if code.expires <= now:
                return CodeRedemption.UNKNOWN, code
            changed = conn.execute(
                "UPDATE oidc_codes SET used = 1 WHERE digest = ? AND used = 0", (digest,)
            ).rowcount
        if changed != 1:  # pragma: no cover - the row is locked for this transaction
            return CodeRedemption.UNKNOWN, None
        return CodeRedemption.REDEEMED, code

    def add_oidc_tokens(self, tokens: Sequence[OidcToken]) -> None:
        """Store newly issued tokens (their digests), in one transaction."""
        with self._transaction() as conn:
            for token in tokens:
                self._insert_oidc_token(conn, token)

    @staticmethod
    def _insert_oidc_token(conn: Tx, token: OidcToken) -> None:
        g = token.grant
        conn.execute(
            f"INSERT INTO oidc_tokens ({_OIDC_TOKEN_COLUMNS}) "  # noqa: S608 - fixed names
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                token.digest, g.client_id, g.username, g.scopes, g.auth_time, g.amr, g.family,
                token.kind, token.issued, token.expires, int(token.used), int(token.revoked),
            ),
        )  # fmt: skip

    def oidc_token(self, digest: bytes) -> OidcToken | None:
        """The stored token with ``digest`` (live or not), or None."""
        rows = self._read(
            f"SELECT {_OIDC_TOKEN_COLUMNS} FROM oidc_tokens WHERE digest = ?",  # noqa: S608
            (digest,),
        )
        return _oidc_token(rows[0]) if rows else None

    def rotate_oidc_refresh(
        self, digest: bytes, now: float, issue: Callable[[OidcToken], Sequence[OidcToken]]
    ) -> tuple[Rotation, OidcToken | None]:
        """Spend the refresh token ``digest`` and store what ``issue(old)`` returns, in one
        write transaction: of parallel uses exactly one rotates. A used or revoked refresh
        token presented again revokes its whole family (reuse detection, RFC 9700 §4.14.2)."""
        with self._transaction() as conn:
            row = conn.execute(
                f"SELECT {_OIDC_TOKEN_COLUMNS} FROM oidc_tokens "  # noqa: S608
                f"WHERE digest = ? AND kind = 'refresh'{self._db.dialect.for_update}",
                (digest,),
            ).fetchone()
            if row is None:
                return Rotation.UNKNOWN, None
            old = _oidc_token(row)
            if old.used or old.revoked:
                conn.execute(
                    "UPDATE oidc_tokens SET revoked = 1 WHERE family = ?", (old.grant.family,)
                )
                return Rotation.REUSED, old
            if old.expires <= now:
                return Rotation.UNKNOWN, old
            conn.execute("UPDATE oidc_tokens SET used = 1 WHERE digest = ?", (digest,))
            for token in issue(old):
                self._insert_oidc_token(conn, token)
        return Rotation.ROTATED, old

    def revoke_oidc_token(self, digest: bytes, *, family: bool) -> bool:
        """Revoke one token, or (``family``) every token of its grant; True if one was found."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT family FROM oidc_tokens WHERE digest = ?", (digest,)
            ).fetchone()
            if row is None:
                return False
            if family:
                conn.execute("UPDATE oidc_tokens SET revoked = 1 WHERE family = ?", (row[0],))
            else:
                conn.execute("UPDATE oidc_tokens SET revoked = 1 WHERE digest = ?", (digest,))
        return True

    def revoke_oidc_user(self, username: str) -> int:
        """Revoke every token of ``username`` (removed or disabled); how many were live."""
        return self._write(
            "UPDATE oidc_tokens SET revoked = 1 WHERE username = ? AND revoked = 0", (username,)
        )

    def save_oidc_consent(
        self, username: str, client_id: str, scopes: str, *, now: float, expires: float
    ) -> None:
        """Remember that ``username`` consented to ``scopes`` for ``client_id`` until
        ``expires`` (replacing an older answer)."""
        with self._transaction() as conn:
            conn.execute(
                "DELETE FROM oidc_consents WHERE username = ? AND client_id = ?",
                (username, client_id),
            )
            conn.execute(
                "INSERT INTO oidc_consents (username, client_id, scopes, granted, expires) "
                "VALUES (?, ?, ?, ?, ?)",
                (username, client_id, scopes, now, expires),
            )

    def oidc_consent(self, username: str, client_id: str, now: float) -> str | None:
        """The scopes (space-separated) of ``username``'s live consent for ``client_id``."""
        rows = self._read(
            "SELECT scopes FROM oidc_consents WHERE username = ? AND client_id = ? AND expires > ?",
            (username, client_id, now),
        )
        return str(rows[0][0]) if rows else None

    def purge_oidc(self, before: float) -> int:
        """Remove codes, tokens and consents that expired before ``before``; how many."""
        with self._transaction() as conn:
            return sum(
                conn.execute(
                    f"DELETE FROM {table} WHERE expires < ?",  # noqa: S608 - fixed names
                    (before,),
                ).rowcount
                for table in ("oidc_codes", "oidc_tokens", "oidc_consents")
            )

    # ------------------------------------------------------------------ status and copying

    def describe(self) -> str:
        """Where the storage is: the SQLite path, or the PostgreSQL hosts and database (never
        a password)."""
        return self._db.describe()

    def schema_version(self) -> int:
        """The database's schema version (``SCHEMA_VERSION`` once opened)."""
        return self._db.version()

    def tables(self) -> tuple[str, ...]:
        """Every data table, in the order ``storage migrate`` copies them."""
        return tuple(table.name for table in TABLES)

    def counts(self) -> dict[str, int]:
        """Rows per data table."""
        return {
            table.name: int(
                self._read(f"SELECT count(*) FROM {table.name}")[0][0]  # noqa: S608 - fixed names
            )
            for table in TABLES
        }

    def rows(self, table: str) -> list[tuple[object, ...]]:
        """Every row of ``table``: all columns in a fixed order, in a fixed row order, byte
        columns as ``bytes`` (for copying to another storage with :meth:`insert_rows`)."""
        spec = _table(table)
        rows = self._read(
            f"SELECT {', '.join(spec.columns)} FROM {spec.name} "  # noqa: S608 - fixed names
            f"ORDER BY {spec.order}"
        )
        return [
            tuple(bytes(v) if isinstance(v, bytes | bytearray | memoryview) else v for v in row)
            for row in rows
        ]

    def insert_rows(self, table: str, rows: t.Sequence[tuple[object, ...]]) -> int:
        """Add ``rows`` (as :meth:`rows` lists them) to ``table`` in one transaction, keeping
        rows already there (same key): running a copy twice adds nothing. How many were new."""
        spec = _table(table)
        width = len(spec.columns)
        for row in rows:
            if len(row) != width:
                raise ValueError(f"a row of {table} has {width} columns, not {len(row)}")
        added = 0
        with self._transaction() as conn:
            for start in range(0, len(rows), COPY_BATCH):
                batch = rows[start : start + COPY_BATCH]
                marks = ", ".join(["(" + ", ".join("?" * width) + ")"] * len(batch))
                added += conn.execute(
                    f"INSERT INTO {spec.name} ({', '.join(spec.columns)}) "  # noqa: S608
                    f"VALUES {marks} ON CONFLICT DO NOTHING",
                    [value for row in batch for value in row],
                ).rowcount
            if spec.generated_id and rows:
                self._db.after_copy(conn, spec)
        return added


def _table(name: str) -> Table:
    """The data table ``name`` (ValueError for anything else: never SQL from outside)."""
    try:
        return TABLES_BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown table {name!r}; tables: {', '.join(TABLES_BY_NAME)}") from None
