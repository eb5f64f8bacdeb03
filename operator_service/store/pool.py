"""Database connections: one pool per process, short transactions, failures named.

Every statement runs inside `transaction()`. A connection that broke (server restart,
network cut) is thrown away instead of being returned to the pool, so the service
recovers by itself once the database is back. Any driver error that means "the
database is not there" becomes `DatabaseUnavailable`, which the routes turn into a 503.
"""
from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager
from typing import Iterator, Optional

import psycopg2
import psycopg2.extensions
import psycopg2.pool

from operator_service.config import PostgresSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 3
STATEMENT_TIMEOUT_MS = 15000
CHECKOUT_TIMEOUT_SECONDS = 10


class DatabaseUnavailable(Exception):
    """Postgres could not be reached or dropped the connection."""


class Database:
    """A lazily created, fork-safe connection pool for one Postgres database."""

    def __init__(self, settings: PostgresSettings, max_connections: int = 4):
        self.settings = settings
        self.max_connections = max_connections
        self._pool: Optional[psycopg2.pool.ThreadedConnectionPool] = None
        self._pid = 0
        self._lock = threading.Lock()
        # psycopg2's pool raises when every connection is out; threads wait their turn instead.
        self._slots = threading.BoundedSemaphore(max_connections)

    def _connect_kwargs(self) -> dict:
        return {
            **self.settings.dsn_kwargs(),
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "options": f"-c timezone=UTC -c statement_timeout={STATEMENT_TIMEOUT_MS}",
            "application_name": "operator-service",
        }

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        """Create the pool on first use in this process (gunicorn forks after import)."""
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = psycopg2.pool.ThreadedConnectionPool(
                        0, self.max_connections, **self._connect_kwargs()
                    )
                    self._pid = os.getpid()
        return self._pool

    def _checkout(self) -> psycopg2.extensions.connection:
        if not self._slots.acquire(timeout=CHECKOUT_TIMEOUT_SECONDS):
            raise DatabaseUnavailable("no database connection free within 10 s")
        try:
            conn = self._get_pool().getconn()
            if conn.closed:
                self._get_pool().putconn(conn, close=True)
                conn = self._get_pool().getconn()
        except psycopg2.Error as exc:
            self._slots.release()
            raise DatabaseUnavailable(_describe(exc)) from None
        return conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """A cursor in one transaction: committed on success, rolled back on error."""
        conn = self._checkout()
        broken = False
        try:
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
            self._get_pool().putconn(conn, close=broken or bool(conn.closed))
            self._slots.release()

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.closeall()
        self._pool = None


def _rollback(conn: psycopg2.extensions.connection) -> bool:
    try:
        conn.rollback()
        return True
    except psycopg2.Error:
        return False


def _describe(exc: psycopg2.Error) -> str:
    """The first line of the driver's message: enough to diagnose, never a password."""
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__
