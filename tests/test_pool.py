"""The connection pool: connections are reused, bounded, and replaced after a server restart."""

from __future__ import annotations

import psycopg2.errors
import pytest

from operator_service.store.pool import Database, run_prepared
from tests.conftest import run_together
from tests.waiting import wait_for


def _backend_pid(db: Database) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT pg_backend_pid()")
        return cur.fetchone()[0]


def test_statements_reuse_one_connection(settings):
    """The original opened a new connection for every statement."""
    db = Database(settings.postgres, max_connections=2)
    first = _backend_pid(db)
    assert all(_backend_pid(db) == first for _ in range(5))
    db.close()


def test_at_most_max_connections_are_open(settings):
    db = Database(settings.postgres, max_connections=2)

    def work() -> int:
        with db.cursor() as cur:
            cur.execute("SELECT pg_backend_pid(), pg_sleep(0.05)")
            return cur.fetchone()[0]

    pids = run_together(6, work)
    assert len(pids) == 6 and len(set(pids)) <= 2
    db.close()


def _backend_ended(db: Database, pid: int) -> bool:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))
        return cur.fetchone()[0] == 0


def test_a_connection_the_server_ended_is_replaced_without_an_error(settings):
    db = Database(settings.postgres, max_connections=1)
    old = _backend_pid(db)
    admin = Database(settings.postgres)
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s)", (old,))
    wait_for(lambda: _backend_ended(admin, old), f"backend {old} to end")
    admin.close()

    assert _backend_pid(db) != old
    db.close()


def test_a_transaction_commits_all_or_nothing(db):
    with pytest.raises(psycopg2.errors.UniqueViolation), db.transaction() as cur:
        cur.execute("INSERT INTO envs (namespace, status) VALUES ('a', '{}')")
        cur.execute("INSERT INTO envs (namespace, status) VALUES ('a', '{}')")
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM envs")
        assert cur.fetchone()[0] == 0


def _prepared_count(cur) -> int:
    cur.execute("SELECT count(*) FROM pg_prepared_statements")
    return cur.fetchone()[0]


def test_a_prepared_statement_is_prepared_once_per_connection(db):
    with db.cursor() as cur:
        before = _prepared_count(cur)
        for value in (1, 2, 3):
            run_prepared(cur, "SELECT %s::int + 1, '100%%'", (value,))
            assert cur.fetchone() == (value + 1, "100%")
        assert _prepared_count(cur) == before + 1


def test_a_server_that_forgot_its_prepared_statements_gets_plain_ones(db):
    with db.cursor() as cur:
        run_prepared(cur, "SELECT %s::text || 'b'", ("a",))
        cur.execute("DEALLOCATE ALL")
        run_prepared(cur, "SELECT %s::text || 'b'", ("c",))
        assert cur.fetchone() == ("cb",)
        run_prepared(cur, "SELECT %s::int * 2", (4,))
        assert cur.fetchone() == (8,)
        assert _prepared_count(cur) == 0
