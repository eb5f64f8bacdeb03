"""Logging from LOG_LEVEL and LOG_FORMAT, or a LOG_CFG file (YAML or JSON dictConfig), for the
service, the launcher and the engine.

LOG_FORMAT=json writes one JSON object per line (time, level, logger, message, the context
fields, the fields the call passed and the traceback), for a log shipper; text (the default)
writes plain lines. The context (`log_context`: a request's id, a job's id) is per thread, so
every line logged while a request is served, or while a job runs, carries it.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from types import MappingProxyType

import yaml

from operator_service.env_vars import ConfigError, env_choice

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
LOG_FORMATS = ("text", "json")
# Fields a logging call passes with extra={FIELDS: {...}}, shown by the JSON format as keys of their own.
FIELDS = "fields"

_context: ContextVar[Mapping[str, str]] = ContextVar("operator_log_context", default=MappingProxyType({}))


@dataclass(frozen=True)
class LoggingSettings:
    level: str | None = None
    config_file: str | None = None
    format: str = "text"


def load_logging_settings(env: Mapping[str, str] | None = None) -> LoggingSettings:
    env = os.environ if env is None else env
    raw = env.get("LOG_LEVEL")
    level = raw.strip().upper() if raw else None
    if level is not None and level not in LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got {raw!r}")
    path = env.get("LOG_CFG") or None
    if path and not os.path.isfile(path):
        raise ConfigError(f"LOG_CFG names a file that does not exist: {path}")
    return LoggingSettings(level, path, env_choice(env, "LOG_FORMAT", LOG_FORMATS, "text"))


def setup_logging(settings: LoggingSettings) -> None:
    if settings.config_file:
        with open(settings.config_file) as handle:
            logging.config.dictConfig(yaml.safe_load(handle))
        return
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a process whose logging is set up keeps it
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(settings.level or "INFO")
    elif settings.level:
        root.setLevel(settings.level)


def current_context() -> Mapping[str, str]:
    """The fields every line logged now carries (request_id, job_id, ...)."""
    return _context.get()


def enter_context(**fields: str) -> Token:
    """Add `fields` to every line this thread logs, until leave_context(the token returned)."""
    return _context.set({**_context.get(), **fields})


def leave_context(token: Token) -> None:
    _context.reset(token)


@contextmanager
def log_context(**fields: str) -> Iterator[None]:
    """Add `fields` to every line logged by this thread until the block ends."""
    token = enter_context(**fields)
    try:
        yield
    finally:
        leave_context(token)


class TextFormatter(logging.Formatter):
    """FORMAT, then the context's fields in brackets when there are any."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context.get()
        if not context:
            return line
        head, newline, rest = line.partition("\n")
        fields = " ".join(f"{key}={value}" for key, value in context.items())
        return f"{head} [{fields}]{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the context's
    fields, the call's own fields, and `exception` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context.get(),
            **getattr(record, FIELDS, {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str)
