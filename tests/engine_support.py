"""Running the local engine in tests: engines in threads of the test process, jobs through the API.

Every engine polls every 0.1 s against the test database; inputs come from an HTTP server
on 127.0.0.1. Nothing sleeps for a fixed time: each helper polls for the condition it
expects, with a deadline. Loaded as a pytest plugin (conftest.py), so every test module
gets these fixtures without importing them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from operator_service.engine import EngineConfig, run_engine, volumes
from operator_service.engine.sandbox.uids import processes_of
from tests.conftest import OWNER
from tests.waiting import wait_for

COMPUTE = "/api/v1/operator/compute"
ENVIRONMENTS = "/api/v1/operator/environments"
RESULT = "/api/v1/operator/getResult"
SAMPLE = b"alpha\nbeta\ngamma\n"
RETRY_SECONDS = 0.1  # an engine's pause before asking the database again (1 s in production)

# Counts the lines of every input file into result.txt.
COUNT_LINES = """
import json, os
total = 0
for did in json.loads(os.environ["DIDS"]):
    folder = os.path.join(os.environ["INPUTS"], did)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as handle:
            total += sum(1 for _ in handle)
with open(os.path.join(os.environ["OUTPUTS"], "result.txt"), "w") as out:
    out.write(f"{total} lines\\n")
print("counted", total)
"""

# Records its uid (one line per run) and waits: for stop, timeout, restart and maxJobs tests.
SLEEPER = """
import os, time
with open(os.path.join(os.environ["OUTPUTS"], "runs.txt"), "a") as out:
    out.write(f"{os.getuid()}\\n")
print("started", flush=True)
time.sleep(60)
"""


def job_row(db, job_id: str) -> dict:
    with db.transaction() as cur:
        cur.execute(
            "SELECT status, statusText, stopreq, dateFinished, outputsURL, workflow FROM jobs WHERE workflowId = %s",
            (job_id,),
        )
        status, text, stopreq, finished, outputs, workflow = cur.fetchone()
    return {
        "status": status,
        "statusText": text,
        "stopreq": stopreq,
        "dateFinished": finished,
        "outputs": json.loads(outputs) if outputs else None,
        "workflow": json.loads(workflow),
    }


def wait_finished(db, job_id: str, timeout: float = 15.0) -> dict:
    return wait_for(lambda: (row := job_row(db, job_id))["dateFinished"] and row, f"job {job_id} to finish", timeout)


def wait_status(db, job_id: str, status: int) -> dict:
    return wait_for(lambda: (row := job_row(db, job_id))["status"] == status and row, f"job {job_id} at {status}")


def last_ping(db, namespace: str) -> Any | None:
    with db.transaction() as cur:
        cur.execute("SELECT lastping FROM envs WHERE namespace = %s", (namespace,))
        row = cur.fetchone()
    return row[0] if row else None


def wait_announces(db, namespace: str, count: int = 3) -> None:
    """Wait until the engine of `namespace` has announced `count` more times."""
    for _ in range(count):
        before = last_ping(db, namespace)
        wait_for(lambda before=before: last_ping(db, namespace) != before, f"an announce of {namespace}")


def running_as(uid: int) -> list[int]:
    """Host pids of the processes of a job's uid (never the test's own: jobs have uids of their own)."""
    assert uid != os.getuid(), "the job ran as the engine's own user"
    return processes_of(uid)


class Inputs(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    gate = threading.Event()

    def do_GET(self) -> None:
        Inputs.gate.wait(10)
        body = Inputs.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def inputs(http_stub) -> Iterator[str]:
    """Base URL of an HTTP server on 127.0.0.1 serving Inputs.files; Inputs.gate holds requests."""
    Inputs.files = {"/sample.txt": SAMPLE}
    Inputs.gate.set()
    yield http_stub(Inputs)
    Inputs.gate.set()


@dataclass
class RunningEngine:
    config: EngineConfig
    stop: threading.Event
    thread: threading.Thread

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the engine did not stop"

    def job_folder(self, job_id: str) -> Path:
        return self.config.work_dir / job_id

    def job_data(self, job_id: str) -> Path:
        """The job's /data, as the engine sees it."""
        return self.job_folder(job_id) / "data"


@pytest.fixture
def work_dirs() -> Iterator[Callable[[], Path]]:
    """Fresh engine work dirs, outside pytest's private temp folder (the algorithm user must reach them)."""
    made: list[Path] = []

    def make() -> Path:
        made.append(Path(tempfile.mkdtemp(prefix="engine-test-")))
        return made[-1]

    yield make
    for folder in made:
        for mountpoint in volumes.mounts_under(folder):  # a job an engine left for its next start
            volumes.unmount(mountpoint)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def start_engine(settings, db, work_dirs) -> Iterator[Callable[..., RunningEngine]]:
    engines: list[RunningEngine] = []

    def start(namespace: str = "ocean-compute", work_dir: Path | None = None, **overrides: Any) -> RunningEngine:
        options = {
            "max_job_duration": 20.0,
            "max_jobs": 4,
            "max_input_bytes": 1024 * 1024,
            "fetch_timeout": 10.0,
            **overrides,
        }
        config = EngineConfig(
            namespace=namespace,
            work_dir=work_dir or work_dirs(),
            results_dir=Path(settings.results_dir),
            poll_seconds=0.1,
            db_retry_seconds=RETRY_SECONDS,
            lease_retry_seconds=RETRY_SECONDS,
            use_docker="off",
            **options,
        )
        stop = threading.Event()
        thread = threading.Thread(target=run_engine, args=(settings.postgres, config, stop), daemon=True)
        thread.start()
        engine = RunningEngine(config, stop, thread)
        engines.append(engine)
        wait_announces(db, namespace, 1)
        return engine

    yield start
    for engine in engines:
        engine.halt()


def workflow(environment: str, rawcode: str, urls: list[str], maxtime: int = 60) -> dict:
    return {
        "stages": [
            {
                "index": 0,
                "input": [{"index": 0, "id": "did:op:" + uuid.uuid4().hex, "url": urls}],
                "algorithm": {
                    "id": "did:op:" + uuid.uuid4().hex,
                    "rawcode": rawcode,
                    "container": {"entrypoint": "python3 $ALGO", "image": "python", "tag": "3.11", "checksum": ""},
                },
                "compute": {"Instances": 1, "namespace": environment, "maxtime": maxtime},
                "output": {},
            }
        ]
    }


@pytest.fixture
def submit_job(client, provider, inputs) -> Callable[..., str]:
    """POST a signed job through the API; returns its job id."""

    def post(rawcode: str, environment: str = "ocean-compute", urls: list[str] | None = None) -> str:
        body = {
            "agreementId": uuid.uuid4().hex,
            "owner": OWNER,
            "environment": environment,
            "chainId": 8996,
            "workflow": workflow(environment, rawcode, urls if urls is not None else [f"{inputs}/sample.txt"]),
            **provider.signed(OWNER),
        }
        response = client.post(COMPUTE, json=body)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()[0]["jobId"]

    return post


def get_result(client, provider, job_id: str, index: int):
    query = {"index": index, "jobId": job_id, "owner": OWNER, **provider.signed(OWNER, job_id)}
    return client.get(RESULT, query_string=query)


def status_via_api(client, provider, job_id: str) -> dict:
    response = client.get(COMPUTE, query_string={"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)})
    assert response.status_code == 200
    return response.get_json()[0]


def published(row: dict, kind: str) -> list[dict]:
    return [entry for entry in row["outputs"] if entry["type"] == kind]


def read_published(row: dict, kind: str) -> str:
    (entry,) = published(row, kind)
    return Path(entry["url"].removeprefix("file://")).read_text()
