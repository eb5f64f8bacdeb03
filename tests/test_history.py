"""Each job's history and why it ended, as the service records and shows them: changes made by
the service and by Ocean's engine (its own SQL, tests/ocean_engine.py) are recorded by the
database; the owner reads them through the signed GET /history, admins through GET /jobs and
GET /job; the reason of a job Ocean's engine finished is derived from its status and stopreq.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import OWNER, Provider, compute_body

API = "/api/v1/operator"
ENDING_KEYS = ["endReason", "endReasonText", "exitCode"]


def history(client, provider: Provider, job_id: str, owner: str = OWNER):
    return client.get(
        f"{API}/history", query_string={"owner": owner, "jobId": job_id, **provider.signed(owner, job_id)}
    )


def status(client, provider: Provider, job_id: str) -> dict:
    query = {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    return client.get(f"{API}/compute", query_string=query).get_json()[0]


def start(submit, agreement_id: str = "0x0", owner: str = OWNER) -> str:
    response = submit(compute_body(owner=owner, agreement_id=agreement_id))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()[0]["jobId"]


def test_every_change_by_the_service_and_by_oceans_engine_is_recorded_with_its_time(client, provider, submit, engine):
    before = time.time()
    job_id = start(submit)
    assert status(client, provider, job_id)["endReason"] is None, "no reason while the job runs"
    engine.set_status(job_id, 20, "Configuring volumes")
    engine.set_status(job_id, 30, "Provisioning success")
    engine.set_status(job_id, 40, "Running algorithm ")
    stop = client.put(
        f"{API}/compute", query_string={"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    )
    assert stop.status_code == 200
    engine.set_status(job_id, 40, "Running algorithm ")  # no change: not recorded
    engine.set_status(job_id, 70, "Job finished")
    engine.finish(job_id)

    response = history(client, provider, job_id)
    assert response.status_code == 200
    entries = response.get_json()
    assert [(e["status"], e["statusText"], e["stopreq"]) for e in entries] == [
        (1, "Warming up", 0),
        (20, "Configuring volumes", 0),
        (30, "Provisioning success", 0),
        (40, "Running algorithm ", 0),
        (40, "Running algorithm ", 1),
        (70, "Job finished", 1),
        (70, "Job finished", 1),
    ]
    assert [e["changedBy"] for e in entries] == ["operator-service", None, None, None, "operator-service", None, None]
    times = [float(e["time"]) for e in entries]
    assert times == sorted(times) and before - 1 <= times[0] <= times[-1] <= time.time() + 1
    assert [e["dateFinished"] is not None for e in entries] == [False] * 6 + [True]
    assert [e["endReason"] for e in entries] == [None] * 6 + ["stopped-by-request"]
    final = status(client, provider, job_id)
    assert (final["endReason"], final["exitCode"]) == ("stopped-by-request", None)
    assert final["endReasonText"] == entries[-1]["endReasonText"] == "The job was stopped on request (stopreq=1)."


def test_the_status_object_keeps_its_keys_and_adds_why_the_job_ended(client, provider, submit):
    job_id = start(submit)
    assert list(status(client, provider, job_id))[12:15] == ENDING_KEYS


@pytest.mark.parametrize(
    "status_code, text, timed_out, reason",
    [
        (70, "Job finished", False, "finished"),
        (70, "Job finished", True, "timed-out"),
        (31, "Data provisioning failed", False, "provisioning-failed"),
        (32, "Algorithm provisioning failed", False, "provisioning-failed"),
        (40, "Running algorithm ", False, "unknown"),
    ],
)
def test_the_reason_of_a_job_oceans_engine_ended_is_derived_from_its_status_and_stopreq(
    client, provider, submit, engine, status_code, text, timed_out, reason
):
    job_id = start(submit)
    engine.set_status(job_id, status_code, text)
    if timed_out:
        engine.set_timed_out(job_id)
    assert status(client, provider, job_id)["endReason"] is None, "not finished yet"
    engine.finish(job_id)
    answer = status(client, provider, job_id)
    assert answer["endReason"] == reason and answer["endReasonText"]
    assert history(client, provider, job_id).get_json()[-1]["endReason"] == reason


def test_only_the_owner_reads_a_history_in_any_letter_case(client, provider, submit):
    job_id = start(submit)
    assert history(client, provider, job_id, OWNER.lower()).status_code == 200
    other = "0x" + "ab" * 20
    refused = history(client, provider, job_id, other)
    assert refused.status_code == 404
    assert refused.get_json() == {"error": f"No job {job_id} of owner {other}"}
    assert history(client, provider, "f" * 32).status_code == 404


def test_the_history_route_is_signed_like_get_compute(client, make_app, provider, submit):
    job_id = start(submit)
    query = {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    assert client.get(f"{API}/history", query_string=query).status_code == 200
    missing = client.get(f"{API}/history", query_string={"owner": OWNER, **provider.signed(OWNER)})
    assert (missing.status_code, missing.get_json()) == (
        400,
        {"error": '"jobId" is required in the call to GET:/history'},
    )
    forged = {**query, **provider.signed(OWNER, "another-job")}
    strict_client = make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS=f'["{provider.address}"]').test_client()
    assert strict_client.get(f"{API}/history", query_string=forged).status_code == 401
    fresh = {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    assert strict_client.get(f"{API}/history", query_string=fresh).status_code == 200
    assert strict_client.get(f"{API}/history", query_string=fresh).status_code == 401, "a nonce is used once"
    stranger = Provider("0x" + "4e" * 32)
    other = make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS=f'["{stranger.address}"]')
    query = {"owner": OWNER, "jobId": job_id, **stranger.signed(OWNER, job_id)}
    assert other.test_client().get(f"{API}/history", query_string=query).status_code == 404


def test_a_registration_under_way_is_not_in_the_history(cluster_app, provider, engine, fake_kube):
    client = cluster_app.test_client()
    engine.announce()
    body = {**compute_body(), **provider.signed(OWNER)}
    [job] = client.post(f"{API}/compute", json=body).get_json()
    entries = history(client, provider, job["jobId"]).get_json()
    assert [entry["status"] for entry in entries] == [1], "status 0 (registering) is never shown"


def test_admins_list_jobs_by_owner_status_environment_and_time_a_page_at_a_time(
    client, submit, engine, admin_headers, db
):
    other = "0x" + "cd" * 20
    jobs = [start(submit, f"0x{n}") for n in range(5)]
    with db.transaction() as cur:
        cur.execute("UPDATE jobs SET dateCreated = dateCreated - interval '2 days' WHERE workflowId = %s", (jobs[0],))
    mine_elsewhere = start(submit, "0x9", owner=other)
    engine.set_status(jobs[1], 70, "Job finished")

    def listed(**query) -> list[str]:
        response = client.get(f"{API}/jobs", query_string=query, headers=admin_headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return [job["jobId"] for job in response.get_json()]

    newest_first = [mine_elsewhere, *reversed(jobs)]
    assert listed() == newest_first
    assert listed(owner=other.upper().replace("0X", "0x")) == [mine_elsewhere]
    assert listed(status=70) == [jobs[1]]
    assert listed(environment="ocean-compute") == newest_first and listed(environment="elsewhere") == []
    yesterday = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 86400))
    assert listed(since=yesterday) == newest_first[:-1]
    assert listed(since=str(time.time() - 86400)) == newest_first[:-1]
    assert listed(limit=2) + listed(limit=2, offset=2) + listed(limit=2, offset=4) == newest_first
    [summary] = client.get(f"{API}/jobs", query_string={"status": 70}, headers=admin_headers).get_json()
    assert summary["environment"] == "ocean-compute" and summary["endReason"] is None


@pytest.mark.parametrize(
    "query, error",
    [
        ({"limit": 0}, '"limit" must be a whole number from 1 to 1000'),
        ({"offset": -1}, '"offset" must be a whole number from 0'),
        ({"status": "done"}, '"status" must be a whole number'),
        ({"since": "yesterday"}, '"since" must be epoch seconds or an ISO 8601 date'),
        ({"since": "-5"}, '"since" must be a time between 1970 and 9999'),
    ],
)
def test_a_bad_filter_of_the_listing_is_a_400_naming_it(client, admin_headers, query, error):
    response = client.get(f"{API}/jobs", query_string=query, headers=admin_headers)
    assert response.status_code == 400
    assert response.get_json()["error"].startswith(error)


def test_admins_inspect_one_job_with_its_history_but_never_its_document(client, submit, engine, admin_headers):
    job_id = start(submit)
    engine.set_status(job_id, 31, "Data provisioning failed")
    engine.publish(job_id, [{"filename": "r.txt", "filesize": 1, "url": "https://storage.example/r", "type": "output"}])
    engine.finish(job_id)
    response = client.get(f"{API}/job", query_string={"jobId": job_id}, headers=admin_headers)
    assert response.status_code == 200
    job = response.get_json()
    assert (job["jobId"], job["status"], job["endReason"]) == (job_id, 31, "provisioning-failed")
    assert job["results"][0]["url"] == "https://storage.example/r"
    assert [entry["status"] for entry in job["history"]] == [1, 31, 31]
    assert engine.workflow(job_id)["metadata"]["secret"] not in response.get_data(as_text=True)
    assert client.get(f"{API}/job", query_string={"jobId": "f" * 32}, headers=admin_headers).status_code == 404
    assert client.get(f"{API}/job", query_string={"jobId": job_id}).status_code == 401
    assert client.get(f"{API}/jobs").status_code == 401
