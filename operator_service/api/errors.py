"""JSON answers: `{"error": "<text>"}` with the original's headers, for every failure.

The one place where failures become status codes: the HTTP layer's own refusals
(ApiError), the domain's (STATUS_OF_DOMAIN_ERROR: client mistakes are 4xx with the
original texts, a failing result storage 502/504), a failing dependency 503 naming it;
anything else is a bug, logged with its traceback and answered 500.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from operator_service.cluster.client import KubernetesUnavailable
from operator_service.domain.errors import (
    DomainError,
    Gone,
    InvalidRequest,
    NotAuthorized,
    NotFound,
    RangeNotSatisfiable,
    Refused,
    StorageFailed,
    StorageTimedOut,
)
from operator_service.metrics.service import DEPENDENCY_FAILURES
from operator_service.store.pool import DatabaseUnavailable

log = logging.getLogger(__name__)

STATUS_OF_DOMAIN_ERROR: dict[type[DomainError], int] = {
    InvalidRequest: 400,
    NotAuthorized: 401,
    Refused: 403,
    NotFound: 404,
    Gone: 410,
    StorageFailed: 502,
    StorageTimedOut: 504,
    RangeNotSatisfiable: 416,
}

STANDARD_HEADERS = {"Connection": "close"}


class ApiError(Exception):
    """A request the service refuses, with the text and status code to answer."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def json_response(payload: Any, status: int = 200) -> Response:
    """A body made by json.dumps, sent with `Content-type: application/json` and `Connection: close`."""
    return Response(json.dumps(payload), status=status, mimetype="application/json", headers=STANDARD_HEADERS)


def error_response(message: str, status: int) -> Response:
    return json_response({"error": message}, status)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.message, exc.status)

    @app.errorhandler(DomainError)
    def _domain_error(exc: DomainError) -> Response:
        response = error_response(exc.message, STATUS_OF_DOMAIN_ERROR[type(exc)])
        if isinstance(exc, RangeNotSatisfiable):
            response.headers["Content-Range"] = f"bytes */{exc.size}"
        return response

    @app.errorhandler(DatabaseUnavailable)
    def _database_down(exc: DatabaseUnavailable) -> Response:
        log.error("database unavailable on %s %s: %s", request.method, request.path, exc)
        DEPENDENCY_FAILURES.labels("database").inc()
        return error_response(f"Database unavailable: {exc}", 503)

    @app.errorhandler(KubernetesUnavailable)
    def _cluster_down(exc: KubernetesUnavailable) -> Response:
        log.error("kubernetes unavailable on %s %s: %s", request.method, request.path, exc)
        DEPENDENCY_FAILURES.labels("kubernetes").inc()
        return error_response(str(exc), 503)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.description or exc.name, exc.code or 500)

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(f"Internal error in operator-service: {exc.__class__.__name__}", 500)
