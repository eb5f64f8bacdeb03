"""Launchers (`operator-service run`) in subprocesses, each with a data folder and ports of its own.

Loaded as a pytest plugin (conftest.py): `launcher_env` is a launcher's environment, `launch`
starts launchers and ends every one after the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg2
import pytest

from operator_service.tools.embedded_db import free_port
from tests.sql_support import query_and_close
from tests.waiting import wait_for

START_SECONDS = 120.0


class Launch:
    """One `operator-service run` subprocess; its output is collected line by line."""

    def __init__(self, data_dir: Path, env: dict[str, str], args: tuple[str, ...] = ()):
        self.data_dir = data_dir
        self.env = env
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "operator_service.tools.cli", "run", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self._readers = [
            threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.process.stdout, self.stdout), (self.process.stderr, self.stderr))
        ]
        for reader in self._readers:
            reader.start()

    @property
    def url(self) -> str:
        return f"http://{self.env['OPERATOR_BIND']}"

    @property
    def output(self) -> str:
        return "\n".join(self.stdout + self.stderr)

    def wait_for_output(self, text: str, timeout: float = START_SECONDS) -> None:
        wait_for(
            lambda: text in self.output or self.process.poll() is not None,
            f"{text!r} from the launcher",
            timeout,
            interval=0.1,
        )
        assert text in self.output, f"the launcher exited with {self.process.returncode}:\n{self.output}"

    def wait_ready(self) -> None:
        self.wait_for_output("operator-service on http://")

    def exit_code(self, timeout: float = START_SECONDS) -> int:
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the launcher still ran after {timeout:g} s:\n{self.output}") from None
        for reader in self._readers:  # the output ends when every process that shared it has ended
            reader.join(START_SECONDS)
        return code

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.exit_code()

    def postmaster(self) -> int:
        return int((self.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])

    def connect(self):
        password = (self.data_dir / "postgres" / "operator-password").read_text().strip()
        return psycopg2.connect(
            host="127.0.0.1",
            port=int(self.env["POSTGRES_PORT"]),
            user="postgres",
            password=password,
            dbname="operator",
            connect_timeout=5,
        )

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        return query_and_close(self.connect(), sql, params)

    def end(self) -> None:
        """Stop the launcher (if it still runs) and collect the rest of its output."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(START_SECONDS)


def running(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _collect(stream, lines: list[str]) -> None:
    """Every line of `stream` into `lines`; the stream is closed at its end."""
    with stream:
        for line in stream:
            lines.append(line.rstrip("\n"))


@pytest.fixture
def launcher_env() -> dict[str, str]:
    """The environment of a launcher with its own ports, no cluster, a quick engine."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POSTGRES_", "OPERATOR_", "ENGINE_", "KUBE"))
    }
    env.update(
        {
            "OPERATOR_BIND": f"127.0.0.1:{free_port()}",
            "POSTGRES_PORT": str(free_port()),
            "KUBERNETES": "off",
            "ALLOWED_ADMINS": '["launcher-test"]',
            "ENGINE_POLL_SECONDS": "0.2",
            "ENGINE_USE_DOCKER": "off",
            "OPERATOR_WORKERS": "2",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


@pytest.fixture
def launch(launcher_env) -> Iterator[Callable[..., Launch]]:
    """Start launchers (by default all on one new data folder); every one is ended afterwards."""
    started: list[Launch] = []
    folder = Path(tempfile.mkdtemp(prefix="operator-launcher-"))

    def start(*args: str, data_dir: Path | None = None, **env: str) -> Launch:
        target = data_dir or folder / "data"
        run = Launch(target, {**launcher_env, "OPERATOR_DATA_DIR": str(target), **env}, args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.end()
    shutil.rmtree(folder, ignore_errors=True)
