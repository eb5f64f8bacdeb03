"""What every request leaves for the operator: its id, its access log line and its metrics.

The id is the client's `X-Request-Id` when that is a sane token (REQUEST_ID_PATTERN), else a
new one; it is answered in the same header, carried by every line logged while the request
is served (logging_setup.log_context), and stored with a job the request creates, so the
engine's lines for that job carry it too. The access log line (logger
`operator_service.access`) names the method, the path without its query string (where the
Provider's signature, nonce and any other parameter travel), the status, the duration in
ms and the id; never a parameter, a header or a body.
"""

from __future__ import annotations

import logging
import os
import re
import time

from flask import Flask, Response, g, request

from operator_service.logging_setup import FIELDS, enter_context, leave_context
from operator_service.metrics.service import observe_request

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")  # a decoded path may hold them (%0A): never a line of its own
access_log = logging.getLogger("operator_service.access")


def install(app: Flask, metrics: bool, access_log_lines: bool) -> None:
    """Give every request of `app` an id, and count it and log it as asked."""
    app.before_request(_begin)
    app.after_request(_answered(metrics, access_log_lines))
    app.teardown_request(_end)


def request_id() -> str:
    """The id of the request being served."""
    return g.request_id


def _begin() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else os.urandom(16).hex()
    g.started = time.perf_counter()
    g.log_token = enter_context(request_id=g.request_id)


def _answered(metrics: bool, access_log_lines: bool):
    def answered(response: Response) -> Response:
        if "request_id" not in g:  # another before_request refused the request before ours ran
            _begin()
        response.headers[REQUEST_ID_HEADER] = g.request_id
        seconds = time.perf_counter() - g.started
        if metrics:
            rule = request.url_rule
            observe_request(rule.rule if rule is not None else None, request.method, response.status_code, seconds)
        if access_log_lines:
            _log_access(response.status_code, seconds)
        return response

    return answered


def _log_access(status: int, seconds: float) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    milliseconds = round(seconds * 1000, 1)
    path = CONTROL_CHARACTERS.sub("?", request.path)
    method = CONTROL_CHARACTERS.sub("?", request.method)
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "duration_ms": milliseconds,
        "request_id": g.request_id,
    }
    # The record is made here rather than by access_log.info(), which would also look up the
    # calling frame (a record's filename and line, the same for every access line) on every request.
    message = f"{method} {path} {status} {milliseconds:.1f} ms"
    extra = {FIELDS: fields}
    record = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, message, (), None, extra=extra)
    access_log.handle(record)


def _end(_: BaseException | None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        leave_context(token)
