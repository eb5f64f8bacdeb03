"""Database connections: a small pool per process, one round trip per statement, failures named.

Connections stay open and are reused (the original opened one per statement). They run
in autocommit mode, so a single statement costs one round trip: `cursor()` is for the
usual case of one statement, `transaction()` for several that must commit together.
A connection that broke (server restart, network cut) is thrown away instead of being
reused, so the service recovers by itself once the database is back. Any driver error
that means "the database is not there" becomes `DatabaseUnavailable` (a 503).

No call waits on the database for long (POSTGRES_TIMEOUT, default 5 s): connecting has a
connect timeout, waiting for a free connection a deadline, and every statement both a
server-side statement_timeout and a client-side deadline one second longer. The
client-side one is what ends the wait when the server is alive to the kernel but does
not run (SIGSTOP, a frozen VM): its sockets stay open and nothing ever comes back, so
`_Watchdog` shuts the socket down and libpq's wait ends with an error at once.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import queue
import re
import select
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from operator_service.store.settings import PostgresSettings

log = logging.getLogger(__name__)

# The client-side deadline of a statement exceeds its statement_timeout by this much, so a
# server that runs answers (with its own error) before the client gives up on it.
ANSWER_MARGIN_SECONDS = 1.0
# libpq's connect_timeout counts whole seconds, at least 2.
MIN_CONNECT_TIMEOUT_SECONDS = 2

Cursor = psycopg2.extensions.cursor


class Connection(psycopg2.extensions.connection):
    """A connection that remembers the statements it prepared (see run_prepared)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()
        self.can_prepare = True
        self.cut_after: float | None = None  # set by the watchdog: seconds it waited in vain


class DatabaseUnavailable(Exception):
    """Postgres could not be reached or dropped the connection, or failed a write it had to do."""


def failure(exc: psycopg2.Error, doing: str) -> DatabaseUnavailable:
    """A database error the request cannot do anything about (a constraint or trigger the
    operator added, say), as a DatabaseUnavailable naming what failed."""
    return DatabaseUnavailable(f"{doing} failed: {_describe(exc)}")


class Database:
    """At most `max_connections` open connections to one database, shared by the threads of a process.

    `application_name` and `session_settings` (name -> value, set at connect) describe and
    tune this pool's sessions.
    """

    def __init__(
        self,
        settings: PostgresSettings,
        max_connections: int = 4,
        application_name: str = "operator-service",
        session_settings: dict[str, str] | None = None,
    ):
        self.settings = settings
        self.timeout = settings.timeout
        self.application_name = application_name
        options = {"timezone": "UTC", "statement_timeout": f"{round(self.timeout * 1000)}", **(session_settings or {})}
        self._options = " ".join(f"-c {name}={value}" for name, value in options.items())
        self._idle: list[Connection] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # One token per connection that may be open; SimpleQueue's get and put are C code.
        self._slots: queue.SimpleQueue[None] = queue.SimpleQueue()
        for _ in range(max_connections):
            self._slots.put(None)

    def _connect(self) -> Connection:
        try:
            conn = psycopg2.connect(
                **self.settings.dsn_kwargs(),
                connect_timeout=max(MIN_CONNECT_TIMEOUT_SECONDS, math.ceil(self.timeout)),
                options=self._options,
                application_name=self.application_name,
                connection_factory=Connection,
            )
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(_describe(exc)) from None
        conn.autocommit = True
        return conn

    def _checkout(self, answer_within: float) -> Connection:
        try:
            self._slots.get(timeout=self.timeout)
        except queue.Empty:
            raise DatabaseUnavailable(f"no database connection free within {self.timeout:g} s") from None
        try:
            conn = self._reuse() or self._connect()
        except BaseException:
            self._slots.put(None)
            raise
        _watchdog.arm(conn, answer_within)
        return conn

    def _reuse(self) -> Connection | None:
        """An idle connection that is still open, or None; dead ones are closed on the way."""
        while True:
            with self._lock:
                if self._pid != os.getpid():
                    # A forked child must not use (or close) its parent's sockets.
                    self._idle, self._pid = [], os.getpid()
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if _is_open(conn):
                return conn
            conn.close()

    def _checkin(self, conn: Connection, broken: bool) -> None:
        _watchdog.disarm(conn)
        try:
            if broken or conn.closed or conn.cut_after is not None:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.put(None)

    @property
    def answer_within(self) -> float:
        """The client-side deadline of a statement run with the default statement_timeout."""
        return self.timeout + ANSWER_MARGIN_SECONDS

    @contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """A cursor for one statement, committed as it runs."""
        conn = self._checkout(self.answer_within)
        broken = False
        try:
            with conn.cursor() as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise DatabaseUnavailable(_describe(exc, conn)) from None
        except _SCHEMA_MISSING as exc:
            raise DatabaseUnavailable(_schema_missing(exc)) from None
        finally:
            self._checkin(conn, broken)

    @contextmanager
    def transaction(self, seconds: float | None = None) -> Iterator[Cursor]:
        """A cursor whose statements commit together, or roll back on error.

        `seconds` gives the whole transaction a longer deadline (and each of its statements
        that statement_timeout) than the pool's own, for work known to be long (migrations).
        """
        conn = self._checkout(self.answer_within if seconds is None else seconds + ANSWER_MARGIN_SECONDS)
        broken = False
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                if seconds is not None:
                    cur.execute("SELECT set_config('statement_timeout', %s, true)", (f"{round(seconds * 1000)}",))
                yield cur
            conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise DatabaseUnavailable(_describe(exc, conn)) from None
        except BaseException as exc:
            broken = not _rollback(conn)
            if isinstance(exc, _SCHEMA_MISSING):
                raise DatabaseUnavailable(_schema_missing(exc)) from None
            raise
        finally:
            if not broken and not conn.closed:
                conn.autocommit = True
            self._checkin(conn, broken)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def only_row(cur: Cursor) -> tuple:
    """The row of a statement that always returns exactly one (an aggregate, a function call)."""
    row = cur.fetchone()
    if row is None:
        raise DatabaseUnavailable("the database answered no row where one is always returned")
    return row


def run_prepared(cur: Cursor, sql: str, params: Sequence) -> None:
    """Execute `sql` (with %s placeholders) as a prepared statement of the cursor's connection.

    Planning the statements of the busiest routes cost Postgres as much as running them;
    a statement prepared once per connection is planned once. A server that forgot it
    (a restart behind a proxy, DISCARD ALL, a transaction-mode pooler) gets the plain
    statement instead, and that connection stops preparing. Autocommit cursors only: a
    failed EXECUTE inside a transaction would abort it.
    """
    conn = cast(Connection, cur.connection)
    if not conn.can_prepare:
        cur.execute(sql, params)
        return
    name, prepare, execute = _prepared_forms(sql, len(params))
    try:
        if name not in conn.prepared:
            cur.execute(prepare)
            conn.prepared.add(name)
        cur.execute(execute, params)
    except (psycopg2.errors.InvalidSqlStatementName, psycopg2.errors.DuplicatePreparedStatement) as exc:
        log.info("prepared statements do not last on this connection (%s); using plain statements", _describe(exc))
        conn.prepared.clear()
        conn.can_prepare = False
        cur.execute(sql, params)


@functools.lru_cache(maxsize=256)
def _prepared_forms(sql: str, arity: int) -> tuple[str, str, str]:
    """The statement's name, its PREPARE and its EXECUTE (with %s for the parameters)."""
    name = "operator_" + hashlib.sha1(sql.encode()).hexdigest()[:16]
    numbers = iter(range(1, arity + 1))
    numbered = re.sub(r"%s", lambda _: f"${next(numbers)}", sql).replace("%%", "%")
    return name, f"PREPARE {name} AS {numbered}", f"EXECUTE {name} ({', '.join(['%s'] * arity)})"


def _is_open(conn: Connection) -> bool:
    """An idle connection has nothing to read: if it has, the server ended it (a restart, say)."""
    if conn.closed:
        return False
    readable, _, _ = select.select([conn], [], [], 0)
    return not readable


def _rollback(conn: Connection) -> bool:
    try:
        conn.rollback()
        return True
    except psycopg2.Error:
        return False


# A statement that names a table, column or function the schema lacks: not a bug of the
# request, but a database whose schema was never created or upgraded.
_SCHEMA_MISSING = (psycopg2.errors.UndefinedTable, psycopg2.errors.UndefinedColumn, psycopg2.errors.UndefinedFunction)


def _schema_missing(exc: psycopg2.Error) -> str:
    return (
        f"the schema is missing or out of date ({_describe(exc)});"
        " run `operator-service migrate` or POST /api/v1/operator/pgsqlinit"
    )


def _describe(exc: psycopg2.Error, conn: Connection | None = None) -> str:
    """The first line of the driver's message: enough to diagnose, never a password."""
    if conn is not None and conn.cut_after is not None:
        return f"no answer from the database within {conn.cut_after:g} s"
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


class _Watchdog:
    """Shuts down the socket of a connection checked out for longer than its deadline.

    One daemon thread per process, started at the first checkout, ticking while anything is
    checked out. Arming and disarming cost a lock and a dict operation; the lock also makes
    sure a connection is never cut once it has been handed back.
    """

    TICK_SECONDS = 0.2

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._deadlines: dict[Connection, tuple[float, float]] = {}
        self._lock = threading.Lock()
        self._busy = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self, conn: Connection, seconds: float) -> None:
        with self._lock:
            self._deadlines[conn] = (time.monotonic() + seconds, seconds)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="database-watchdog", daemon=True)
                self._thread.start()
        if not self._busy.is_set():
            self._busy.set()

    def disarm(self, conn: Connection) -> None:
        with self._lock:
            self._deadlines.pop(conn, None)

    def _watch(self) -> None:
        while True:
            self._busy.wait()
            time.sleep(self.TICK_SECONDS)
            now = time.monotonic()
            with self._lock:
                for conn, (deadline, seconds) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[conn]
                        _cut(conn, seconds)
                if not self._deadlines:
                    self._busy.clear()


def _cut(conn: Connection, seconds: float) -> None:
    """End whatever libpq waits for on `conn`: it sees the connection closed."""
    conn.cut_after = seconds
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except (OSError, psycopg2.InterfaceError):
        pass  # already closed


_watchdog = _Watchdog()
# A forked child starts with no watchdog thread and must not inherit a held lock.
os.register_at_fork(after_in_child=_watchdog._reset)
