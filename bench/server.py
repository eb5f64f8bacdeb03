"""gunicorn, started the way operator_service/cli.py starts it, on a free local port."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from operator_service.embedded_db import free_port

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class GunicornSettings:
    workers: int = 4
    worker_class: str = "sync"
    threads: int = 1

    def describe(self) -> str:
        text = f"{self.workers} x {self.worker_class} workers"
        if self.worker_class == "gthread":
            text += f", {self.threads} threads each"
        return text


class Gunicorn:
    """One gunicorn master serving `app` (module:variable) with `settings`."""

    def __init__(self, app: str, settings: GunicornSettings, env: dict[str, str], log_file: Path):
        self.app = app
        self.settings = settings
        self.env = env
        self.log_file = log_file
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.settings.workers),
            "--worker-class", self.settings.worker_class,
            "--timeout", "120",
            "--chdir", str(REPO),
            "--log-level", "warning",
        ]
        if self.settings.worker_class == "gthread":
            command += ["--threads", str(self.settings.threads)]
        return command + [self.app]

    def start(self, timeout: float = 60.0) -> "Gunicorn":
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "w")
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
