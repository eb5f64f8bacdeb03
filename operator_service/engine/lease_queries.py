"""The statements of an engine's namespace lease: a session-level advisory lock.

The lock is held by the session that took it until that session ends (the engine stops,
crashes, or loses its connection), so a dead engine never keeps its namespace. Its key
is a class number of our own in the upper 32 bits and the CRC-32 of the namespace in the
lower ones; Postgres shows them in pg_locks as classid and objid (objsubid 1), where
anyone can see which session holds which namespace.
"""
from __future__ import annotations

import zlib
from typing import Optional

from operator_service.store.pool import Database

LEASE_CLASS = 0x4F505253  # "OPRS": no other lock of ours uses this upper half


def held_by(pid: str) -> str:
    """SQL condition: backend `pid` (an SQL expression) holds a namespace's lock, given as the
    parameters (classid, objid). Statements that must run only under the lease use it."""
    return (
        f"EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = {pid}"
        " AND classid = %s::oid AND objid = %s::oid AND objsubid = 1)"
    )


def lock_parts(namespace: str) -> tuple[int, int]:
    """(classid, objid) of the namespace's lock."""
    return LEASE_CLASS, zlib.crc32(namespace.encode())


def lock_key(namespace: str) -> int:
    classid, objid = lock_parts(namespace)
    return (classid << 32) | objid


def take(db: Database, namespace: str) -> tuple[bool, int]:
    """Hold the namespace's lock in this session if no other session does: (held, backend pid).

    Held already by this session: true, without taking it again (it would stack).
    """
    with db.cursor() as cur:
        cur.execute(
            f"SELECT CASE WHEN {held_by('pg_backend_pid()')} THEN true"
            " ELSE pg_try_advisory_lock(%s) END, pg_backend_pid()",
            (*lock_parts(namespace), lock_key(namespace)),
        )
        held, pid = cur.fetchone()
        return bool(held), int(pid)


def holder(db: Database, namespace: str) -> Optional[str]:
    """Who holds the namespace's lock, as far as this role may see: application and address."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT l.pid, a.application_name, a.client_addr::text FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid"
            " AND l.objsubid = 1",
            lock_parts(namespace),
        )
        row = cur.fetchone()
    if row is None:
        return None
    pid, application, address = row
    return f"{application or 'a session'} (backend {pid}{', from ' + address if address else ''})"
