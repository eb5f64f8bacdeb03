"""The HTTP server as `make run` and the image start it: slow and idle clients cannot starve it.

The tests share one gunicorn, started with the command operator_service/tools/cli.py builds;
each holds connections open that send nothing, or one header byte at a time, or never close
(and closes them), and checks from outside that other requests are still answered. Deadlines are generous: the point is
"answered at all", the speed is measured by bench/ (scenarios idle and slowloris).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

import pytest

from operator_service.env_vars import ConfigError
from operator_service.tools import cli
from operator_service.tools.embedded_db import free_port
from operator_service.tools.launcher import check_server_variables
from tests.conftest import OWNER

SLOW_CLIENTS = 32
ANSWER_DEADLINE = 20.0
REQUEST_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def gunicorn(base_env, session_db, tmp_path_factory) -> Iterator[str]:
    """The service under gunicorn, configured as cli.py configures it, on a free port."""
    port = free_port()
    env = {**os.environ, **base_env, "OPERATOR_REQUEST_TIMEOUT": str(REQUEST_TIMEOUT), "LOG_LEVEL": "WARNING"}
    with open(tmp_path_factory.mktemp("gunicorn") / "gunicorn.log", "w") as log:
        process = subprocess.Popen(
            cli._gunicorn_command(f"127.0.0.1:{port}"), env=env, stdout=log, stderr=subprocess.STDOUT
        )
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_until_answering(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture
def server(gunicorn, db) -> str:
    """The shared gunicorn's URL, the database emptied for the test."""
    return gunicorn


def _wait_until_answering(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert process.poll() is None, "gunicorn exited"
        try:
            with urllib.request.urlopen(url + "/", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("gunicorn did not answer within 60 s")


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=ANSWER_DEADLINE)


def _idle(url: str) -> socket.socket:
    return _connect(url)


def _slowloris(url: str) -> socket.socket:
    sock = _connect(url)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
    return sock


def _get(url: str) -> tuple[int, object]:
    with urllib.request.urlopen(url, timeout=ANSWER_DEADLINE) as answer:
        return answer.status, json.loads(answer.read())


def _hold(stack: ExitStack, sockets: list[socket.socket]) -> None:
    for sock in sockets:
        stack.callback(sock.close)


def test_the_api_answers_while_slow_and_idle_connections_are_open(server, provider):
    with ExitStack() as stack:
        _hold(stack, [_idle(server) for _ in range(SLOW_CLIENTS)])
        _hold(stack, [_slowloris(server) for _ in range(SLOW_CLIENTS)])
        status, info = _get(server + "/")
        assert status == 200 and info["software"] == "Operator service"
        query = urlencode({"owner": OWNER, **provider.signed(OWNER)})
        assert _get(f"{server}/api/v1/operator/compute?{query}") == (200, [])


def test_a_request_not_sent_in_full_in_time_is_answered_408(server):
    with _slowloris(server) as sock:
        sock.settimeout(ANSWER_DEADLINE)
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
        "error": f"Request not received within {REQUEST_TIMEOUT:g} s"
    }


def test_clients_that_never_close_their_end_do_not_stall_the_server(server):
    """Each gets its answer and keeps the connection open (gunicorn's own close would wait 2 s for each)."""
    lingering = []
    with ExitStack() as stack:
        for _ in range(2 * SLOW_CLIENTS):
            sock = _connect(server)
            stack.callback(sock.close)
            sock.sendall(b"GET /api/v1/operator/runningjobs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            lingering.append(sock)
        assert _get(server + "/")[0] == 200
        assert all(sock.recv(12) == b"HTTP/1.1 200" for sock in lingering)


def test_serve_becomes_gunicorn_so_that_a_stop_signal_reaches_it(base_env, db, tmp_path):
    """The image runs `operator-service serve`: the process docker signals must be gunicorn itself."""
    port = free_port()
    env = {**os.environ, **base_env, "LOG_LEVEL": "WARNING"}
    with open(tmp_path / "serve.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "operator_service.tools.cli", "serve", "--bind", f"127.0.0.1:{port}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_answering(f"http://127.0.0.1:{port}", process)
            assert "gunicorn" in Path(f"/proc/{process.pid}/cmdline").read_text()
            process.terminate()
            assert process.wait(timeout=30) == 0
        finally:
            if process.poll() is None:
                process.kill()


def test_a_chunked_body_reaches_the_app_whole(server):
    with _connect(server) as sock:
        sock.sendall(
            b"POST /api/v1/operator/compute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        for piece in (b'{"agre', b'ementId": "0x1"}'):
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            time.sleep(0.1)
        sock.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {
        "error": '"workflow" is required in the call to POST:/compute'
    }


@pytest.mark.parametrize("name, value", [("OPERATOR_THREADS", "0"), ("OPERATOR_REQUEST_TIMEOUT", "soon")])
def test_the_server_settings_are_checked_before_start_up(name, value):
    with pytest.raises(ConfigError, match=name):
        check_server_variables("127.0.0.1:8050", {name: value})
