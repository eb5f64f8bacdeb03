"""`operator-service run` attacked from outside, as an operator would: SIGKILL of the database
under load, SIGKILL of the launcher, a second launcher on the same data folder, Ctrl-C, and
every kind of start-up error. Results are checked from the host: through the API, in the
database, in /proc and on the data folder's lock.

Each launcher runs in a subprocess with a data folder and ports of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import requests

from operator_service.engine.sandbox.uids import processes_of
from operator_service.tools.embedded_db import free_port
from operator_service.tools.folder_lock import FolderLock
from tests.conftest import OWNER, Provider, compute_body
from tests.engine_support import SLEEPER, workflow
from tests.launcher_support import START_SECONDS, Launch, running
from tests.ocean_engine import OceanEngine
from tests.waiting import wait_for

COMPUTE = "/api/v1/operator/compute"

# Writes its result only after a while, so that the database can die while it runs.
SLOW_RESULT = """
import os, time
time.sleep(4)
with open(os.path.join(os.environ["OUTPUTS"], "result.txt"), "w") as out:
    out.write("done\\n")
"""


def _nothing_left_running(data_dir: Path) -> None:
    """Every process the launcher started held the folder's lock: it is free only when all ended."""
    if not data_dir.exists():
        return
    lock = FolderLock(data_dir)
    lock.acquire(notice=lambda _: None, wait_seconds=0)
    lock.release()


def _signed_post(run: Launch, provider: Provider, body: dict) -> requests.Response:
    body = {**body, **provider.signed(body["owner"])}
    return requests.post(run.url + COMPUTE, json=body, timeout=60)


def _job(run: Launch, job_id: str) -> tuple | None:
    """(status, dateFinished, outputsURL), or None while there is no such row or no database."""
    try:
        rows = run.query("SELECT status, dateFinished, outputsURL FROM jobs WHERE workflowId = %s", (job_id,))
    except psycopg2.OperationalError:
        return None
    return rows[0] if rows else None


def test_every_acknowledged_job_survives_a_database_killed_under_load(launch, provider):
    """The postmaster gets SIGKILL while POSTs run; the launcher restarts it; every job answered
    200, before and after, is stored exactly once."""
    run = launch("--no-engine")
    run.wait_ready()
    OceanEngine(
        {
            "host": "127.0.0.1",
            "port": run.env["POSTGRES_PORT"],
            "user": "postgres",
            "dbname": "operator",
            "password": (run.data_dir / "postgres" / "operator-password").read_text().strip(),
        }
    ).announce()
    acknowledged: list[str] = []
    answers: list[int] = []
    stop = threading.Event()

    def post_until_stopped() -> None:
        while not stop.is_set():
            try:
                response = _signed_post(run, provider, compute_body(agreement_id=uuid.uuid4().hex))
            except requests.RequestException:
                answers.append(0)
                continue
            answers.append(response.status_code)
            if response.status_code == 200:
                acknowledged.append(response.json()[0]["jobId"])

    clients = [threading.Thread(target=post_until_stopped, daemon=True) for _ in range(6)]
    for client in clients:
        client.start()
    try:
        wait_for(lambda: len(acknowledged) >= 100, "100 acknowledged POSTs", timeout=START_SECONDS)
        postmaster = run.postmaster()
        os.kill(postmaster, signal.SIGKILL)
        run.wait_for_output("embedded Postgres was killed by SIGKILL; restarting it")
        run.wait_for_output("embedded Postgres restarted")
        after_restart = len(acknowledged)
        wait_for(
            lambda: len(acknowledged) >= after_restart + 100,
            "100 more acknowledged POSTs after the restart",
            timeout=START_SECONDS,
        )
    finally:
        stop.set()
        for client in clients:
            client.join(120)
    assert run.postmaster() != postmaster
    assert run.process.poll() is None, "the launcher kept running"
    stored = dict(
        run.query(
            "SELECT workflowId, count(*) FROM jobs WHERE workflowId = ANY(%s) GROUP BY workflowId", (acknowledged,)
        )
    )
    missing = [job_id for job_id in acknowledged if job_id not in stored]
    assert missing == [], f"{len(missing)} of {len(acknowledged)} acknowledged jobs were lost"
    assert set(stored.values()) == {1}
    assert len(set(acknowledged)) == len(acknowledged)


def test_the_engine_keeps_its_jobs_when_the_database_is_restarted(launch, provider, inputs):
    run = launch()
    run.wait_ready()
    wait_for(
        lambda: requests.get(run.url + "/api/v1/operator/environments", timeout=10).json(),
        "the local engine to announce its environment",
        timeout=START_SECONDS,
    )
    body = {
        **compute_body(agreement_id=uuid.uuid4().hex),
        "workflow": workflow("ocean-compute", SLOW_RESULT, [f"{inputs}/sample.txt"]),
    }
    response = _signed_post(run, provider, body)
    assert response.status_code == 200, response.text
    job_id = response.json()[0]["jobId"]
    wait_for(lambda: (_job(run, job_id) or (0,))[0] == 40, "the algorithm to run", timeout=START_SECONDS)

    os.kill(run.postmaster(), signal.SIGKILL)
    run.wait_for_output("embedded Postgres restarted")
    status, _, outputs = wait_for(
        lambda: (row := _job(run, job_id)) and row[1] and row, "the job to finish", timeout=START_SECONDS
    )
    assert status == 70
    assert '"filename": "result.txt"' in outputs
    query = {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    [seen] = requests.get(run.url + COMPUTE, params=query, timeout=30).json()
    assert seen["status"] == 70 and seen["results"][0]["filename"] == "result.txt"


def test_a_second_launcher_on_the_same_data_folder_exits_at_once_and_touches_nothing(launch):
    first = launch()
    first.wait_ready()
    postmaster = first.postmaster()
    lock_text = (first.data_dir / "launcher.lock").read_text()

    second = launch(data_dir=first.data_dir, OPERATOR_BIND=f"127.0.0.1:{free_port()}", POSTGRES_PORT=str(free_port()))
    assert second.exit_code() == 1
    assert second.stdout == []
    assert second.stderr == [
        f"operator-service run: data folder {first.data_dir} is in use by operator-service run"
        f" (PID {first.process.pid}); stop it first, or give this one another OPERATOR_DATA_DIR"
    ]
    for port in (second.env["POSTGRES_PORT"], second.env["OPERATOR_BIND"].rsplit(":", 1)[1]):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", int(port)))  # nothing of the second one listens
    assert first.postmaster() == postmaster and running(postmaster)
    assert (first.data_dir / "launcher.lock").read_text() == lock_text
    assert requests.get(first.url + "/api/v1/operator/runningjobs", timeout=30).status_code == 200
    assert first.process.poll() is None


def test_after_a_kill_9_of_the_launcher_the_next_one_resumes_the_jobs(launch, provider, inputs):
    first = launch()
    first.wait_ready()
    wait_for(
        lambda: requests.get(first.url + "/api/v1/operator/environments", timeout=10).json(),
        "the local engine to announce its environment",
        timeout=START_SECONDS,
    )
    body = {
        **compute_body(agreement_id=uuid.uuid4().hex),
        "workflow": workflow("ocean-compute", SLEEPER, [f"{inputs}/sample.txt"]),
    }
    job_id = _signed_post(first, provider, body).json()[0]["jobId"]
    runs = first.data_dir / "jobs" / job_id / "data" / "outputs" / "runs.txt"
    uid = int(
        wait_for(lambda: runs.exists() and runs.read_text().strip(), "the algorithm to start", timeout=START_SECONDS)
    )

    first.process.kill()
    first.process.wait()
    second = launch(data_dir=first.data_dir)
    second.wait_ready()
    status, _, _ = wait_for(
        lambda: (row := _job(second, job_id)) and row[1] and row, "the job to finish", timeout=START_SECONDS
    )
    assert status == 70
    assert processes_of(uid) == [], "nothing of the interrupted algorithm still runs"
    published = Path(second.data_dir / "results" / job_id / "outputs" / "runs.txt").read_text().split()
    assert published == [str(uid)], "the algorithm ran once: no second engine ran it meanwhile"
    algorithm_log = (second.data_dir / "results" / job_id / "logs" / "algorithm.log").read_text()
    assert "engine restarted while the algorithm was running" in algorithm_log


def test_ctrl_c_stops_everything(launch):
    run = launch()
    run.wait_ready()
    postmaster = run.postmaster()
    assert run.interrupt() == 0
    _nothing_left_running(run.data_dir)
    assert not running(postmaster)
    assert "Traceback" not in run.output


def test_ctrl_c_interrupts_a_start_that_waits_for_the_database(launch):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(START_SECONDS)
        run = launch(POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(silent.getsockname()[1]), POSTGRES_TIMEOUT="600")
        connection, _ = silent.accept()  # the launcher now waits for the database's answer
        try:
            run.process.send_signal(signal.SIGINT)
            assert run.exit_code(timeout=60) == 130
        finally:
            connection.close()
    assert run.stderr == ["interrupted during start-up; stopping"]
    _nothing_left_running(run.data_dir)


class Listener:
    """A TCP port on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(16)
        self.port = self.socket.getsockname()[1]

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    held = Listener()
    yield held
    held.close()


# (name, environment given the listener's port and the test server's settings, code, text of the one line)
START_UP_ERRORS = [
    ("bad JSON", lambda port, pg: {"ALLOWED_PROVIDERS": "notjson"}, 2, "ALLOWED_PROVIDERS must be a JSON list"),
    ("bad workers", lambda port, pg: {"OPERATOR_WORKERS": "many"}, 2, "OPERATOR_WORKERS must be a whole number"),
    ("bad worker class", lambda port, pg: {"OPERATOR_WORKER_CLASS": "fast"}, 2, "OPERATOR_WORKER_CLASS must be"),
    ("bad bind", lambda port, pg: {"OPERATOR_BIND": "localhost:http"}, 2, "OPERATOR_BIND (or --bind) must be"),
    ("bad engine setting", lambda port, pg: {"maxJobs": "lots"}, 2, "maxJobs must be a number"),
    ("busy API port", lambda port, pg: {"OPERATOR_BIND": f"127.0.0.1:{port}"}, 1, "cannot listen there"),
    (
        "no cluster with KUBERNETES=on",
        lambda port, pg: {"KUBERNETES": "on", "KUBECONFIG": "/nonexistent/kubeconfig"},
        1,
        "KUBERNETES=on but there is no in-cluster service account and no kubeconfig",
    ),
    (
        "port held by a program that never answers",
        lambda port, pg: {"POSTGRES_PORT": str(port)},
        1,
        "is already in use by another program (Address already in use); set POSTGRES_PORT to a free port",
    ),
    (
        "port held by another Postgres",
        lambda port, pg: {"POSTGRES_PORT": str(pg.port)},
        1,
        "is already in use by another program",
    ),
    (
        "unreachable database",
        lambda port, pg: {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(free_port())},
        1,
        "cannot use the database at 127.0.0.1",
    ),
    (
        "database that never answers",
        lambda port, pg: {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(port), "POSTGRES_TIMEOUT": "2"},
        1,
        "timeout expired",
    ),
    (
        "database refusing the password",
        lambda port, pg: {
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(pg.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "wrong",
        },
        1,
        "password authentication failed",
    ),
]


@pytest.mark.parametrize("name, env, code, text", START_UP_ERRORS, ids=[case[0] for case in START_UP_ERRORS])
def test_a_start_up_error_is_one_line_and_leaves_nothing_running(launch, listener, settings, name, env, code, text):
    run = launch(**env(listener.port, settings.postgres))
    assert run.exit_code() == code
    assert len(run.stderr) == 1, run.output
    assert text in run.stderr[0]
    assert "Traceback" not in run.output
    _nothing_left_running(run.data_dir)
    assert not (run.data_dir / "postgres" / "postmaster.pid").exists()


# `operator-service run` with an API command that dies at once, after the database started.
API_THAT_DIES = """
import sys
from pathlib import Path
from operator_service.tools.launcher import StartupError, run
try:
    run(Path(sys.argv[1]), sys.argv[2], False, [sys.executable, "-c", "import sys; sys.exit(3)"])
except StartupError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def test_an_api_that_dies_at_start_up_stops_the_database_again(launcher_env):
    folder = Path(tempfile.mkdtemp(prefix="operator-launcher-"))
    try:
        result = subprocess.run(
            [sys.executable, "-c", API_THAT_DIES, str(folder), launcher_env["OPERATOR_BIND"]],
            env=launcher_env,
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.splitlines() == [
            "the API (gunicorn) exited at start-up with code 3; its own messages are above"
        ]
        assert "embedded Postgres on 127.0.0.1" in result.stdout, "the database had been started"
        _nothing_left_running(folder)
        assert not (folder / "postgres" / "postmaster.pid").exists()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("command", ["migrate", "engine", "serve"])
def test_the_other_commands_fail_in_one_line_too(command, launcher_env, listener):
    env = {
        **launcher_env,
        "POSTGRES_HOST": "127.0.0.1",
        "POSTGRES_PORT": str(free_port()),
        "OPERATOR_BIND": f"127.0.0.1:{listener.port}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "operator_service.tools.cli", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert lines[0].startswith(f"operator-service {command}: ")
    assert ("cannot listen there" if command == "serve" else "Connection refused") in lines[0]
