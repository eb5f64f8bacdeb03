"""What every request leaves for the operator: its id, its access log line and its metrics.

The id is the client's `X-Request-Id` when that is a sane token (REQUEST_ID_PATTERN), else a
new one; it is answered in the same header, carried by every line logged while the request
is served (logging_setup.log_context), and stored with a job the request creates, so the
engine's lines for that job carry it too. The access log line (logger
`operator_service.access`) names the method, the path without its query string (where the
Provider's signature, nonce and any other parameter travel), the status, the duration in
ms and the id; never a parameter, a header or a body.

A request's line and metrics are not made while it is answered: it only notes what they need
in the worker's RequestJournal, which makes them in batches (why: RequestJournal).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
import weakref
from collections import deque
from typing import NamedTuple

from flask import Flask, Response, g, request

from operator_service.logging_setup import FIELDS, enter_context, leave_context, log_context
from operator_service.metrics.service import observe_request

REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")  # a decoded path may hold them (%0A): never a line of its own
JOURNAL_SECONDS = 0.2  # how long a request's line and metrics may wait to be made
access_log = logging.getLogger("operator_service.access")


class Answered(NamedTuple):
    """What a request's access line and metrics need, noted as it is answered."""

    at: float  # time.time() of the answer
    route: str | None  # the URL rule that served it; None for a path no route serves
    method: str
    path: str
    status: int
    seconds: float
    request_id: str


class RequestJournal:
    """Makes the access lines and metrics of the requests a worker answers, in batches, from a
    thread of its own, at most JOURNAL_SECONDS after each answer.

    Why: made while each request is answered, a line and its metrics took 55-75 µs of the
    thread's CPU in the server under load (time.thread_time() around them), against 15 µs
    in a loop: made once per request, their code and data are never in the CPU's caches.
    Noting what they need takes the request's thread about 7 µs, and the journal's thread
    makes them in about 23 µs a request, a batch at a time.

    The cost: a line and a count show up to JOURNAL_SECONDS late (GET /metrics first makes
    those of its own worker, so one worker's counts are never late there), and a worker
    killed with SIGKILL loses those of its last JOURNAL_SECONDS; an exit makes them first
    (atexit, before logging's own flush).
    """

    def __init__(self, metrics: bool, access_lines: bool, interval: float = JOURNAL_SECONDS):
        self.metrics = metrics
        self.access_lines = access_lines
        self.interval = interval
        self._pending: deque[Answered] = deque()  # append and popleft are atomic: no lock
        self._drain_lock = threading.Lock()  # one drain at a time keeps the lines in order
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        atexit.register(_drain, weakref.ref(self))  # an exit makes what is noted (before logging's flush)

    @property
    def enabled(self) -> bool:
        return self.metrics or self.access_lines

    def note(self, answered: Answered) -> None:
        self._pending.append(answered)
        if self._thread is None:
            self._start()

    def drain(self) -> None:
        """Make the lines and metrics of every request noted so far."""
        with self._drain_lock:
            while True:
                try:
                    answered = self._pending.popleft()
                except IndexError:
                    return
                if self.metrics:
                    observe_request(answered.route, answered.method, answered.status, answered.seconds)
                if self.access_lines:
                    _log_access(answered)

    def close(self) -> None:
        """Stop the thread and make what is left."""
        self._stopped.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join()
        self.drain()

    def _start(self) -> None:
        with self._start_lock:
            if self._thread is not None or self._stopped.is_set():
                return
            self._thread = threading.Thread(target=self._drain_every_interval, name="request-journal", daemon=True)
            self._thread.start()

    def _drain_every_interval(self) -> None:
        while not self._stopped.wait(self.interval):
            self.drain()


def _drain(reference: weakref.ref[RequestJournal]) -> None:
    journal = reference()
    if journal is not None:
        journal.drain()


def install(app: Flask, journal: RequestJournal) -> None:
    """Give every request of `app` an id, and note it in `journal` when that counts or logs."""
    app.before_request(_begin)
    app.after_request(_answered(journal))
    app.teardown_request(_end)


def request_id() -> str:
    """The id of the request being served."""
    return g.request_id


def _begin() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if REQUEST_ID_PATTERN.match(incoming) else os.urandom(16).hex()
    g.started = time.perf_counter()
    g.log_token = enter_context(request_id=g.request_id)


def _answered(journal: RequestJournal):
    def answered(response: Response) -> Response:
        if "request_id" not in g:  # another before_request refused the request before ours ran
            _begin()
        response.headers[REQUEST_ID_HEADER] = g.request_id
        if journal.enabled:
            rule = request.url_rule
            journal.note(
                Answered(
                    time.time(),
                    rule.rule if rule is not None else None,
                    request.method,
                    request.path,
                    response.status_code,
                    time.perf_counter() - g.started,
                    g.request_id,
                )
            )
        return response

    return answered


def _log_access(answered: Answered) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    milliseconds = round(answered.seconds * 1000, 1)
    path = CONTROL_CHARACTERS.sub("?", answered.path)
    method = CONTROL_CHARACTERS.sub("?", answered.method)
    fields = {
        "method": method,
        "path": path,
        "status": answered.status,
        "duration_ms": milliseconds,
        "request_id": answered.request_id,
    }
    # The record is made here rather than by access_log.info(), which would also look up the
    # calling frame (a record's filename and line, the same for every access line); it is
    # dated when the request was answered, not when the journal made its line.
    message = f"{method} {path} {answered.status} {milliseconds:.1f} ms"
    extra = {FIELDS: fields}
    record = access_log.makeRecord(access_log.name, logging.INFO, __file__, 0, message, (), None, extra=extra)
    record.created = answered.at
    record.msecs = int((answered.at - int(answered.at)) * 1000)
    with log_context(request_id=answered.request_id):
        access_log.handle(record)


def _end(_: BaseException | None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        leave_context(token)
