"""gunicorn's own lines (its start, its workers, signals, a worker's crash) as JSON lines, when
LOG_FORMAT=json: `operator-service run` and `serve` then start gunicorn with this logger class,
so that every line the server writes is one JSON object."""

from __future__ import annotations

import logging

from gunicorn import glogging

from operator_service.logging_setup import JsonFormatter


class JsonLinesLogger(glogging.Logger):
    """gunicorn's logger with the service's JSON format in place of its text one."""

    def _set_handler(self, log: logging.Logger, output: str | None, fmt: logging.Formatter, stream=None) -> None:
        super()._set_handler(log, output, JsonFormatter(), stream)
