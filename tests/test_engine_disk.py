"""The local engine keeps the disk from filling: results expire, and no job is taken below the floor.

Jobs go through the API and a real engine runs them (tests/engine_support.py); what is on
the disk is checked from the host.
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import OWNER
from tests.engine_support import (
    COMPUTE,
    COUNT_LINES,
    ENVIRONMENTS,
    SLEEPER,
    get_result,
    job_row,
    status_via_api,
    wait_announces,
    wait_finished,
    wait_for,
)

EXPIRY = 5  # seconds: long enough to see the results kept, short enough to wait for


def results_folder(settings, job_id: str) -> Path:
    return Path(settings.results_dir) / job_id


def expiry_dates(db, job_id: str) -> tuple:
    with db.transaction() as cur:
        cur.execute("SELECT dateFinished, dateResultsExpired FROM jobs WHERE workflowId = %s", (job_id,))
        return cur.fetchone()


def environment(client, namespace: str) -> dict:
    (found,) = [env for env in client.get(ENVIRONMENTS).get_json() if env["id"] == namespace]
    return found


def test_results_and_kept_job_folders_are_deleted_storage_expiry_after_the_job_finished(
    client, db, provider, settings, submit_job, start_engine, admin_headers
):
    engine = start_engine(storage_expiry=EXPIRY, keep_job_folders=True)
    job_id = submit_job(COUNT_LINES)
    wait_finished(db, job_id)
    kept = get_result(client, provider, job_id, 0)
    assert (kept.status_code, kept.get_data()) == (200, b"3 lines\n")
    before = status_via_api(client, provider, job_id)
    assert before["dateResultsExpired"] is None and "expired" not in before["results"][0]

    wait_for(lambda: not results_folder(settings, job_id).exists(), "the results to expire", timeout=EXPIRY + 15)
    assert not engine.job_folder(job_id).exists(), "the job folder DEBUG_NO_CLEANUP kept expires with the results"
    finished, expired = expiry_dates(db, job_id)
    assert (expired - finished).total_seconds() >= EXPIRY

    after = status_via_api(client, provider, job_id)
    assert float(after["dateResultsExpired"]) >= float(after["dateFinished"]) + EXPIRY
    assert after["results"] == [{**entry, "expired": True} for entry in before["results"]]
    unchanged = [key for key in before if key not in ("results", "dateResultsExpired")]
    assert {key: after[key] for key in unchanged} == {key: before[key] for key in unchanged}
    gone = get_result(client, provider, job_id, 0)
    assert gone.status_code == 410
    assert "expired" in gone.get_json()["error"] and job_id in gone.get_json()["error"]
    inspected = client.get("/api/v1/operator/job", query_string={"jobId": job_id}, headers=admin_headers).get_json()
    assert inspected["dateResultsExpired"] == after["dateResultsExpired"]
    *earlier, expiry = inspected["history"]
    assert expiry["dateResultsExpired"] == after["dateResultsExpired"] and expiry["status"] == 70
    assert all(entry["dateResultsExpired"] is None for entry in earlier), "only the deletion records it"


def test_a_running_job_is_never_touched_by_the_sweeps(client, db, provider, settings, submit_job, start_engine):
    engine = start_engine(storage_expiry=1)
    running = submit_job(SLEEPER)
    runs = engine.job_data(running) / "outputs" / "runs.txt"
    wait_for(lambda: runs.exists() and runs.read_text().strip(), "the algorithm to start")
    finished = submit_job(COUNT_LINES)
    wait_finished(db, finished)
    wait_for(lambda: expiry_dates(db, finished)[1], "a job that finished meanwhile to expire")
    wait_for(lambda: not results_folder(settings, finished).exists(), "its results to be deleted")

    wait_announces(db, "ocean-compute")
    assert job_row(db, running)["status"] == 40 and expiry_dates(db, running)[1] is None
    assert runs.read_text().strip(), "the running job's folder is intact"

    client.put(COMPUTE, query_string={"owner": OWNER, "jobId": running, **provider.signed(OWNER, running)})
    wait_finished(db, running)
    wait_for(lambda: expiry_dates(db, running)[1], "the stopped job's results to expire once it finished")
    finished_at, expired_at = expiry_dates(db, running)
    assert (expired_at - finished_at).total_seconds() >= 1


def test_expiry_is_decided_from_the_database_across_restarts(
    client, db, provider, settings, submit_job, start_engine, work_dirs
):
    work_dir = work_dirs()
    first = start_engine(work_dir=work_dir, keep_job_folders=True)
    job_id = submit_job(COUNT_LINES)
    wait_finished(db, job_id)
    first.halt()
    assert results_folder(settings, job_id).exists() and first.job_folder(job_id).exists()

    start_engine(work_dir=work_dir, keep_job_folders=True, storage_expiry=1)
    wait_for(lambda: expiry_dates(db, job_id)[1], "the job an earlier engine ran to expire")
    wait_for(lambda: not results_folder(settings, job_id).exists(), "its results to be deleted")
    assert not first.job_folder(job_id).exists()
    assert get_result(client, provider, job_id, 0).status_code == 410


def test_folders_of_jobs_recorded_as_expired_are_deleted_at_the_next_start(
    db, settings, submit_job, start_engine, work_dirs
):
    work_dir = work_dirs()
    first = start_engine(work_dir=work_dir, keep_job_folders=True)
    job_id = submit_job(COUNT_LINES)
    wait_finished(db, job_id)
    first.halt()
    with db.transaction() as cur:  # as an engine killed between recording the expiry and deleting leaves it
        cur.execute("UPDATE jobs SET dateResultsExpired = timezone('UTC', now()) WHERE workflowId = %s", (job_id,))

    start_engine(work_dir=work_dir, keep_job_folders=True, storage_expiry=3600)
    wait_for(lambda: not results_folder(settings, job_id).exists(), "the leftover results to be deleted")
    assert not first.job_folder(job_id).exists()


def test_below_the_free_space_floor_jobs_stay_queued_until_space_returns(
    client, db, submit_job, start_engine, work_dirs
):
    work_dir = work_dirs()
    full = start_engine(namespace="full-disk", work_dir=work_dir, min_free_gb=1e9, max_jobs=3)
    announced = environment(client, "full-disk")
    assert announced["freeSlots"] == 0 and announced["currentJobs"] == 0 and announced["maxJobs"] == 3
    assert 0 < announced["freeDiskGB"] < announced["minFreeDiskGB"] == 1e9
    job_id = submit_job(COUNT_LINES, environment="full-disk")
    wait_announces(db, "full-disk")
    row = job_row(db, job_id)
    assert (row["status"], row["dateFinished"]) == (1, None), "queued, not failed"
    full.halt()

    start_engine(namespace="full-disk", work_dir=work_dir, min_free_gb=0.0, max_jobs=3)
    assert wait_finished(db, job_id)["status"] == 70
    again = wait_for(
        lambda: (env := environment(client, "full-disk"))["currentJobs"] == 0 and env, "the job's slot to be free"
    )
    assert again["freeSlots"] == 3 and again["freeDiskGB"] >= again["minFreeDiskGB"] == 0
