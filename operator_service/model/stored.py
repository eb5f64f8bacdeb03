"""JSON read back from the database: written by an engine or by an earlier version, so never trusted.

It must parse, and nest no deeper than MAX_DEPTH arrays and objects: the answers that would
carry a deeper value could not be serialised (and a recursion limit is not an error to meet
inside a request).
"""

from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)

MAX_DEPTH = 64


def deeper_than(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests more than `limit` levels of arrays and objects."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def loads(text: str) -> Any:
    """The value stored as JSON text; ValueError if it is not JSON or nests too deep."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None
    if deeper_than(value, MAX_DEPTH):
        raise ValueError("nested too deep")
    return value


def outputs(outputs_url: str | None) -> list | None:
    """The outputsURL array pod-publishing wrote (`{filename, filesize, url, type}` per file), or
    None when there is none or it is unreadable."""
    if not outputs_url or len(outputs_url) <= 2:
        return None
    try:
        value = loads(outputs_url)
    except ValueError:
        log.warning("ignoring an outputsURL that is not JSON")
        return None
    return value if isinstance(value, list) else None
