"""The README's local steps, as a new operator copies them, in a fresh copy of the checkout:
`make run` (on free ports: OPERATOR_BIND and POSTGRES_PORT, as the README says to move it), then
the curl blocks in order, twice, then `make demo` twice (once finding the service by OPERATOR_BIND,
once told `URL=`), then Ctrl-C.

What is checked is what the reader would look at: each step's answer, that a second run of every
block works as the first did, that nothing the commands wrote shows up in `git status` (the
checkout ignores what its own commands create), and, as root, that `make run` changed the parent
folders exactly as "What make run changes on the machine" says.

The copy shares this checkout's virtualenv (its `.venv/bin` is a link to it, and its stamp is
fresh), so `make` installs nothing: the test runs offline and does not touch the real `.venv`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from operator_service.tools.embedded_db import free_port
from operator_service.tools.folder_lock import FolderLock
from tests.readme_support import copy_checkout, git, readme_steps

START_SECONDS = 180.0
STEP_SECONDS = 300
JOB_ID = re.compile(r"^job ([0-9a-f]{32})$", re.MULTILINE)


@pytest.fixture
def workspace() -> Iterator[Path]:
    """A short path (the embedded Postgres's socket lives in the data folder), private like a home."""
    folder = Path(tempfile.mkdtemp(prefix="readme-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def checkout(workspace) -> Path:
    """What a clone of this working tree holds, with this checkout's virtualenv made ready."""
    copy = copy_checkout(workspace / "operator-service")
    venv = copy / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent)
    (venv / ".installed").touch()  # newer than setup.py: make installs nothing
    return copy


@dataclass
class MakeRun:
    """`make run` in the copy, in a session of its own (as in a terminal: Ctrl-C reaches all of it)."""

    checkout: Path
    env: dict[str, str]
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.process = subprocess.Popen(
            ["make", "run"],
            cwd=self.checkout,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        with self.process.stdout as output:
            for line in output:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_until(self, condition, what: str) -> None:
        deadline = time.monotonic() + START_SECONDS
        while not condition():
            assert self.process.poll() is None, f"make run exited while waiting for {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {what} within {START_SECONDS:g} s:\n{self.output}"
            time.sleep(0.2)

    def ctrl_c(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(START_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            raise AssertionError(f"make run did not stop on Ctrl-C:\n{self.output}") from None
        self._reader.join(START_SECONDS)


def clean_env(workspace: Path) -> dict[str, str]:
    """A shell's environment with none of this machine's settings, and a tmp folder of the test's."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("POSTGRES_", "OPERATOR_", "ENGINE_", "KUBE", "DEMO_", "PROVIDER_", "MAKE"))
    }
    tmp = workspace / "tmp"
    tmp.mkdir()
    return {**env, "TMPDIR": str(tmp), "KUBERNETES": "off", "ENGINE_USE_DOCKER": "off"}


def run_steps(script: str, checkout: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=STEP_SECONDS,
    )
    assert result.returncode == 0, f"the README's steps failed:\n{result.stdout}\n{result.stderr}"
    assert result.stderr == "", result.stderr  # curl -sS prints its errors: there were none
    return result.stdout


def sections(output: str) -> dict[str, list[str]]:
    """The output of each block (the script echoes `=== NAME` before each)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("=== "):
            current = found.setdefault(line[4:], [])
        else:
            current.append(line)
    return found


def json_lines(lines: list[str]) -> list:
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            continue
    return parsed


def check_round_trip(output: str) -> str:
    """Each step answered as the README says; the job's id."""
    blocks = sections(output)
    schema, environments = json_lines(blocks["start-a-job"])
    assert set(schema) >= {"version", "applied"}
    assert "ocean-compute" in [environment["id"] for environment in environments]
    (job_id,) = JOB_ID.findall("\n".join(blocks["start-a-job"]))

    statuses = json_lines(blocks["follow-the-job"])
    assert [status[0]["jobId"] for status in statuses] == [job_id] * len(statuses)
    assert statuses[-1][0]["status"] == 70 and statuses[-1][0]["dateFinished"], statuses[-1]

    other = blocks["other-routes"]
    info, running, stopped, deleted, *admin = json_lines(other)
    assert info["software"] == "Operator service"
    assert "spec: HTTP 200" in other[1]
    assert job_id not in [job["jobId"] for job in running]
    saved = other.index(next(line for line in other if line.startswith("saved in ")))
    assert other[saved + 1] == "algorithm.log"
    assert other[saved + 2] == "hello from the algorithm"
    assert stopped[0]["jobId"] == job_id and stopped[0]["stopreq"] == 0, "a finished job is not stopped"
    assert deleted[0]["jobId"] == job_id and deleted[0]["removed"] == 1
    assert [answer["error"].startswith("Kubernetes") for answer in admin] == [True] * 3, admin
    return job_id


def folder_modes(checkout: Path) -> dict[Path, int]:
    """The modes of the checkout and of every folder above it."""
    return {folder: stat.S_IMODE(folder.stat().st_mode) for folder in (checkout, *checkout.parents)}


def test_the_local_steps_work_as_written_and_twice(workspace, checkout) -> None:
    port = free_port()
    env = {**clean_env(workspace), "OPERATOR_BIND": f"127.0.0.1:{port}", "POSTGRES_PORT": str(free_port())}
    data_dir = checkout / ".operator-data"
    before = folder_modes(checkout)
    url = f"http://127.0.0.1:{port}"

    service = MakeRun(checkout, env)
    try:
        service.wait_until(lambda: f"operator-service on {url}" in service.output, "service")
        # make run's engine announces its environment within seconds; a reader waits for it too.
        service.wait_until(lambda: _announced(url), "announced environment")

        script = "".join(
            f"echo '=== {name}'\n{readme_steps('local', name)}"
            for name in ("start-a-job", "follow-the-job", "other-routes")
        )
        jobs = [check_round_trip(run_steps(script, checkout, env)) for _ in range(2)]
        assert jobs[0] != jobs[1]

        demo = readme_steps("local", "demo").split("#")[0].strip()
        assert demo == "make demo"
        first = run_steps(demo, checkout, env)
        assert f"service: {url} (from OPERATOR_BIND)" in first
        told = {key: value for key, value in env.items() if key != "OPERATOR_BIND"}
        second = run_steps(f"{demo} URL={url}", checkout, told)
        assert f"service: {url} (from --url)" in second
        for output, name in ((first, "result.txt"), (second, "result-1.txt")):
            assert f"result downloaded to {checkout / name}:" in output
            assert "total: 42 lines" in output
    finally:
        service.ctrl_c()

    assert "Traceback" not in service.output, service.output
    assert git(checkout, "status", "--porcelain", "--untracked-files=all") == ""
    assert (checkout / "result.txt").is_file() and (checkout / "result-1.txt").is_file()
    _nothing_left_running(data_dir)
    added = 0o011 if os.geteuid() == 0 else 0  # g+x and o+x, as root: see the README
    assert folder_modes(checkout) == {folder: mode | added for folder, mode in before.items()}


def _announced(url: str) -> bool:
    try:
        answer = requests.get(f"{url}/api/v1/operator/environments", timeout=5)
    except requests.RequestException:
        return False
    return answer.status_code == 200 and any(env.get("id") == "ocean-compute" for env in answer.json())


def _nothing_left_running(data_dir: Path) -> None:
    """Every process make run started held the data folder's lock: it is free only once all ended."""
    lock = FolderLock(data_dir)
    lock.acquire(notice=lambda _: None, wait_seconds=30)
    lock.release()
