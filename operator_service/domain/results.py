"""Opening one result file of a job for streaming (the HTTP layer turns it into the answer).

Results live wherever the engine published them: an http(s) URL (IPFS, S3) or, for the
local engine, a file:// URL inside RESULTS_DIR. A job's outputsURL is data an engine wrote
to the database, never an instruction to this service, so:

- an http(s) URL is fetched only if it starts with one of RESULT_URL_PREFIXES (none by
  default: the local engine publishes file:// URLs), and a redirect is followed only to
  another such URL;
- a file:// URL is served only from inside RESULTS_DIR, opened one folder at a time from
  RESULTS_DIR without following any symbolic link: the file that is checked is the file
  that is served, whatever is planted in the folders meanwhile;
- anything else is refused (403), and the operator is told the scheme and host in the log.

A Range header is passed on to http(s) storage, which answers it. For a file:// result this
service answers it: one byte range (`bytes=first-last`, `first-`, or the last N bytes `-N`)
gives 206 with that part and its Content-Range; a range that starts past the end of the
file (or asks for the last 0 bytes, or any bytes of an empty file) is unsatisfiable (416);
a header asking for several ranges, another unit, or malformed, is ignored and the whole
file is sent, as HTTP allows.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

import requests

from operator_service.config import Settings
from operator_service.domain.errors import NotFound, RangeNotSatisfiable, Refused, StorageFailed, StorageTimedOut

log = logging.getLogger(__name__)

CHUNK_BYTES = 4096
MAX_REDIRECTS = 5
DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BYTE_RANGE = re.compile(r"^\s*bytes\s*=\s*([0-9]*)\s*-\s*([0-9]*)\s*$", re.IGNORECASE)


@dataclass
class ResultFile:
    """A result opened for streaming: its bytes, the storage's status code (200, or what the
    storage answered: 206 to a Range, 404, ...), and what names and sizes it."""

    body: Iterator[bytes]
    status: int
    filename: str
    content_type: str | None = None
    length: int | None = None
    range_header: str | None = None  # the Range it answers, passed through to the storage
    content_range: str | None = None  # for a part of a local file (206): "bytes first-last/size"
    accepts_ranges: bool = False  # a local file: this service answers Range itself


@dataclass(frozen=True)
class ByteRange:
    first: int
    last: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.last - self.first + 1


def requested_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range `header` asks of a file of `size` bytes, within the file; None for the
    whole file (no header, or one this service does not answer: several ranges, another unit,
    malformed); RangeNotSatisfiable when it asks for no byte the file has."""
    match = _BYTE_RANGE.match(header or "")
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.groups()
    if first == "":
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise _unsatisfiable(header, size)
        return ByteRange(max(size - suffix, 0), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= size:
        raise _unsatisfiable(header, size)
    return ByteRange(start, min(int(last), size - 1) if last else size - 1)


def _unsatisfiable(header: str | None, size: int) -> RangeNotSatisfiable:
    return RangeNotSatisfiable(
        f"Error getResult: Range {header!r:.100} asks for no byte of the result, which has {size} bytes", size
    )


def open_result(url: str, settings: Settings, range_header: str | None) -> ResultFile:
    _check_stored_url(url)
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("http", "https"):
        return _open_http(url, settings, range_header)
    if scheme == "file":
        return _open_file(url, settings, range_header)
    raise _refused(f"unsupported result URL scheme {scheme or 'none'!r}")


def _refused(reason: str) -> Refused:
    return Refused(f"Error getResult: {reason}")


def _check_stored_url(url: str) -> None:
    """A URL read back from the database, as an engine wrote it: one that cannot be a request
    line or a path (control characters, a NUL in a file path, a malformed host) is refused."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _refused("the stored result URL is malformed") from None
    if _CONTROL.search(url) or (parts.scheme.lower() == "file" and "\x00" in unquote(parts.path)):
        raise _refused("the stored result URL holds control characters")


def url_allowed(url: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `url` lies under one of the operator's http(s) prefixes (same scheme, host and
    port, and the prefix's path as a whole segment), with no credentials and no "..".
    """
    parts = urlsplit(url)
    try:
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return False
    if parts.username or parts.password or ".." in unquote(parts.path).split("/"):
        return False
    for prefix in prefixes:
        allowed = urlsplit(prefix)
        same_server = (parts.scheme.lower(), parts.hostname, port) == (
            allowed.scheme.lower(),
            allowed.hostname,
            allowed.port or DEFAULT_PORTS[allowed.scheme.lower()],
        )
        if same_server and _under(parts.path or "/", allowed.path or "/"):
            return True
    return False


def _under(path: str, prefix: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(prefix + "/")


def _upstream_headers(settings: Settings, range_header: str | None) -> dict[str, str]:
    headers = {}
    if range_header:
        headers["Range"] = range_header
    if settings.result_api_key:
        headers["X-API-KEY"] = settings.result_api_key
    if settings.result_client_id:
        headers["CLIENT-ID"] = settings.result_client_id
    return headers


def _fetch(url: str, settings: Settings, range_header: str | None) -> requests.Response:
    """GET the result, following redirects only within RESULT_URL_PREFIXES."""
    for _ in range(MAX_REDIRECTS + 1):
        if not url_allowed(url, settings.result_url_prefixes):
            parts = urlsplit(url)
            log.warning(
                "getResult refused a result at %s://%s: not under RESULT_URL_PREFIXES", parts.scheme, parts.hostname
            )
            raise _refused(
                "the result is stored where this service is not configured to fetch from (RESULT_URL_PREFIXES)"
            )
        try:
            upstream = requests.get(
                url,
                headers=_upstream_headers(settings, range_header),
                stream=True,
                timeout=settings.result_timeout_seconds,
                allow_redirects=False,
            )
        except requests.Timeout:
            raise StorageTimedOut("Result storage did not answer in time") from None
        except requests.RequestException as exc:
            raise StorageFailed(f"Result storage unreachable: {exc.__class__.__name__}") from None
        if not upstream.is_redirect:
            return upstream
        url = urljoin(url, upstream.headers["Location"])
        upstream.close()
    raise StorageFailed(f"Result storage redirected more than {MAX_REDIRECTS} times")


def _open_http(url: str, settings: Settings, range_header: str | None) -> ResultFile:
    upstream = _fetch(url, settings, range_header)

    def body() -> Iterator[bytes]:
        try:
            for chunk in upstream.iter_content(chunk_size=CHUNK_BYTES):
                if chunk:
                    yield chunk
        finally:
            upstream.close()

    return ResultFile(
        body(),
        upstream.status_code,
        _filename(url, upstream.headers.get("Content-Disposition")),
        upstream.headers.get("Content-Type"),
        range_header=range_header,
    )


def _open_file(url: str, settings: Settings, range_header: str | None) -> ResultFile:
    if not settings.results_dir:
        raise _refused("local result files are not served (RESULTS_DIR is not set)")
    root = Path(settings.results_dir).resolve()
    relative = _inside(root, PurePosixPath(unquote(urlsplit(url).path)))
    fd = _open_beneath(root, relative)
    size = os.fstat(fd).st_size
    try:
        part = requested_range(range_header, size)
    except RangeNotSatisfiable:
        os.close(fd)
        raise
    handle = os.fdopen(fd, "rb")
    if part is None:
        return ResultFile(_read(handle, size), 200, relative.name, length=size, accepts_ranges=True)
    handle.seek(part.first)
    return ResultFile(
        _read(handle, part.length),
        206,
        relative.name,
        length=part.length,
        content_range=f"bytes {part.first}-{part.last}/{size}",
        accepts_ranges=True,
    )


def _read(handle: BinaryIO, count: int) -> Iterator[bytes]:
    """At most `count` bytes of `handle` from where it stands, in chunks; closes it at the end."""
    with handle:
        while count > 0 and (chunk := handle.read(min(CHUNK_BYTES, count))):
            count -= len(chunk)
            yield chunk


def _inside(root: Path, path: PurePosixPath) -> PurePosixPath:
    """`path` relative to `root`, taken as written (no "..", nothing resolved)."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        raise _refused("the result file is not inside the results folder") from None
    if not relative.parts or ".." in relative.parts:
        raise _refused("the result file is not inside the results folder")
    return relative


def _open_beneath(root: Path, relative: PurePosixPath) -> int:
    """A read descriptor for the regular file at `relative` under `root`, reached without
    following a symbolic link in any of its folders or in its name."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for folder in relative.parts[:-1]:
            inner = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        found = os.open(relative.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise NotFound("Error getResult: the result file does not exist") from None
        raise _refused("the result file is not a regular file inside the results folder") from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(found).st_mode):
        os.close(found)
        raise _refused("the result file is not a regular file inside the results folder")
    return found


def _filename(url: str, disposition: str | None) -> str:
    name = urlsplit(url).path.rsplit("/", 1)[-1] or "result"
    if disposition and "filename=" in disposition:
        name = disposition.split("filename=", 1)[1].split(";")[0].strip().strip('"') or name
    return name
