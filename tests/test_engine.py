"""The local engine, end to end: jobs go through the API, the engine runs them, results download.

The engines, the input server and the helpers are in tests/engine_support.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from operator_service.engine.sandbox.uids import FIRST_UID
from operator_service.tools.embedded_db import free_port
from tests.conftest import OWNER
from tests.engine_support import (
    COMPUTE,
    COUNT_LINES,
    ENVIRONMENTS,
    SLEEPER,
    Inputs,
    get_result,
    job_row,
    published,
    read_published,
    running_as,
    status_via_api,
    wait_announces,
    wait_finished,
    wait_for,
    wait_status,
)

FAILING = """
import sys
print("boom: the algorithm failed", file=sys.stderr)
sys.exit(3)
"""

ENV_DUMP = """
import json, os
with open(os.path.join(os.environ["OUTPUTS"], "env.json"), "w") as out:
    json.dump({"env": dict(os.environ), "uid": os.getuid()}, out)
"""


def test_a_job_goes_from_queued_to_finished_and_its_result_downloads(
    client, db, provider, submit_job, start_engine, settings
):
    engine = start_engine()
    Inputs.gate.clear()  # hold the input download so that status 20 can be seen
    job_id = submit_job(COUNT_LINES)
    configuring = wait_status(db, job_id, 20)
    assert configuring["statusText"] == "Configuring volumes"
    Inputs.gate.set()

    row = wait_finished(db, job_id)
    assert (row["status"], row["statusText"], row["stopreq"]) == (70, "Job finished", 0)
    kinds = [entry["type"] for entry in row["outputs"]]
    assert kinds == ["output", "algorithmLog", "configrationLog", "publishLog"]
    results_dir = Path(settings.results_dir).resolve()
    for entry in row["outputs"]:
        assert entry["url"].startswith("file://")
        path = Path(entry["url"].removeprefix("file://"))
        assert results_dir in path.parents and path.stat().st_size == entry["filesize"]

    status = status_via_api(client, provider, job_id)
    assert status["status"] == 70 and status["dateFinished"]
    assert status["results"][0] == {"filename": "result.txt", "filesize": len(b"3 lines\n"), "type": "output"}
    download = get_result(client, provider, job_id, 0)
    assert download.status_code == 200
    assert download.get_data() == b"3 lines\n"
    assert "counted 3" in get_result(client, provider, job_id, 1).get_data(as_text=True)
    assert "Downloaded 17 bytes to inputs/" in read_published(row, "configrationLog")
    wait_for(lambda: not engine.job_folder(job_id).exists(), "the job folder to be removed once the job is finished")


def test_the_environment_is_announced_as_ocean_engines_announce_it(client, start_engine):
    start_engine(namespace="announced", max_jobs=3, max_job_duration=30.0)
    (environment,) = [env for env in client.get(ENVIRONMENTS).get_json() if env["id"] == "announced"]
    assert {
        key: environment[key]
        for key in ("cpuNumber", "ramGB", "diskGB", "maxJobs", "currentJobs", "maxJobDuration", "priceMin")
    } == {"cpuNumber": 1, "ramGB": 1, "diskGB": 1, "maxJobs": 3, "currentJobs": 0, "maxJobDuration": 30, "priceMin": 0}
    assert environment["consumerAddress"].startswith("0x") and len(environment["consumerAddress"]) == 42
    assert set(environment) == {
        "id",
        "cpuNumber",
        "cpuType",
        "gpuNumber",
        "gpuType",
        "ramGB",
        "diskGB",
        "priceMin",
        "desc",
        "currentJobs",
        "maxJobs",
        "consumerAddress",
        "storageExpiry",
        "maxJobDuration",
        "freeSlots",
        "freeDiskGB",
        "minFreeDiskGB",
        "lastSeen",
    }
    assert environment["freeSlots"] == 3 and environment["freeDiskGB"] >= environment["minFreeDiskGB"] == 1


def test_a_failing_algorithm_still_finishes_and_publishes_its_log(client, db, provider, submit_job, start_engine):
    start_engine()
    job_id = submit_job(FAILING)
    row = wait_finished(db, job_id)
    assert (row["status"], row["statusText"]) == (70, "Job finished")
    assert published(row, "output") == []
    (log_entry,) = [i for i, entry in enumerate(row["outputs"]) if entry["type"] == "algorithmLog"]
    log_text = get_result(client, provider, job_id, log_entry).get_data(as_text=True)
    assert "boom: the algorithm failed" in log_text
    assert "exited with code 3" in log_text


def test_an_unreachable_input_fails_data_provisioning(db, submit_job, start_engine):
    engine = start_engine(keep_job_folders=True)
    job_id = submit_job(COUNT_LINES, urls=[f"http://127.0.0.1:{free_port()}/gone.txt"])
    row = wait_finished(db, job_id)
    assert (row["status"], row["statusText"]) == (31, "Data provisioning failed")
    assert published(row, "output") == []
    configure_log = read_published(row, "configrationLog")
    assert "Input 0 failed" in configure_log and "moving to algo" not in configure_log
    assert engine.job_folder(job_id).exists(), "DEBUG_NO_CLEANUP keeps the job folder"


def test_an_algorithm_without_code_fails_algorithm_provisioning(db, submit_job, start_engine):
    start_engine()
    job_id = submit_job("")
    row = wait_finished(db, job_id)
    assert (row["status"], row["statusText"]) == (32, "Algorithm provisioning failed")
    assert "neither rawcode nor url" in read_published(row, "configrationLog")


def test_a_stop_request_kills_the_algorithm_within_seconds(client, db, provider, submit_job, start_engine):
    engine = start_engine()
    job_id = submit_job(SLEEPER)
    running = wait_status(db, job_id, 40)
    assert running["statusText"] == "Running algorithm "
    runs = engine.job_data(job_id) / "outputs" / "runs.txt"
    uid = int(wait_for(lambda: runs.exists() and runs.read_text().strip(), "the algorithm to start"))
    assert running_as(uid), "the algorithm runs as its job's uid"

    asked = time.monotonic()
    response = client.put(COMPUTE, query_string={"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)})
    assert response.status_code == 200
    row = wait_finished(db, job_id, timeout=5)
    assert time.monotonic() - asked < 5
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert "stopped on request" in read_published(row, "algorithmLog")
    assert published(row, "output")[0]["filename"] == "runs.txt"
    assert running_as(uid) == [], "no process of the job is left once it is finished"


def test_passing_max_job_duration_kills_the_algorithm_and_sets_stopreq_2(db, submit_job, start_engine):
    start_engine(max_job_duration=1.0)
    started = time.monotonic()
    job_id = submit_job(SLEEPER)
    row = wait_finished(db, job_id, timeout=10)
    assert time.monotonic() - started < 8
    assert (row["status"], row["stopreq"]) == (70, 2)
    assert "exceeding the time limit of 1 s" in read_published(row, "algorithmLog")
    assert [entry["filename"] for entry in published(row, "output")] == ["runs.txt"]


def test_an_engine_restart_ends_the_interrupted_job_without_running_it_again(db, submit_job, start_engine, work_dirs):
    work_dir = work_dirs()
    first = start_engine(work_dir=work_dir)
    job_id = submit_job(SLEEPER)
    wait_status(db, job_id, 40)
    runs = first.job_data(job_id) / "outputs" / "runs.txt"
    uid = int(wait_for(lambda: runs.exists() and runs.read_text().strip(), "the algorithm to start"))

    first.halt()
    left = job_row(db, job_id)
    assert (left["status"], left["dateFinished"]) == (40, None)
    assert running_as(uid) == []

    start_engine(work_dir=work_dir)
    row = wait_finished(db, job_id)
    assert (row["status"], row["statusText"], row["stopreq"]) == (70, "Job finished", 0)
    assert "engine restarted while the algorithm was running" in read_published(row, "algorithmLog")
    assert read_published(row, "output").split() == [str(uid)], "the algorithm must not run a second time"


def test_an_algorithm_dies_with_a_crashed_engine_and_the_next_engine_finishes_its_job(
    db, settings, submit_job, start_engine, work_dirs
):
    work_dir = work_dirs()
    postgres = settings.postgres
    env = {
        "PATH": os.environ["PATH"],
        "POSTGRES_HOST": postgres.host or "",
        "POSTGRES_PORT": str(postgres.port),
        "POSTGRES_USER": postgres.user or "",
        "POSTGRES_PASSWORD": postgres.password or "",
        "POSTGRES_DB": postgres.database or "",
        "ENGINE_NAMESPACE": "crashing",
        "ENGINE_WORK_DIR": str(work_dir),
        "RESULTS_DIR": settings.results_dir,
        "ENGINE_POLL_SECONDS": "0.1",
        "ENGINE_USE_DOCKER": "off",
    }
    crashing = subprocess.Popen(
        [sys.executable, "-m", "operator_service.engine"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_announces(db, "crashing", 1)
        job_id = submit_job(SLEEPER, environment="crashing")
        runs = work_dir / job_id / "data" / "outputs" / "runs.txt"
        uid = int(wait_for(lambda: runs.exists() and runs.read_text().strip(), "the algorithm to start"))
    finally:
        crashing.send_signal(signal.SIGKILL)
        crashing.wait()
    wait_for(lambda: running_as(uid) == [], "the algorithm to die with the engine that ran it", timeout=10)

    start_engine(namespace="crashing", work_dir=work_dir)
    row = wait_finished(db, job_id)
    assert (row["status"], row["statusText"]) == (70, "Job finished")
    assert "engine restarted while the algorithm was running" in read_published(row, "algorithmLog")
    assert read_published(row, "output").split() == [str(uid)]


def test_engines_of_two_environments_never_take_each_others_jobs(db, submit_job, start_engine):
    first = start_engine(namespace="env-a", keep_job_folders=True)
    second = start_engine(namespace="env-b", keep_job_folders=True)
    with db.transaction() as cur:
        cur.execute("SELECT * FROM announce('env-c', '{}', 0)")  # an environment with no engine running
    job_a = submit_job(COUNT_LINES, environment="env-a")
    job_b = submit_job(COUNT_LINES, environment="env-b")
    job_c = submit_job(COUNT_LINES, environment="env-c")

    assert wait_finished(db, job_a)["status"] == 70
    assert wait_finished(db, job_b)["status"] == 70
    wait_announces(db, "env-a")
    wait_announces(db, "env-b")
    assert job_row(db, job_c)["status"] == 1
    assert first.job_folder(job_a).exists() and not second.job_folder(job_a).exists()
    assert second.job_folder(job_b).exists() and not first.job_folder(job_b).exists()
    assert not first.job_folder(job_c).exists() and not second.job_folder(job_c).exists()


def test_an_engine_never_holds_more_than_max_jobs(client, db, provider, submit_job, start_engine):
    start_engine(namespace="small", max_jobs=2)
    jobs = [submit_job(SLEEPER, environment="small") for _ in range(3)]
    running = wait_for(
        lambda: (
            [j for j in jobs if job_row(db, j)["status"] == 40]
            if sum(job_row(db, j)["status"] == 40 for j in jobs) == 2
            else None
        ),
        "two running jobs",
    )
    wait_announces(db, "small")
    (waiting,) = [j for j in jobs if j not in running]
    assert job_row(db, waiting)["status"] == 1
    (environment,) = [env for env in client.get(ENVIRONMENTS).get_json() if env["id"] == "small"]
    assert (environment["currentJobs"], environment["maxJobs"]) == (2, 2)

    client.put(COMPUTE, query_string={"owner": OWNER, "jobId": running[0], **provider.signed(OWNER, running[0])})
    wait_finished(db, running[0])
    wait_status(db, waiting, 40)
    assert job_row(db, running[1])["status"] == 40


def test_the_algorithm_gets_only_the_pod_environment(db, submit_job, start_engine, monkeypatch):
    monkeypatch.setenv("POSTGRES_PASSWORD", "engine-secret-password")
    start_engine()
    job_id = submit_job(ENV_DUMP)
    row = wait_finished(db, job_id)
    seen = json.loads(read_published(row, "output"))
    env = seen["env"]
    assert "POSTGRES_PASSWORD" not in env
    assert set(env) - {"PWD"} == {
        "DIDS",
        "TRANSFORMATION_DID",
        "VOLUME",
        "LOGS",
        "INPUTS",
        "OUTPUTS",
        "secret",
        "PATH",
        "HOME",
        "LANG",
    }
    assert (env["VOLUME"], env["INPUTS"], env["OUTPUTS"], env["LOGS"], env["HOME"]) == (
        "/data",
        "/data/inputs",
        "/data/outputs",
        "/data/logs",
        "/tmp",
    ), "the paths Ocean's algorithm pod sees"
    stage = row["workflow"]["spec"]["metadata"]["stages"][0]
    assert json.loads(env["DIDS"]) == [stage["input"][0]["id"].removeprefix("did:op:")]
    assert env["TRANSFORMATION_DID"] == stage["algorithm"]["id"]
    assert env["secret"] == row["workflow"]["metadata"]["secret"] and env["secret"]
    assert seen["uid"] >= FIRST_UID, "a uid of the job's own"


def test_get_result_refuses_a_file_url_outside_the_results_folder(client, db, provider, submit_job, settings):
    with db.transaction() as cur:
        cur.execute("SELECT * FROM announce('ocean-compute', '{}', 0)")
    job_id = submit_job(COUNT_LINES)
    results_dir = Path(settings.results_dir).resolve()
    outside = results_dir.parent / f"outside-{job_id}.txt"
    outside.write_text("not a result")
    inside = results_dir / job_id / "outputs" / "result.txt"
    inside.parent.mkdir(parents=True)
    inside.write_text("a result")
    entries = [
        {"filename": "passwd", "filesize": 1, "type": "output", "url": "file:///etc/passwd"},
        {"filename": "o", "filesize": 1, "type": "output", "url": f"file://{results_dir}/../{outside.name}"},
        {"filename": "result.txt", "filesize": 8, "type": "output", "url": inside.as_uri()},
    ]
    with db.transaction() as cur:
        cur.execute("UPDATE jobs SET outputsURL = %s WHERE workflowId = %s", (json.dumps(entries), job_id))

    for index in (0, 1):
        response = get_result(client, provider, job_id, index)
        assert response.status_code == 403
        assert b"not a result" not in response.get_data() and b"root:" not in response.get_data()
    allowed = get_result(client, provider, job_id, 2)
    assert (allowed.status_code, allowed.get_data()) == (200, b"a result")
