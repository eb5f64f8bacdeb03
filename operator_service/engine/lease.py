"""The engine's lease on its namespace: two of our engines never run the same namespace's jobs.

`NamespaceLease.take` waits until this engine holds the namespace's advisory lock (see
queries.py) on a database connection of its own, saying who holds it meanwhile;
nothing else of the engine starts before. The engine confirms the lease before each
round of taking jobs, and takes a job only by a statement that checks, in the database
itself, that the lease's session still holds the lock.

The lock lasts as long as the lease's session: an engine that stops, crashes or is
killed frees its namespace at once, and the next engine resumes its unfinished jobs. If
the session ends while the engine runs (the database restarted), `confirm` takes the
lock again; if another engine got it first, `LeaseLost`, and this engine stops, leaving
its jobs to the holder. The session asks the server for TCP keepalives, so that the
lease of an engine whose machine vanished is freed within about half a minute.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from operator_service.engine import queries
from operator_service.store.pool import Database, DatabaseUnavailable
from operator_service.store.settings import PostgresSettings

log = logging.getLogger(__name__)

REPEAT_NOTICE_SECONDS = 60.0
KEEPALIVES = {"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}


class LeaseLost(Exception):
    """Another engine took this engine's namespace (possible only after the lease's session ended)."""


class NamespaceLease:
    def __init__(self, postgres: PostgresSettings, namespace: str, retry_seconds: float):
        self.namespace = namespace
        self._retry_seconds = retry_seconds
        self.pid = 0  # the backend whose session holds the lock (0: none yet; no backend has it)
        name = f"operator-engine pid {os.getpid()}@{socket.gethostname()} {namespace}"
        self._db = Database(postgres, max_connections=1, application_name=name, session_settings=KEEPALIVES)

    @classmethod
    def take(
        cls, postgres: PostgresSettings, namespace: str, stop: threading.Event, retry_seconds: float = 1.0
    ) -> NamespaceLease | None:
        """The lease, once held (asking every `retry_seconds`); None if `stop` was set first.

        DatabaseUnavailable if the database cannot be reached at the first attempt (a
        start-up error); later outages are waited out.
        """
        lease = cls(postgres, namespace, retry_seconds)
        try:
            if lease._wait(stop):
                return lease
        except BaseException:
            lease.release()
            raise
        lease.release()
        return None

    def _wait(self, stop: threading.Event) -> bool:
        reached = False
        noticed_at: float | None = None
        while not stop.is_set():
            try:
                held, pid = queries.take_lease(self._db, self.namespace)
            except DatabaseUnavailable as exc:
                if not reached:
                    raise
                log.warning("database unavailable while waiting for environment %s (%s)", self.namespace, exc)
                stop.wait(self._retry_seconds)
                continue
            reached = True
            if held:
                self.pid = pid
                log.info("this engine now runs environment %s (its lease is held by backend %d)", self.namespace, pid)
                return True
            if noticed_at is None or time.monotonic() - noticed_at >= REPEAT_NOTICE_SECONDS:
                log.warning(
                    "environment %s is run by another engine, %s; waiting until it stops",
                    self.namespace,
                    self._holder(),
                )
                noticed_at = time.monotonic()
            stop.wait(self._retry_seconds)
        return False

    def _holder(self) -> str:
        try:
            return queries.lease_holder(self._db, self.namespace) or "which has just stopped"
        except DatabaseUnavailable:
            return "unknown"

    def confirm(self) -> None:
        """Make sure the lease is still held (taking the lock again in a new session).

        LeaseLost if another engine holds it; DatabaseUnavailable if the database cannot tell.
        """
        held, pid = queries.take_lease(self._db, self.namespace)
        if not held:
            raise LeaseLost(f"environment {self.namespace} was taken over by another engine, {self._holder()}")
        if pid != self.pid:
            log.info("environment %s: lease taken again in a new session (backend %d)", self.namespace, pid)
            self.pid = pid

    def release(self) -> None:
        """End the lease's session, which frees the namespace."""
        self._db.close()

    def __enter__(self) -> NamespaceLease:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
