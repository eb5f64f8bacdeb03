"""Streaming one result file to the Provider (original-api.md §8).

Results live wherever the engine published them: an http(s) URL (IPFS, S3) or, for the
local engine, a file:// URL inside RESULTS_DIR. Anything else is refused, so a job row
cannot be used to read arbitrary files of this machine.
"""
from __future__ import annotations

import mimetypes
import os
import re
from pathlib import Path
from typing import Iterator, Optional
from urllib.parse import quote, unquote, urlparse

import requests
from flask import Response

from operator_service.config import Settings
from operator_service.errors import ApiError

CHUNK_BYTES = 4096
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# What may stand in the plain filename= of Content-Disposition: printable ASCII but the
# characters that would end or escape the value.
_UNSAFE_IN_FILENAME = re.compile(r'[^\x20-\x7e]|["\\;,]')


def stream_result(url: str, settings: Settings, range_header: Optional[str]) -> Response:
    _check_stored_url(url)
    scheme = urlparse(url).scheme.lower()
    if scheme in ("http", "https"):
        return _stream_http(url, settings, range_header)
    if scheme == "file":
        return _stream_file(url, settings)
    raise ApiError(f"Error getResult: unsupported result URL scheme {scheme or 'none'!r}", 400)


def _check_stored_url(url: str) -> None:
    """A URL read back from the database, as an engine wrote it: one that cannot be a request
    line or a path (control characters, a NUL in a file path, a malformed host) is refused."""
    try:
        parsed = urlparse(url)
    except ValueError:
        raise ApiError("Error getResult: the stored result URL is malformed", 400) from None
    if _CONTROL.search(url) or (parsed.scheme.lower() == "file" and "\x00" in unquote(parsed.path)):
        raise ApiError("Error getResult: the stored result URL holds control characters", 400)


def _content_disposition(filename: str) -> str:
    """`attachment;filename=<name>` as the original sent it, with a name that is safe in a header.

    The name comes from storage (the URL, or the storage's own Content-Disposition): control
    characters (CR, LF) would split the header, quotes and semicolons would end the value.
    They become "_"; a name that is not plain ASCII also goes whole in filename* (RFC 6266).
    """
    plain = _UNSAFE_IN_FILENAME.sub("_", filename) or "result"
    if plain == filename or _CONTROL.search(filename):
        return f"attachment;filename={plain}"
    return f"attachment;filename={plain};filename*=UTF-8''{quote(filename, safe='')}"


def _upstream_headers(settings: Settings, range_header: Optional[str]) -> dict[str, str]:
    headers = {}
    if range_header:
        headers["Range"] = range_header
    if settings.result_api_key:
        headers["X-API-KEY"] = settings.result_api_key
    if settings.result_client_id:
        headers["CLIENT-ID"] = settings.result_client_id
    return headers


def _stream_http(url: str, settings: Settings, range_header: Optional[str]) -> Response:
    try:
        upstream = requests.get(
            url,
            headers=_upstream_headers(settings, range_header),
            stream=True,
            timeout=settings.result_timeout_seconds,
        )
    except requests.Timeout:
        raise ApiError("Result storage did not answer in time", 504) from None
    except requests.RequestException as exc:
        raise ApiError(f"Result storage unreachable: {exc.__class__.__name__}", 502) from None

    def body() -> Iterator[bytes]:
        try:
            for chunk in upstream.iter_content(chunk_size=CHUNK_BYTES):
                if chunk:
                    yield chunk
        finally:
            upstream.close()

    if range_header:
        return Response(body(), status=upstream.status_code, headers={"Range": range_header})
    filename = _filename(url, upstream.headers.get("Content-Disposition"))
    content_type = upstream.headers.get("Content-Type")
    return _download(body(), upstream.status_code, filename, content_type)


def _stream_file(url: str, settings: Settings) -> Response:
    if not settings.results_dir:
        raise ApiError("Error getResult: local result files are not served (RESULTS_DIR is not set)", 400)
    root = Path(settings.results_dir).resolve()
    path = Path(unquote(urlparse(url).path)).resolve()
    if root not in path.parents or not path.is_file():
        raise ApiError("Error getResult: the result file is not inside the results folder", 400)

    def body() -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk

    response = _download(body(), 200, path.name, None)
    response.headers["Content-Length"] = str(os.path.getsize(path))
    return response


def _filename(url: str, disposition: Optional[str]) -> str:
    name = urlparse(url).path.rsplit("/", 1)[-1] or "result"
    if disposition and "filename=" in disposition:
        name = disposition.split("filename=", 1)[1].split(";")[0].strip().strip('"') or name
    return name


def _download(body: Iterator[bytes], status: int, filename: str, content_type: Optional[str]) -> Response:
    has_extension = "." in filename
    if has_extension and not content_type:
        content_type = mimetypes.guess_type(filename)[0]
    elif not has_extension and content_type:
        filename += mimetypes.guess_extension(content_type.split(";")[0].strip()) or ""
    return Response(
        body,
        status=status,
        content_type=content_type or "application/octet-stream",
        headers={
            "Content-Disposition": _content_disposition(filename),
            "Access-Control-Expose-Headers": "Content-Disposition",
        },
    )
