"""Moments given by people: the `since` of an operator's job listing."""

from __future__ import annotations

from datetime import datetime, timezone

# 9999-12-31T23:59:59Z: Postgres timestamps go further, Python's datetime does not.
LATEST_EPOCH = 253402300799.0


def parse_moment(text: str) -> float:
    """Epoch seconds of `text`: a number of seconds since 1970 (UTC), or an ISO 8601 date or
    date-time (`2026-12-01`, `2026-12-01T10:00:00Z`; UTC unless it names an offset).
    ValueError saying what is accepted otherwise."""
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        seconds = _iso_seconds(value)
    if not 0 <= seconds <= LATEST_EPOCH:
        raise ValueError(f"must be a time between 1970 and 9999, got {text[:64]!r}")
    return seconds


def _iso_seconds(value: str) -> float:
    iso = value[:-1] + "+00:00" if value[-1:] in ("Z", "z") else value  # Python 3.10 reads no Z
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        raise ValueError(
            f"must be epoch seconds or an ISO 8601 date or date-time such as 2026-12-01T10:00:00Z, got {value[:64]!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()
