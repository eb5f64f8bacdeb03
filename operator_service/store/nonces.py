"""The replay guard's one statement (DECISIONS.md item 2)."""
from __future__ import annotations

from decimal import Decimal

from operator_service.store.pool import Database

# One statement, so the check and the record are atomic: the row is inserted only if the
# nonce is within the window below the provider's newest, and the unique index on
# (provider, seconds) lets exactly one of two concurrent equal nonces in. Rows that fell
# below the window can never be accepted again, so they are pruned on the way. The prune
# bound is computed in Python: a bound Postgres only knows at run time made it plan a
# scan of the whole table.
RECORD_NONCE = """
WITH latest AS (
    SELECT max(seconds) AS top FROM nonces WHERE provider = %(provider)s
), inserted AS (
    INSERT INTO nonces (provider, nonce, seconds)
    SELECT %(provider)s, %(nonce)s, %(seconds)s FROM latest
    WHERE latest.top IS NULL OR %(seconds)s >= latest.top - %(window)s
    ON CONFLICT (provider, seconds) DO NOTHING
    RETURNING seconds
), pruned AS (
    DELETE FROM nonces
    WHERE provider = %(provider)s
      AND EXISTS (SELECT 1 FROM inserted)
      AND seconds < %(cutoff)s
)
SELECT count(*) FROM inserted
"""


def record_nonce(db: Database, provider: str, nonce: str, seconds: Decimal, window_seconds: int) -> bool:
    """Record the nonce if it is new and recent enough for this provider; True if recorded."""
    with db.cursor() as cur:
        cur.execute(
            RECORD_NONCE,
            {"provider": provider, "nonce": nonce[:255], "seconds": seconds, "window": window_seconds,
             "cutoff": seconds - window_seconds},
        )
        return cur.fetchone()[0] == 1
