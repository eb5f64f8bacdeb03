"""Database connections: a small pool per process, one round trip per statement, failures named.

Connections stay open and are reused (the original opened one per statement). They run
in autocommit mode, so a single statement costs one round trip: `cursor()` is for the
usual case of one statement, `transaction()` for several that must commit together.
A connection that broke (server restart, network cut) is thrown away instead of being
reused, so the service recovers by itself once the database is back. Any driver error
that means "the database is not there" becomes `DatabaseUnavailable` (a 503).
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import queue
import re
import select
import threading
from contextlib import contextmanager
from typing import Iterator, Sequence

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from operator_service.config import PostgresSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
STATEMENT_TIMEOUT_MS = 15000
CHECKOUT_TIMEOUT_SECONDS = 10

Cursor = psycopg2.extensions.cursor


class Connection(psycopg2.extensions.connection):
    """A connection that remembers the statements it prepared (see run_prepared)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.prepared: set[str] = set()
        self.can_prepare = True


class DatabaseUnavailable(Exception):
    """Postgres could not be reached or dropped the connection."""


class Database:
    """At most `max_connections` open connections to one database, shared by the threads of a process."""

    def __init__(self, settings: PostgresSettings, max_connections: int = 4):
        self.settings = settings
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
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                options=f"-c timezone=UTC -c statement_timeout={STATEMENT_TIMEOUT_MS}",
                application_name="operator-service",
                connection_factory=Connection,
            )
        except psycopg2.Error as exc:
            raise DatabaseUnavailable(_describe(exc)) from None
        conn.autocommit = True
        return conn

    def _checkout(self) -> Connection:
        try:
            self._slots.get(timeout=CHECKOUT_TIMEOUT_SECONDS)
        except queue.Empty:
            raise DatabaseUnavailable(f"no database connection free within {CHECKOUT_TIMEOUT_SECONDS} s") from None
        try:
            return self._reuse() or self._connect()
        except BaseException:
            self._slots.put(None)
            raise

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
        try:
            if broken or conn.closed:
                conn.close()
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.put(None)

    @contextmanager
    def cursor(self) -> Iterator[Cursor]:
        """A cursor for one statement, committed as it runs."""
        conn = self._checkout()
        broken = False
        try:
            with conn.cursor() as cur:
                yield cur
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise DatabaseUnavailable(_describe(exc)) from None
        finally:
            self._checkin(conn, broken)

    @contextmanager
    def transaction(self) -> Iterator[Cursor]:
        """A cursor whose statements commit together, or roll back on error."""
        conn = self._checkout()
        broken = False
        try:
            conn.autocommit = False
            with conn.cursor() as cur:
                yield cur
            conn.commit()
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            broken = True
            raise DatabaseUnavailable(_describe(exc)) from None
        except BaseException:
            broken = not _rollback(conn)
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


def run_prepared(cur: Cursor, sql: str, params: Sequence) -> None:
    """Execute `sql` (with %s placeholders) as a prepared statement of the cursor's connection.

    Planning the statements of the busiest routes cost Postgres as much as running them;
    a statement prepared once per connection is planned once. A server that forgot it
    (a restart behind a proxy, DISCARD ALL, a transaction-mode pooler) gets the plain
    statement instead, and that connection stops preparing. Autocommit cursors only: a
    failed EXECUTE inside a transaction would abort it.
    """
    conn: Connection = cur.connection
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


def _describe(exc: psycopg2.Error) -> str:
    """The first line of the driver's message: enough to diagnose, never a password."""
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
