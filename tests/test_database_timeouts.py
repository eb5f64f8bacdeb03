"""A database that stops answering (SIGSTOP of the postmaster and its backends: alive to the
kernel, so connections stay open, but nothing comes back) costs a request seconds, then a
503, on a pooled connection and on a fresh one; once it runs again, so does the service."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from operator_service.config import Settings, load_settings
from operator_service.tools.embedded_db import EmbeddedPostgres

RUNNING = "/api/v1/operator/runningjobs"
# Far above what a request may cost (POSTGRES_TIMEOUT=2: about 3 s), far below "for ever".
PATIENCE_SECONDS = 30.0


@pytest.fixture
def stoppable(own_server) -> tuple[EmbeddedPostgres, Settings]:
    """The test's own server, and settings pointing at it with POSTGRES_TIMEOUT=2."""
    server, env = own_server
    return server, load_settings({**env, "POSTGRES_TIMEOUT": "2"})


def _server_processes(postmaster: int) -> list[int]:
    """The postmaster and every process it started (its backends among them)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == postmaster:
                children.append(int(entry.name))
    return [postmaster, *children]


def _answer_within(call: Callable[[], object], seconds: float) -> object | None:
    """What `call` returned, or None if it was still waiting after `seconds`."""
    result: list[object] = []
    thread = threading.Thread(target=lambda: result.append(call()), daemon=True)
    thread.start()
    thread.join(seconds)
    return result[0] if result else None


def test_a_stopped_database_costs_a_request_seconds_then_a_503(stoppable, make_app):
    server, settings = stoppable
    app = make_app(settings)
    assert app.test_client().get(RUNNING).status_code == 200  # the pool now holds an open connection
    frozen = _server_processes(server.pid)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        pooled = _answer_within(lambda: app.test_client().get(RUNNING), PATIENCE_SECONDS)
        assert pooled is not None, f"a request on a pooled connection still waited after {PATIENCE_SECONDS:g} s"
        assert pooled.status_code == 503
        assert "no answer from the database within" in pooled.get_json()["error"]

        fresh = _answer_within(lambda: app.test_client().get(RUNNING), PATIENCE_SECONDS)
        assert fresh is not None, f"a request on a fresh connection still waited after {PATIENCE_SECONDS:g} s"
        assert fresh.status_code == 503
        assert fresh.get_json()["error"].startswith("Database unavailable")
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    deadline = time.monotonic() + PATIENCE_SECONDS
    while app.test_client().get(RUNNING).status_code != 200:
        assert time.monotonic() < deadline, "the service did not recover once the database ran again"
        time.sleep(0.2)
