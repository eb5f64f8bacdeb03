"""gunicorn, started the way operator_service/tools/cli.py starts it, on a free local port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from operator_service.metrics.exposition import MULTIPROC_VARIABLE, prepare_multiprocess_folder
from operator_service.tools import cli
from operator_service.tools.embedded_db import free_port

REPO = Path(__file__).resolve().parent.parent
# Short names for --worker-class and --baseline; any gunicorn worker class path works too.
WORKER_CLASSES = {"buffered": cli.DEFAULT_WORKER_CLASS}
THREADED = ("gthread", cli.DEFAULT_WORKER_CLASS)


@dataclass(frozen=True)
class GunicornSettings:
    workers: int = cli.DEFAULT_WORKERS
    worker_class: str = cli.DEFAULT_WORKER_CLASS
    threads: int = cli.DEFAULT_THREADS
    env: tuple[tuple[str, str], ...] = ()  # variables of the service under these settings (METRICS=0, ...)

    @classmethod
    def parse(cls, spec: str) -> GunicornSettings:
        """`CLASS:WORKERS` or `CLASS:WORKERSxTHREADS`, e.g. sync:2, buffered:2x8, gthread:2x4."""
        try:
            name, counts = spec.split(":")
            workers, _, threads = counts.partition("x")
            worker_class = WORKER_CLASSES.get(name, name)
            return cls(int(workers), worker_class, int(threads or 1) if worker_class in THREADED else 1)
        except ValueError:
            raise ValueError(
                f"{spec!r}: expected CLASS:WORKERS or CLASS:WORKERSxTHREADS, e.g. sync:2 or buffered:2x8"
            ) from None

    @property
    def threaded(self) -> bool:
        return self.worker_class in THREADED

    def describe(self) -> str:
        name = next((short for short, path in WORKER_CLASSES.items() if path == self.worker_class), self.worker_class)
        text = f"{self.workers} x {name} workers"
        if self.threaded:
            text += f", {self.threads} threads each"
        if self.env:
            text += ", " + " ".join(f"{name}={value}" for name, value in self.env)
        return text


class Gunicorn:
    """One gunicorn master serving `app` (module:variable) with `settings`."""

    def __init__(self, app: str, settings: GunicornSettings, env: dict[str, str], log_file: Path):
        self.app = app
        self.settings = settings
        # Each server's workers add up their metrics in a folder of its own, as `operator-service serve`'s do.
        self.metrics = log_file.parent / "metrics" / log_file.stem
        self.env = {**env, **dict(settings.env), MULTIPROC_VARIABLE: str(self.metrics)}
        self.log_file = log_file
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0  # time.monotonic() of the last start
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.settings.workers),
            "--worker-class",
            self.settings.worker_class,
            "--timeout",
            str(cli.DEFAULT_TIMEOUT),
            *cli.HTTP_LIMITS,
            "--chdir",
            str(REPO),
            "--log-level",
            "warning",
        ]
        if self.settings.threaded:
            command += ["--threads", str(self.settings.threads)]
        return [*command, self.app]

    def start(self, timeout: float = 60.0) -> Gunicorn:
        prepare_multiprocess_folder(self.metrics)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "a" if self.starts else "w")  # a restart's lines follow the first run's
        self.starts += 1
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command(), env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, cwd=REPO
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn {self.app} exited with {self.process.returncode}; see {self.log_file}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"gunicorn {self.app} did not answer GET / within {timeout:.0f} s; see {self.log_file}")

    def restart(self) -> Gunicorn:
        self.stop()
        return self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
