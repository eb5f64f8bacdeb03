"""`operator-service demo` against a real HTTP service and a local engine."""

from __future__ import annotations

import io
import re
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server

from operator_service.tools import demo
from operator_service.tools.embedded_db import free_port
from tests.engine_support import job_row


@pytest.fixture
def service_url(app) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


def submitted_job(shown: str) -> str:
    match = re.search(r"submitted job (\S+):", shown)
    assert match, shown
    return match.group(1)


def test_the_demo_runs_a_provider_shaped_job_and_downloads_its_result(
    service_url, db, start_engine, tmp_path, monkeypatch
):
    start_engine()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "result.txt").write_text("an earlier file")
    out = io.StringIO()

    target = demo.run(service_url, None, timeout=60, out=out)

    assert target == tmp_path / "result-1.txt", "an existing file is never overwritten"
    assert (tmp_path / "result.txt").read_text() == "an earlier file"
    lines = target.read_text().splitlines()
    assert lines[0] == demo.ALGORITHM_OPTIONS["title"], "algocustomdata reached the algorithm"
    assert re.fullmatch(rf"{demo.DATASET_NAME} \(did:op:[0-9a-f]{{12}}\.\.\.\), file 0: 42 lines", lines[1])
    assert lines[-1] == f"total: {demo.SAMPLE_LINES} lines"
    shown = out.getvalue()
    assert "40 Running algorithm" in shown and "70 Job finished" in shown
    assert "the Provider served 2 signed download(s)" in shown
    assert "\r" not in shown, "no spinner when the output is not a terminal"
    stage = job_row(db, submitted_job(shown))["workflow"]["spec"]["metadata"]["stages"][0]
    (item,) = stage["input"]
    assert "url" not in item and set(item["remote"]) == {"txId", "serviceId"}, "the job is the Provider's shape"
    assert stage["algorithm"]["rawcode"] == "" and "url" not in stage["algorithm"]


def test_the_demo_shows_why_the_engine_could_not_fetch_the_data(service_url, start_engine, tmp_path, monkeypatch):
    start_engine(max_input_bytes=100)
    monkeypatch.chdir(tmp_path)

    with pytest.raises(demo.DemoError) as failure:
        demo.run(service_url, None, timeout=60, out=io.StringIO())

    message = str(failure.value)
    assert "status 31 Data provisioning failed" in message
    assert "the engine's configure log says:\n  Input 0 failed: file 0 of did:op:" in message
    assert "more than the limit of 100 bytes" in message
    assert list(tmp_path.iterdir()) == []


def test_the_demo_fails_clearly_when_the_service_is_down(capsys):
    assert demo.main(["--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5"]) == 1
    assert "cannot reach the service" in capsys.readouterr().err


def test_the_demo_refuses_a_malformed_provider_key(capsys, monkeypatch):
    monkeypatch.setenv("DEMO_PROVIDER_KEY", "0x1234")
    assert demo.main(["--url", f"http://127.0.0.1:{free_port()}", "--timeout", "5"]) == 1
    assert "DEMO_PROVIDER_KEY must be a 32-byte hex private key" in capsys.readouterr().err
