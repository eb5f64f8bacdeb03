"""POST/PUT/DELETE/GET /compute and /runningjobs: success paths and the original's error texts."""

from __future__ import annotations

import json
import time

from operator_service.domain.signatures import sign_provider_message
from tests.conftest import OWNER, compute_body

COMPUTE = "/api/v1/operator/compute"
STATUS_KEYS = [
    "agreementId",
    "jobId",
    "owner",
    "status",
    "statusText",
    "dateCreated",
    "dateFinished",
    "results",
    "stopreq",
    "removed",
    "algoDID",
    "inputDID",
]
ENDING_KEYS = ["endReason", "endReasonText", "exitCode"]
EXPIRY_KEYS = ["dateResultsExpired"]


def test_post_creates_a_queued_job_with_the_original_status_object(submit, engine):
    response = submit()
    assert response.status_code == 200
    assert response.headers["Connection"] == "close"
    [job] = response.get_json()
    assert list(job) == STATUS_KEYS + ENDING_KEYS + EXPIRY_KEYS, (
        "the original's keys, in order; why the job ended, and whether its results expired, after them"
    )
    body = compute_body()
    assert job["agreementId"] == "0x0"
    assert job["owner"] == OWNER
    assert len(job["jobId"]) == 32 and int(job["jobId"], 16) >= 0
    assert (job["status"], job["statusText"]) == (1, "Warming up")
    assert job["results"] == "" and job["dateFinished"] is None and job["dateResultsExpired"] is None
    assert (job["stopreq"], job["removed"]) == (0, 0)
    assert job["algoDID"] == body["workflow"]["stages"][0]["algorithm"]["id"]
    assert job["inputDID"] == [body["workflow"]["stages"][0]["input"][0]["id"]]
    assert isinstance(job["dateCreated"], str)
    assert abs(float(job["dateCreated"]) - time.time()) < 60, "dateCreated must be a UTC epoch"
    assert engine.announce() == [job["jobId"]]


def test_post_stores_the_workflow_document_the_engine_needs(submit, engine):
    [job] = submit().get_json()
    document = engine.workflow(job["jobId"])
    assert document["apiVersion"] == "oceanprotocol.com/v1alpha"
    assert document["kind"] == "WorkFlow"
    assert document["metadata"]["name"] == job["jobId"]
    assert document["metadata"]["namespace"] == "ocean-compute"
    assert document["metadata"]["labels"] == {"workflow": job["jobId"]}
    assert len(document["metadata"]["secret"]) == 32
    stage = document["spec"]["metadata"]["stages"][0]
    assert stage["algorithm"]["container"]["image"] == "node"
    assert document["spec"]["metadata"]["chainId"] == 8996


def test_post_records_the_provider_that_signed(submit, provider, db):
    [job] = submit().get_json()
    with db.transaction() as cur:
        cur.execute("SELECT provider FROM jobs WHERE workflowId = %s", (job["jobId"],))
        assert cur.fetchone()[0] == provider.address


def post_raw(client, provider, body):
    return client.post(COMPUTE, json=body)


def test_post_error_texts(client, engine, provider):
    engine.announce()
    assert client.post(COMPUTE, json={}).get_json() == {"error": "payload seems empty."}
    for key in ["workflow", "agreementId", "owner", "providerSignature", "environment", "nonce"]:
        body = compute_body()
        body.update(provider.signed(OWNER))
        del body[key]
        response = client.post(COMPUTE, json=body)
        assert response.status_code == 400
        assert response.get_json() == {"error": f'"{key}" is required in the call to POST:/compute'}


def _signed_body(provider, **changes):
    body = compute_body()
    body.update(changes)
    body.update(provider.signed(body["owner"]))
    return body


def test_post_workflow_and_stage_errors(client, engine, provider):
    engine.announce()
    cases = [
        ({"workflow": {}}, "`workflow` is required in the payload and must include workflow stages"),
        ({"workflow": {"stages": []}}, "Missing stages"),
        ({"workflow": {"stages": [{}, {}]}}, "Multiple stages are not supported yet"),
        ({"environment": "nowhere"}, "Environment invalid or does not exist"),
    ]
    for changes, text in cases:
        response = client.post(COMPUTE, json=_signed_body(provider, **changes))
        assert (response.status_code, response.get_json()) == (400, {"error": text})
    for part in ["algorithm", "compute", "input", "output"]:
        body = _signed_body(provider)
        del body["workflow"]["stages"][0][part]
        response = client.post(COMPUTE, json=body)
        assert response.get_json() == {"error": f"Missing {part} in stage 0"}


def test_duplicate_running_agreement_is_refused_until_the_job_finishes(submit, engine):
    [first] = submit().get_json()
    again = submit()
    assert again.status_code == 400
    assert again.get_json() == {"error": "`agreementId` already in use for other job."}
    engine.finish(first["jobId"])
    assert submit().status_code == 200


def test_environment_chain_filter_compares_as_text(client, engine, provider):
    engine.announce(allowedChainId=["8996"])
    assert client.post(COMPUTE, json=_signed_body(provider)).status_code == 200
    engine.announce(allowedChainId=[1])
    response = client.post(COMPUTE, json=_signed_body(provider, agreementId="0x1"))
    assert response.get_json() == {"error": "Environment invalid or does not exist"}


def test_put_requests_a_stop(client, submit, provider):
    [job] = submit().get_json()
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    response = client.put(COMPUTE, query_string=query)
    assert response.status_code == 200
    [stopped] = response.get_json()
    assert stopped["jobId"] == job["jobId"] and stopped["stopreq"] == 1


def test_put_without_job_id_signs_owner_and_nonce(client, submit, provider):
    submit()
    response = client.put(COMPUTE, query_string={"owner": OWNER, **provider.signed(OWNER)})
    assert [job["stopreq"] for job in response.get_json()] == [1]


def test_put_error_texts(client, provider):
    assert client.put(COMPUTE, json={}).get_json() == {"error": "payload seems empty."}
    for key in ["owner", "providerSignature", "nonce"]:
        query = {"owner": OWNER, **provider.signed(OWNER)}
        del query[key]
        response = client.put(COMPUTE, query_string=query)
        assert response.get_json() == {"error": f'"{key}" is required in the call to PUT:/compute'}
    response = client.put(COMPUTE, query_string={"owner": "x", **provider.signed("x")})
    assert response.get_json() == {"error": "You have to specify one of agreementId, jobId or owner"}


def test_delete_is_signed_and_removes_and_stops_running_jobs(client, submit, provider, engine):
    [job] = submit().get_json()
    unsigned = client.delete(COMPUTE, query_string={"owner": OWNER, "jobId": job["jobId"]})
    assert unsigned.status_code == 400
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    response = client.delete(COMPUTE, query_string=query)
    assert response.status_code == 200
    [removed] = response.get_json()
    assert (removed["removed"], removed["stopreq"]) == (1, 1)
    assert engine.read_stopreq(job["jobId"]) == 1


def test_delete_does_not_request_a_stop_of_a_finished_job(client, submit, provider, engine):
    [job] = submit().get_json()
    engine.finish(job["jobId"])
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    [removed] = client.delete(COMPUTE, query_string=query).get_json()
    assert (removed["removed"], removed["stopreq"]) == (1, 0)


def test_get_status_by_each_filter(client, submit, provider):
    [job] = submit().get_json()
    for query in (
        {"owner": OWNER},
        {"jobId": job["jobId"], "owner": OWNER},
        {"agreementId": "0x0", "owner": OWNER},
    ):
        query.update(provider.signed(OWNER, query.get("jobId")))
        response = client.get(COMPUTE, query_string=query)
        assert response.status_code == 200
        assert [item["jobId"] for item in response.get_json()] == [job["jobId"]]


def test_get_status_filters_are_and_ed(client, submit, provider):
    submit()
    query = {"owner": OWNER, "agreementId": "0xother", **provider.signed(OWNER)}
    assert client.get(COMPUTE, query_string=query).get_json() == []


def test_get_status_needs_a_filter(client, provider):
    expected = {"error": "You have to specify one of agreementId, jobId or owner"}
    assert client.get(COMPUTE).get_json() == expected
    assert client.get(COMPUTE, data="null", content_type="application/json").get_json() == expected
    response = client.get(COMPUTE, query_string={"nonce": "1", "providerSignature": "0x00"})
    assert response.get_json() == expected


def test_get_status_with_an_unreadable_signature(client):
    response = client.get(COMPUTE, query_string={"owner": OWNER, "nonce": "1", "providerSignature": "0x1234"})
    assert (response.status_code, response.get_json()) == (400, {"error": "Failed to recover address"})


def test_running_jobs_lists_unfinished_jobs_only(client, submit, engine):
    [job] = submit().get_json()
    response = client.get("/api/v1/operator/runningjobs")
    [running] = response.get_json()
    assert list(running) == [
        "agreementId",
        "jobId",
        "owner",
        "status",
        "statusText",
        "dateCreated",
        "namespace",
        "algoDID",
        "inputDID",
    ]
    assert running["jobId"] == job["jobId"] and running["namespace"] == "ocean-compute"
    engine.finish(job["jobId"])
    assert client.get("/api/v1/operator/runningjobs").get_json() == []


def test_raw_algorithm_without_id_reports_raw(submit):
    body = compute_body()
    del body["workflow"]["stages"][0]["algorithm"]["id"]
    [job] = submit(body).get_json()
    assert job["algoDID"] == "raw"


def test_non_text_dids_keep_their_json_type(submit, client):
    body = compute_body()
    body["workflow"]["stages"][0]["algorithm"]["id"] = 5
    [job] = submit(body).get_json()
    assert (job["algoDID"], job["inputDID"]) == (5, [body["workflow"]["stages"][0]["input"][0]["id"]])
    [running] = client.get("/api/v1/operator/runningjobs").get_json()
    assert running["algoDID"] == 5


def test_rows_written_before_the_did_columns_get_their_dids_from_the_workflow(client, submit, provider, db):
    [job] = submit().get_json()
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET algoDID = NULL, inputDIDs = NULL, workflow = %s WHERE workflowId = %s",
            (
                json.dumps(
                    {
                        "spec": {
                            "metadata": {
                                "stages": [
                                    {
                                        "algorithm": {"id": "did:op:old"},
                                        "input": [{"id": "did:op:a"}, {"id": "did:op:b"}],
                                    }
                                ]
                            }
                        }
                    }
                ),
                job["jobId"],
            ),
        )
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    [status] = client.get(COMPUTE, query_string=query).get_json()
    [running] = client.get("/api/v1/operator/runningjobs").get_json()
    for answer in (status, running):
        assert (answer["algoDID"], answer["inputDID"]) == ("did:op:old", ["did:op:a", "did:op:b"])


def test_json_body_parameters_work_for_get(client, submit, provider):
    [job] = submit().get_json()
    body = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    response = client.get(COMPUTE, data=json.dumps(body), content_type="application/json")
    assert [item["jobId"] for item in response.get_json()] == [job["jobId"]]


def test_a_signature_made_with_a_27_28_v_byte_is_accepted(client, submit, provider):
    assert submit().status_code == 200
    nonce = str(time.time_ns())
    signature = bytearray.fromhex(sign_provider_message(provider.private_key, f"{OWNER}{nonce}")[2:])
    signature[64] += 27
    query = {"owner": OWNER, "nonce": nonce, "providerSignature": "0x" + signature.hex()}
    assert client.get(COMPUTE, query_string=query).status_code == 200


def test_put_leaves_a_finished_job_alone(client, submit, provider, engine):
    [job] = submit().get_json()
    engine.finish(job["jobId"])
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    [after] = client.put(COMPUTE, query_string=query).get_json()
    assert after["stopreq"] == 0 and engine.read_stopreq(job["jobId"]) == 0


def test_get_by_owner_answers_newest_first_at_most_1000_jobs(client, provider, db):
    with db.cursor() as cur:
        cur.execute(
            "INSERT INTO jobs (agreementId, workflowId, owner, status, statusText, dateCreated, namespace)"
            " SELECT 'a' || i, 'job' || i, %s, 70, 'Job finished',"
            " timezone('UTC', now()) - make_interval(secs => i), 'ocean-compute'"
            " FROM generate_series(1, 1005) AS i",
            (OWNER,),
        )
    response = client.get(COMPUTE, query_string={"owner": OWNER, **provider.signed(OWNER)})
    ids = [job["jobId"] for job in response.get_json()]
    assert ids == [f"job{i}" for i in range(1, 1001)]
