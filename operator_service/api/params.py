"""Where a request's parameters come from, the checks every parameter passes, and the original's checks on them.

Every parameter that reaches the database, a header or the cluster is checked here
first, so that bad input is a 400 naming the problem instead of a driver's error (a 500):
text longer than its column (TEXT_LIMITS), NUL characters (Postgres text cannot hold
them), lone UTF-16 surrogates (not Unicode: they cannot be encoded), and JSON nested
deeper than MAX_DEPTH levels.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from flask import request

from operator_service.api.errors import ApiError
from operator_service.model.stored import deeper_than
from operator_service.model.times import parse_moment
from operator_service.store.jobs import MAX_LISTED, JobFilter, JobQuery

# The most characters each parameter may have. The job table's ids are varchar(255); the
# others leave room for any valid value (a signature is 132 characters, a nonce at most 81).
TEXT_LIMITS = {
    "agreementId": 255,
    "owner": 255,
    "jobId": 255,
    "environment": 255,
    "providerSignature": 1024,
    "nonce": 100,
    "chainId": 100,
    "index": 100,
    "component": 100,
    "status": 100,
    "since": 100,
    "limit": 100,
    "offset": 100,
}
# The pages of an operator's job listing.
DEFAULT_LIMIT = 100
MAX_OFFSET = 10**9
# Levels of JSON nesting a body may have (a Provider's POST /compute body has 6).
MAX_DEPTH = 32
# In a UTF-8 JSON body a lone surrogate can only arrive as a \u escape (D800-DFFF).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def request_data() -> Any:
    """The query string if it has any parameter, else the JSON body (None when there is none).

    Like the original, the body is read whatever the Content-Type says; a body that is not
    JSON is a 400 instead of the framework's 415 page.
    """
    args = request.args
    if args:
        query = request.query_string
        return _checked(args.to_dict(), b"%00" in query or b"\x00" in query, surrogates=False)
    raw = request.get_data(cache=True)
    if not raw or not raw.strip():
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError("Request body is not valid JSON", 400) from None
    except RecursionError:
        raise _too_deep() from None
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and deeper_than(data, MAX_DEPTH):
        raise _too_deep()
    wide = b"\x00" in raw  # UTF-16 or UTF-32: its escapes are not ASCII runs
    return _checked(data, wide or b"\\u0000" in raw, surrogates=wide or _SURROGATE_ESCAPE.search(raw) is not None)


def _too_deep() -> ApiError:
    return ApiError(f"Request body is nested more than {MAX_DEPTH} levels deep", 400)


def _checked(data: Any, may_hold_nul: bool, surrogates: bool) -> Any:
    """The parameters, once no text in them holds a NUL or a lone surrogate and each known
    parameter fits its limit.

    In UTF-8 JSON a NUL or a lone surrogate can only arrive as a \\u escape (JSON refuses raw
    control characters; a UTF-16 or UTF-32 body holds zero bytes anyway, and is searched
    whole), in a query string a NUL as %00 or raw (a query string is decoded as UTF-8 with
    replacement, so it holds no surrogate): the texts are searched only when the raw
    request may hold one.
    """
    if may_hold_nul and _any_text(data, lambda text: "\x00" in text):
        raise ApiError("Request parameters must not contain NUL characters", 400)
    if surrogates and _any_text(data, lambda text: _SURROGATE.search(text) is not None):
        raise ApiError("Request parameters must be valid Unicode: a lone UTF-16 surrogate is not a character", 400)
    if isinstance(data, dict):
        _check_lengths(data)
    return data


def _any_text(value: Any, bad) -> bool:
    """Whether `bad` holds for any text (key or value) in a parsed JSON value."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if bad(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _check_lengths(data: dict) -> None:
    for key, limit in TEXT_LIMITS.items():
        value = data.get(key)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(str(value)) > limit:
            raise ApiError(f'"{key}" must be at most {limit} characters long', 400)


def check_required(keys: Sequence[str], data: Any, call: str) -> dict:
    """The original's required-attribute check: a present key passes even when null."""
    if not data or not isinstance(data, dict):
        raise ApiError("payload seems empty.", 400)
    for key in keys:
        if key not in data:
            raise ApiError(f'"{key}" is required in the call to {call}', 400)
    return data


def normalised_id(value: Any) -> str | None:
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


def job_query(data: Any) -> JobQuery:
    """The filters and page of the admin listing (GET /jobs): owner, status, environment, since,
    limit, offset, each optional."""
    data = data if isinstance(data, dict) else {}
    since = data.get("since")
    try:
        moment = None if since in (None, "") else parse_moment(str(since))
    except ValueError as exc:
        raise ApiError(f'"since" {exc}', 400) from None
    return JobQuery(
        owner=_optional_text(data, "owner"),
        status=_integer(data, "status", None, -(2**31), 2**31 - 1),
        environment=_optional_text(data, "environment"),
        since=moment,
        limit=_integer(data, "limit", DEFAULT_LIMIT, 1, MAX_LISTED) or DEFAULT_LIMIT,
        offset=_integer(data, "offset", 0, 0, MAX_OFFSET) or 0,
    )


def _optional_text(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ApiError(f'"{key}" must be a string', 400)
    return value


def _integer(data: dict, key: str, default: int | None, lowest: int, highest: int) -> int | None:
    value = data.get(key)
    if value in (None, ""):
        return default
    try:
        number = int(value) if not isinstance(value, (bool, float)) else None
    except (TypeError, ValueError):
        number = None
    if number is None or not lowest <= number <= highest:
        raise ApiError(f'"{key}" must be a whole number from {lowest} to {highest}', 400)
    return number
