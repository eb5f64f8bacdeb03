"""Where a request's parameters come from, and the original's checks on them."""
from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from flask import request

from operator_service.errors import ApiError
from operator_service.store.jobs import JobFilter


def request_data() -> Any:
    """The query string if it has any parameter, else the JSON body (None when there is none).

    Like the original, the body is read whatever the Content-Type says; a body that is not
    JSON is a 400 instead of the framework's 415 page.
    """
    args = request.args
    if args:
        query = request.query_string
        return _without_nul(args.to_dict(), b"%00" in query or b"\x00" in query)
    raw = request.get_data(cache=True)
    if not raw or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("Request body is not valid JSON", 400) from None
    return _without_nul(data, b"\\u0000" in raw or b"\x00" in raw)


def _without_nul(data: Any, may_hold_nul: bool) -> Any:
    """Refuse NUL characters, which Postgres text cannot hold, anywhere in the parameters.

    In UTF-8 JSON a NUL can only arrive as \\u0000 (JSON refuses raw control characters; a
    UTF-16 or UTF-32 body holds zero bytes anyway), in a query string as %00 or raw, so the
    parameters are searched only when the raw request holds one of these.
    """
    if may_hold_nul and _has_nul(data):
        raise ApiError("Request parameters must not contain NUL characters", 400)
    return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


def check_required(keys: Sequence[str], data: Any, call: str) -> dict:
    """The original's required-attribute check: a present key passes even when null."""
    if not data or not isinstance(data, dict):
        raise ApiError("payload seems empty.", 400)
    for key in keys:
        if key not in data:
            raise ApiError(f'"{key}" is required in the call to {call}', 400)
    return data


def normalised_id(value: Any) -> Optional[str]:
    """An id filter, or None when it is absent, falsy or shorter than 2 characters."""
    if value is None or isinstance(value, (dict, list)):
        return None
    text = str(value)
    return text if len(text) >= 2 else None


def job_filter(data: Any) -> JobFilter:
    filters = JobFilter(
        agreement_id=normalised_id(data.get("agreementId")),
        job_id=normalised_id(data.get("jobId")),
        owner=normalised_id(data.get("owner")),
    )
    if filters.is_empty():
        raise ApiError("You have to specify one of agreementId, jobId or owner", 400)
    return filters


def text_field(data: dict, key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ApiError(f'"{key}" must be a non-empty string', 400)
    return value
