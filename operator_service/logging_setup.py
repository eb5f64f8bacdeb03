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
import threading
import time
import weakref
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
BATCH_SECONDS = 0.2  # how late a line of a BatchingStreamHandler may reach its stream
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


def setup_logging(settings: LoggingSettings, batched: bool = False) -> None:
    """Log to stderr as `settings` say; `batched` writes the lines below WARNING in batches
    (BatchingStreamHandler), as a server under load should."""
    if settings.config_file:
        with open(settings.config_file) as handle:
            logging.config.dictConfig(yaml.safe_load(handle))
        return
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a process whose logging is set up keeps it
        handler = BatchingStreamHandler() if batched else logging.StreamHandler()
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


class BatchingStreamHandler(logging.StreamHandler):
    """A StreamHandler that writes lines below WARNING together, at most BATCH_SECONDS after the
    first of them was logged, from a thread of its own; a WARNING or worse is written at once,
    after the lines before it, so an error is never late or out of order.

    Why: an HTTP worker logs an access line per request, hundreds a second. A StreamHandler
    writes each one to stderr, and each write lets the worker's other threads take the
    interpreter, so the logging thread waits to get it back, with its handler's lock held while
    it writes: threads queue and switch for every line. Here a line is formatted outside any
    lock and appended to a list, and one write goes out per batch. The cost: a line reaches
    stderr up to BATCH_SECONDS late, and a process killed with SIGKILL loses the lines of its
    last BATCH_SECONDS (an exit writes them: logging.shutdown flushes every handler)."""

    def __init__(self, stream=None, interval: float = BATCH_SECONDS):
        super().__init__(stream)
        self.interval = interval
        self._pending: list[str] = []
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._writer_started = False
        # gunicorn --preload makes the app, which logs, before it forks the workers: the lines
        # pending then are the parent's to write, and a child starts with none and no writer.
        this = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _start_afresh(this))

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return False
        with self._pending_lock:
            self._pending.append(line)
            first = len(self._pending) == 1
            if first and not self._writer_started:
                self._writer_started = True
                threading.Thread(target=self._write_batches, name="log-writer", daemon=True).start()
        if record.levelno >= logging.WARNING:
            self.flush()
        elif first:
            self._wake.set()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def flush(self) -> None:
        """Write every pending line, in one write."""
        with self.lock:  # type: ignore[union-attr]  # Handler.createLock made it
            with self._pending_lock:
                lines, self._pending = self._pending, []
            if lines and self.stream:
                try:
                    self.stream.write("".join(lines))
                    super().flush()
                except (OSError, ValueError):  # stderr closed or gone: the lines have nowhere to go
                    pass

    def _write_batches(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)
            self._wake.clear()  # before the flush: a line appended after it wakes the next round
            self.flush()


def _start_afresh(reference: weakref.ref[BatchingStreamHandler]) -> None:
    handler = reference()
    if handler is not None:
        handler._pending = []
        handler._pending_lock = threading.Lock()
        handler._wake = threading.Event()
        handler._writer_started = False


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

    _encoder = json.JSONEncoder(default=str)  # json.dumps(default=...) would make one per line

    def __init__(self) -> None:
        super().__init__()
        self._second: tuple[int, str] = (-1, "")  # the last second formatted, as every line of it starts

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": f"{self._utc_second(int(record.created))}.{int(record.msecs):03d}Z",
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
        return self._encoder.encode(entry)

    def _utc_second(self, second: int) -> str:
        cached = self._second
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
            self._second = cached
        return cached[1]
