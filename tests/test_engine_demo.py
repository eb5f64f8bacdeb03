"""`operator-service demo` against a real HTTP service and a local engine."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from operator_service.tools import demo
from operator_service.tools.embedded_db import free_port


@pytest.fixture
def service_url(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_demo_runs_a_job_and_downloads_its_result(service_url, start_engine, tmp_path, monkeypatch):
    start_engine()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "result.txt").write_text("an earlier file")
    out = io.StringIO()

    target = demo.run(service_url, None, timeout=60, out=out)

    assert target == tmp_path / "result-1.txt", "an existing file is never overwritten"
    assert target.read_text().endswith(f"total: {demo.SAMPLE_LINES} lines\n")
    shown = out.getvalue()
    assert "40 Running algorithm" in shown and "70 Job finished" in shown
    assert "\r" not in shown, "no spinner when the output is not a terminal"


def test_the_demo_fails_clearly_when_the_service_is_down(capsys):
    assert demo.main(["--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5"]) == 1
    assert "cannot reach the service" in capsys.readouterr().err
