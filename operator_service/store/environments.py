"""Statements on `envs`: the compute environments the engines announce."""

from __future__ import annotations

from decimal import Decimal

from operator_service.store.pool import Database, run_prepared

MAX_ENVIRONMENTS = 1000


def list_environments(db: Database) -> list[tuple[str, str | None, Decimal | None]]:
    """(namespace, status JSON text, lastping epoch) of every announced environment."""
    with db.cursor() as cur:
        run_prepared(
            cur,
            "SELECT namespace, status, extract(epoch from lastping) FROM envs ORDER BY namespace LIMIT %s",
            (MAX_ENVIRONMENTS,),
        )
        return cur.fetchall()


def environment_status(db: Database, namespace: str) -> str | None:
    """The status JSON text of one environment; None if it was never announced."""
    with db.cursor() as cur:
        run_prepared(cur, "SELECT status FROM envs WHERE namespace = %s", (namespace,))
        row = cur.fetchone()
        return None if row is None else (row[0] or "")


def environment_namespaces(db: Database) -> list[str]:
    with db.cursor() as cur:
        cur.execute("SELECT namespace FROM envs ORDER BY namespace LIMIT %s", (MAX_ENVIRONMENTS,))
        return [row[0] for row in cur.fetchall()]
