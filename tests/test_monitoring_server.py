"""Monitoring as the real commands run it: `operator-service serve` (gunicorn, two workers adding
up their metrics in PROMETHEUS_MULTIPROC_DIR, JSON logs) and `operator-service run` (which gives
the API a metrics folder in its data folder and the engine ENGINE_METRICS_BIND)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from operator_service.tools.embedded_db import free_port
from tests.conftest import OWNER, Provider
from tests.engine_support import COMPUTE, wait_for
from tests.metrics_support import value

REQUESTS = 40


class Served:
    def __init__(self, url: str, log: Path, folder: Path):
        self.url = url
        self.log = log
        self.folder = folder

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as answer:
            return answer.read().decode()


@pytest.fixture
def served(base_env, db, tmp_path) -> Iterator[Served]:
    """`operator-service serve` with two sync workers (each serves one connection at a time, so a
    client can hold one of them), JSON logs, and a metrics folder an earlier server left a file in."""
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left by an earlier server")
    port = free_port()
    env = {
        **os.environ,
        **base_env,
        "OPERATOR_WORKERS": "2",
        "OPERATOR_WORKER_CLASS": "sync",
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
    }
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "operator_service.tools.cli", "serve", "--bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url, process), "the server to answer", timeout=60)
        yield Served(url, log, folder)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str, process: subprocess.Popen) -> bool:
    assert process.poll() is None, "operator-service serve exited"
    try:
        return requests.get(url + "/livez", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_every_worker_is_counted_and_every_line_is_json_without_credentials(served, engine):
    assert not (served.folder / "counter_1.db").exists(), "the folder was not emptied at start"
    before = value(served.metrics(), "operator_http_requests_total", route="/livez", method="GET", status="200")
    host, port = served.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as held:
        # Half a request: the worker that took it waits for the rest, the other serves the others.
        held.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Request-Id: req-held\r\n")
        with ThreadPoolExecutor(8) as pool:
            answers = list(
                pool.map(
                    lambda n: requests.get(served.url + "/livez", headers={"X-Request-Id": f"req-{n}"}, timeout=10),
                    range(REQUESTS),
                )
            )
        held.sendall(b"Connection: close\r\n\r\n")
        assert held.recv(100).startswith(b"HTTP/1.1 200")
    assert [answer.headers["X-Request-Id"] for answer in answers] == [f"req-{n}" for n in range(REQUESTS)]
    text = served.metrics()
    served_livez = value(text, "operator_http_requests_total", route="/livez", method="GET", status="200")
    assert served_livez == before + REQUESTS + 1, "the workers' counts are not added up"

    provider = Provider("0x" + os.urandom(32).hex())
    signed = provider.signed(OWNER)
    assert requests.get(served.url + COMPUTE, params={"owner": OWNER, **signed}, timeout=10).status_code == 200
    assert requests.get(served.url + COMPUTE, params={"owner": OWNER, **signed}, timeout=10).status_code in (200, 401)
    engine.announce()
    wait_for(lambda: value(served.metrics(), "operator_jobs_collected") == 1, "the jobs read at scrape time")

    log = served.log.read_text()
    entries = [json.loads(line) for line in log.splitlines()]  # every line: gunicorn's own too
    assert any(entry["logger"].startswith("gunicorn") for entry in entries)
    access = [entry for entry in entries if entry["logger"] == "operator_service.access"]
    ids = [entry["request_id"] for entry in access if entry["path"] == "/livez"]
    assert sorted(i for i in ids if i.startswith("req-")) == sorted(
        [*(f"req-{n}" for n in range(REQUESTS)), "req-held"]
    )
    for secret in (signed["providerSignature"], signed["providerSignature"][2:], signed["nonce"], provider.private_key):
        assert secret not in log


def test_the_launcher_wires_the_api_metrics_folder_and_the_engine_metrics(launch):
    engine_port = free_port()
    run = launch(ENGINE_METRICS_BIND=f"127.0.0.1:{engine_port}", LOG_FORMAT="json")
    run.wait_ready()
    announced = f"the local engine's metrics on http://127.0.0.1:{engine_port}/metrics"
    run.wait_for_output(announced)
    [line] = [line for line in run.stdout if announced in line]
    assert (json.loads(line)["logger"], json.loads(line)["message"]) == ("operator_service.launcher", announced)

    def engine_metrics() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{engine_port}/metrics", timeout=5) as answer:
                return answer.read().decode()
        except OSError:
            return None

    text = wait_for(engine_metrics, "the engine's metrics")
    assert "operator_engine_running_jobs" in str(text)
    assert value(requests.get(run.url + "/metrics", timeout=10).text, "operator_jobs_collected") == 1
    assert list((run.data_dir / "metrics").glob("*.db")), "the API's workers keep no metrics in the data folder"


def test_an_engine_metrics_address_in_use_stops_the_launcher_before_it_starts(launch):
    held = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", held))
        holder.listen()
        run = launch(ENGINE_METRICS_BIND=f"127.0.0.1:{held}")
        assert run.exit_code() == 1
    assert f"ENGINE_METRICS_BIND 127.0.0.1:{held}: cannot listen there" in run.output
    assert not (run.data_dir / "postgres").exists()
