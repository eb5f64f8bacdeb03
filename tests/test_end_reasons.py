"""Why a job of the local engine ended, seen from outside: algorithms submitted through the API
exit 3, exceed their memory or time, are stopped by PUT, fail provisioning or are cut by an
engine restart, and the reason, its sentence and the exit code show in GET /compute and, with
every status the job went through, in GET /history.
"""

from __future__ import annotations

import os

import pytest

from operator_service.tools.embedded_db import free_port
from tests.conftest import OWNER
from tests.engine_support import COMPUTE, status_via_api, wait_finished, wait_for, wait_status

HISTORY = "/api/v1/operator/history"
SLEEPER = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
# Far more than ramGB=0.125 in the algorithm's own process.
GREEDY = "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(16 * 1024 * 1024))\nprint('never')\n"


def history(client, provider, job_id: str) -> list[dict]:
    query = {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    response = client.get(HISTORY, query_string=query)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def ending(client, provider, job_id: str) -> tuple:
    status = status_via_api(client, provider, job_id)
    return status["endReason"], status["exitCode"], status["endReasonText"]


def test_a_finished_job_went_through_every_status_and_ended_with_code_0(client, db, provider, submit_job, start_engine):
    start_engine()
    job_id = submit_job("print('hello')")
    wait_finished(db, job_id)
    reason, code, text = ending(client, provider, job_id)
    assert (reason, code, text) == ("finished", 0, "The algorithm exited with code 0.")
    entries = history(client, provider, job_id)
    assert [entry["status"] for entry in entries] == [1, 20, 30, 40, 60, 70]
    assert entries[0]["changedBy"] == "operator-service"
    assert {entry["changedBy"] for entry in entries[1:]} == {"operator-engine ocean-compute"}
    assert [entry["endReason"] for entry in entries] == [None] * 4 + ["finished"] * 2
    assert entries[-1]["dateFinished"] is not None


def test_an_algorithm_that_exits_3_failed_with_exit_code_3(client, db, provider, submit_job, start_engine):
    start_engine()
    job_id = submit_job("import sys\nsys.exit(3)\n")
    wait_finished(db, job_id)
    assert ending(client, provider, job_id) == ("algorithm-failed", 3, "The algorithm exited with code 3.")


@pytest.mark.skipif(os.geteuid() != 0, reason="the job's memory limit (a cgroup) needs root")
def test_an_algorithm_over_its_memory_was_killed_for_memory(client, db, provider, submit_job, start_engine):
    start_engine(ram_gb=0.125)
    job_id = submit_job(GREEDY)
    wait_finished(db, job_id, timeout=30)
    reason, code, text = ending(client, provider, job_id)
    assert reason == "killed-for-memory" and code != 0
    assert text == "The algorithm used more than its memory (ramGB=0.125): the kernel killed it."


def test_an_algorithm_over_its_time_limit_timed_out(client, db, provider, submit_job, start_engine):
    start_engine(max_job_duration=1.0)
    job_id = submit_job(SLEEPER)
    wait_finished(db, job_id)
    reason, code, text = ending(client, provider, job_id)
    assert (reason, code) == ("timed-out", None)
    assert "exceeding the time limit of 1 s" in text
    assert [entry["stopreq"] for entry in history(client, provider, job_id)][-1] == 2


def test_an_algorithm_stopped_by_put_was_stopped_by_request(client, db, provider, submit_job, start_engine):
    start_engine()
    job_id = submit_job(SLEEPER)
    wait_status(db, job_id, 40)
    client.put(COMPUTE, query_string={"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)})
    wait_finished(db, job_id)
    assert ending(client, provider, job_id) == (
        "stopped-by-request",
        None,
        "The algorithm was stopped on request (stopreq=1).",
    )
    changes = [(entry["status"], entry["stopreq"]) for entry in history(client, provider, job_id)]
    assert (40, 1) in changes, "the stop request is a change of its own, at the time it was made"


@pytest.mark.parametrize("failing", ["input", "algorithm"])
def test_a_job_whose_provisioning_failed_says_what_failed(client, db, provider, submit_job, start_engine, failing):
    start_engine()
    if failing == "input":
        job_id = submit_job("print('not run')", urls=[f"http://127.0.0.1:{free_port()}/gone.txt"])
    else:
        job_id = submit_job("")
    row = wait_finished(db, job_id)
    reason, code, text = ending(client, provider, job_id)
    assert (reason, code) == ("provisioning-failed", None)
    if failing == "input":
        assert row["status"] == 31 and text.startswith("Data provisioning failed: Input 0 failed:")
    else:
        assert row["status"] == 32 and text.startswith("Algorithm provisioning failed: Algorithm failed:")
    assert [entry["status"] for entry in history(client, provider, job_id)] == [1, 20, row["status"], row["status"]]


def test_a_job_cut_by_an_engine_restart_says_so(client, db, provider, submit_job, start_engine, work_dirs):
    work_dir = work_dirs()
    first = start_engine(work_dir=work_dir)
    job_id = submit_job(SLEEPER)
    wait_status(db, job_id, 40)
    log = first.job_data(job_id) / "logs" / "algorithm.log"
    wait_for(lambda: log.exists() and "started" in log.read_text(), "the algorithm to start")
    first.halt()
    assert status_via_api(client, provider, job_id)["endReason"] is None, "the job has not ended yet"

    start_engine(work_dir=work_dir)
    wait_finished(db, job_id)
    reason, code, text = ending(client, provider, job_id)
    assert (reason, code) == ("engine-restarted", None)
    assert text.startswith("The engine restarted while the algorithm was running")
