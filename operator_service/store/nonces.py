"""The replay guard: a call of the `operator_record_nonce` function.

The function (store/migrations.py, NONCE_FUNCTION) records the nonce only if it is new
and within the window below the provider's newest, atomically. RECORD_NONCE_CALL lets
another statement make the same call, so a read can record its nonce in the same round
trip (jobs.record_nonce_and_read_statuses).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from operator_service.store.pool import Database, only_row, run_prepared

RECORD_NONCE_CALL = "operator_record_nonce(%s, %s, %s, %s)"


class NonceRefused(Exception):
    """The nonce was used before, or is older than the window below the provider's newest."""


@dataclass(frozen=True)
class SignedNonce:
    """A signed request's nonce, to be recorded for its provider unless `guarded` is False.

    Only the nonces of a trusted signer (one of ALLOWED_PROVIDERS) are guarded. With
    SIGNATURE_REQUIRED=0 any other key is accepted too, so its signature proves nothing and
    a replay of its request gains an attacker nothing a fresh one would not: recording
    such nonces would only let anyone grow the table, one random key per request.
    """

    provider: str
    nonce: str
    seconds: Decimal
    window_seconds: int
    guarded: bool = True

    def params(self) -> tuple:
        """The parameters of RECORD_NONCE_CALL."""
        return (self.provider, self.nonce[:255], self.seconds, self.window_seconds)


def record_nonce(db: Database, signed: SignedNonce) -> bool:
    """Record the nonce if it is new and recent enough for its provider; True if recorded
    (or not guarded)."""
    if not signed.guarded:
        return True
    with db.cursor() as cur:
        run_prepared(cur, f"SELECT {RECORD_NONCE_CALL}", signed.params())
        return bool(only_row(cur)[0])
