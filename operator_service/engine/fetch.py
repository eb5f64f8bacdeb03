"""Bounded downloads of inputs and algorithms (what pod-configuration does, with limits).

Only http and https URLs are fetched. A download fails when it is larger than
ENGINE_MAX_INPUT_BYTES, takes longer than ENGINE_FETCH_TIMEOUT in total (a server that
stays silent that long fails too), or the engine is stopping; the partial file is removed.
The target is created exclusively in a folder only the engine writes to.

Query strings of the URLs fetched are never logged: they often carry credentials (a signed
download's signature, a pre-signed storage URL). That holds for urllib3's own DEBUG lines too,
which name each request with its query: the engine logs their path only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from operator_service.metrics.engine import FETCHED_BYTES

CHUNK_BYTES = 64 * 1024
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0
ERROR_BODY_BYTES = 4096


class _PathsOnly(logging.Filter):
    """Cuts the query string off every text argument of a log record (urllib3's request lines)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(arg.split("?", 1)[0] if isinstance(arg, str) else arg for arg in record.args)
        return True


logging.getLogger("urllib3.connectionpool").addFilter(_PathsOnly())


class FetchError(Exception):
    """A download that failed; the message says why, without the URL's query string."""


class HttpStatusError(FetchError):
    """The server answered something else than 200; `body` holds the start of its answer."""

    def __init__(self, message: str, status: int, body: bytes):
        super().__init__(message)
        self.status = status
        self.body = body


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    total_seconds: float


def describe(url: str) -> str:
    """scheme://host/path only: query strings of signed URLs often carry credentials."""
    parts = urlparse(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def timeouts(limits: FetchLimits) -> tuple[float, float]:
    """(connect, read) timeouts: a server silent for the whole time limit fails at once."""
    return min(CONNECT_TIMEOUT, limits.total_seconds), min(READ_TIMEOUT, limits.total_seconds)


def download(
    url: object,
    target: Path,
    limits: FetchLimits,
    stop: threading.Event,
    on_answer: Callable[[], None] | None = None,
) -> int:
    """Save `url` to `target`; return the number of bytes written or raise FetchError.

    `on_answer` is called once the server's answer (status and headers) has arrived.
    """
    if not isinstance(url, str) or urlparse(url).scheme.lower() not in ("http", "https"):
        raise FetchError(f"not an http(s) URL: {url!r:.200}")
    try:
        return _stream(url, target, limits, stop, on_answer)
    except requests.Timeout:
        target.unlink(missing_ok=True)
        raise FetchError(f"{describe(url)}: nothing received for {timeouts(limits)[1]:g} s") from None
    except requests.RequestException as exc:
        target.unlink(missing_ok=True)
        raise FetchError(f"{describe(url)}: {exc.__class__.__name__}") from None
    except FetchError:
        target.unlink(missing_ok=True)
        raise


def _stream(
    url: str, target: Path, limits: FetchLimits, stop: threading.Event, on_answer: Callable[[], None] | None
) -> int:
    deadline = time.monotonic() + limits.total_seconds
    with requests.get(url, stream=True, timeout=timeouts(limits)) as response:
        if on_answer is not None:
            on_answer()
        if response.status_code != 200:
            message = f"{describe(url)}: HTTP {response.status_code}"
            raise HttpStatusError(message, response.status_code, _start_of(response))
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limits.max_bytes:
            raise FetchError(f"{describe(url)}: {declared} bytes, more than the limit of {limits.max_bytes}")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
                written += len(chunk)
                if written > limits.max_bytes:
                    raise FetchError(f"{describe(url)}: more than the limit of {limits.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError(f"{describe(url)}: not complete after {limits.total_seconds:g} s")
                if stop.is_set():
                    raise FetchError(f"{describe(url)}: the engine is stopping")
                out.write(chunk)
                FETCHED_BYTES.inc(len(chunk))
        return written


def _start_of(response: requests.Response) -> bytes:
    """The first bytes of an error answer (empty if they cannot be read)."""
    try:
        return next(response.iter_content(chunk_size=ERROR_BODY_BYTES), b"")[:ERROR_BODY_BYTES]
    except requests.RequestException:
        return b""
