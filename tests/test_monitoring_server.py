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
from collections.abc import Callable, Iterator
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
    def __init__(self, url: str, log: Path, folder: Path, process: subprocess.Popen):
        self.url = url
        self.log = log
        self.folder = folder
        self.process = process

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as answer:
            return answer.read().decode()

    def entries(self) -> list[dict]:
        """The JSON lines written so far (a batch may be half written: its last line is left out)."""
        complete = self.log.read_text().rpartition("\n")[0]
        return [json.loads(line) for line in complete.splitlines()]

    def access_ids(self, prefix: str) -> list[str]:
        """The request ids starting with `prefix` of the access lines written so far, sorted."""
        access = [entry for entry in self.entries() if entry["logger"] == "operator_service.access"]
        return sorted(entry["request_id"] for entry in access if entry["request_id"].startswith(prefix))


@pytest.fixture
def serve(base_env, db, tmp_path) -> Iterator[Callable[..., Served]]:
    """Start `operator-service serve` with two sync workers (each serves one connection at a time,
    so a client can hold one of them), JSON logs, a metrics folder an earlier server left a file
    in, and the variables given."""
    processes: list[subprocess.Popen] = []

    def start(**variables: str) -> Served:
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
            **variables,
        }
        log = tmp_path / "serve.log"
        with open(log, "w") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "operator_service.tools.cli", "serve", "--bind", f"127.0.0.1:{port}"],
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(url, process), "the server to answer", timeout=60)
        return Served(url, log, folder, process)

    try:
        yield start
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def served(serve) -> Served:
    return serve()


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

    def served_livez() -> float:
        return value(served.metrics(), "operator_http_requests_total", route="/livez", method="GET", status="200")

    # A worker makes its counts within JOURNAL_SECONDS; the one that answers the scrape, at once.
    wait_for(lambda: served_livez() == before + REQUESTS + 1, "the workers' counts added up")

    provider = Provider("0x" + os.urandom(32).hex())
    signed = provider.signed(OWNER)
    assert requests.get(served.url + COMPUTE, params={"owner": OWNER, **signed}, timeout=10).status_code == 200
    assert requests.get(served.url + COMPUTE, params={"owner": OWNER, **signed}, timeout=10).status_code in (200, 401)
    engine.announce()
    wait_for(lambda: value(served.metrics(), "operator_jobs_collected") == 1, "the jobs read at scrape time")

    expected = sorted([*(f"req-{n}" for n in range(REQUESTS)), "req-held"])
    wait_for(lambda: served.access_ids("req-") == expected, "an access line for each request")  # made in batches
    assert any(entry["logger"].startswith("gunicorn") for entry in served.entries())  # every line is JSON
    log = served.log.read_text()
    for secret in (signed["providerSignature"], signed["providerSignature"][2:], signed["nonce"], provider.private_key):
        assert secret not in log


def test_a_server_stopped_right_after_answering_still_logs_every_request(served):
    """Access lines are made and written in batches: a worker that stops makes and writes what
    it had pending before it exits."""
    ids = [f"stop-{n}" for n in range(30)]
    for request_id in ids:
        assert requests.get(served.url + "/livez", headers={"X-Request-Id": request_id}, timeout=10).ok
    served.process.terminate()
    assert served.process.wait(timeout=30) == 0
    assert served.access_ids("stop-") == sorted(ids)


def test_an_app_made_before_the_workers_fork_writes_its_lines_once(serve):
    """With gunicorn's --preload the app is made, and logs, in the master, and the workers
    are forked from it: lines still pending then are written before the fork, not by each child."""
    provider = Provider("0x" + os.urandom(32).hex())  # signatures enforced: no WARNING flushes the start line
    served = serve(
        GUNICORN_CMD_ARGS="--preload", SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS=json.dumps([provider.address])
    )
    assert requests.get(served.url + "/livez", headers={"X-Request-Id": "preloaded"}, timeout=10).ok
    wait_for(lambda: served.access_ids("preloaded") == ["preloaded"], "the worker's access line")
    started = [entry for entry in served.entries() if entry["message"].startswith("operator-service ")]
    assert len(started) == 1, started


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
    folder = run.data_dir / "metrics"
    wait_for(lambda: list(folder.glob("*.db")), "the API's workers to keep their metrics in the data folder")


def test_an_engine_metrics_address_in_use_stops_the_launcher_before_it_starts(launch):
    held = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", held))
        holder.listen()
        run = launch(ENGINE_METRICS_BIND=f"127.0.0.1:{held}")
        assert run.exit_code() == 1
    assert f"ENGINE_METRICS_BIND 127.0.0.1:{held}: cannot listen there" in run.output
    assert not (run.data_dir / "postgres").exists()
