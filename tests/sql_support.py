"""One statement on a connection of its own, for tests that look at a database from outside the service."""

from __future__ import annotations


def query_and_close(conn, sql: str, params: tuple = ()) -> list[tuple]:
    """Run `sql` on `conn` in a transaction of its own, then close it: the rows, if it returns any."""
    try:
        with conn, conn.cursor() as cur:
            cur.execute(sql, params or None)
            return cur.fetchall() if cur.description else []
    finally:
        conn.close()
