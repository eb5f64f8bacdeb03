"""Ocean's operator-engine and its pods, statement by statement, against our schema.

An unmodified engine pointed at our database must work: it announces, takes status-1
jobs of its namespace, writes 20 -> 30 -> 40 -> 60 -> 70, outputsURL and dateFinished.
The API must follow every step.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlparse

import pytest

from tests.conftest import OWNER, compute_body
from tests.ocean_engine import OceanEngine

STEPS = [
    (20, "Configuring volumes"),
    (30, "Provisioning success"),
    (40, "Running algorithm "),
    (60, "Publishing results"),
    (70, "Job finished"),
]


class Gateway(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"content of {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def gateway(http_stub) -> str:
    return http_stub(Gateway) + "/ipfs"


@pytest.fixture
def settings(make_settings, gateway):
    """The operator lets the service fetch results from the gateway the engine publishes to."""
    return make_settings(RESULT_URL_PREFIXES=json.dumps([gateway + "/"]))


def _status(client, provider, job_id):
    query = {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    [job] = client.get("/api/v1/operator/compute", query_string=query).get_json()
    return job


def _running_ids(client):
    return [job["jobId"] for job in client.get("/api/v1/operator/runningjobs").get_json()]


def test_a_job_through_every_engine_step(client, submit, provider, engine, gateway):
    [job] = submit().get_json()
    job_id = job["jobId"]
    assert engine.announce(limit=10) == [job_id]
    document = engine.workflow(job_id)
    assert document["metadata"]["labels"]["workflow"] == job_id and document["metadata"]["secret"]
    assert isinstance(document["spec"]["metadata"]["stages"][0]["compute"], dict)

    for status, text in STEPS[:-1]:
        engine.set_status(job_id, status, text)
        current = _status(client, provider, job_id)
        assert (current["status"], current["statusText"], current["dateFinished"]) == (status, text, None)
        assert job_id in _running_ids(client)
        assert engine.announce() == [], "a job taken by the engine is not handed out again"

    outputs = [
        {"filename": "result.txt", "filesize": 10, "url": f"{gateway}/cid/outputs/result.txt", "type": "output"},
        {
            "filename": "algorithm.log",
            "filesize": 5,
            "url": f"{gateway}/cid/logs/algorithm.log",
            "type": "algorithmLog",
        },
        {
            "filename": "configure.log",
            "filesize": 5,
            "url": f"{gateway}/cid/adminlogs/configure.log",
            "type": "configrationLog",
        },
    ]
    engine.publish(job_id, outputs)
    engine.set_status(job_id, *STEPS[-1])
    engine.finish(job_id)

    done = _status(client, provider, job_id)
    assert (done["status"], done["statusText"]) == (70, "Job finished")
    assert float(done["dateFinished"]) >= float(done["dateCreated"])
    assert done["results"] == [{key: value for key, value in item.items() if key != "url"} for item in outputs]
    assert job_id not in _running_ids(client)
    for index, item in enumerate(outputs):
        query = {"index": index, "jobId": job_id, "owner": OWNER, **provider.signed(OWNER, job_id)}
        response = client.get("/api/v1/operator/getResult", query_string=query)
        assert response.status_code == 200
        assert response.data == f"content of {urlparse(item['url']).path}".encode()


def test_an_engine_only_gets_jobs_of_its_namespace_within_its_limit(submit, engine, base_env):
    other = OceanEngine(engine.dsn, "other-env")
    other.announce()
    engine.announce()
    ids = [submit(compute_body(agreement_id=f"0x{i}"), announce=False).get_json()[0]["jobId"] for i in range(3)]
    assert other.announce() == []
    taken = engine.announce(limit=2)
    assert len(taken) == 2 and set(taken) <= set(ids)


def test_a_stop_request_reaches_the_engine_and_a_timeout_is_reported(client, submit, provider, engine):
    [job] = submit().get_json()
    job_id = job["jobId"]
    engine.set_status(job_id, 40, "Running algorithm ")
    query = {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}
    client.put("/api/v1/operator/compute", query_string=query)
    assert engine.read_stopreq(job_id) == 1

    [second] = submit(compute_body(agreement_id="0x2")).get_json()
    engine.set_timed_out(second["jobId"])
    assert _status(client, provider, second["jobId"])["stopreq"] == 2
    client.put(
        "/api/v1/operator/compute",
        query_string={"owner": OWNER, "jobId": second["jobId"], **provider.signed(OWNER, second["jobId"])},
    )
    assert engine.read_stopreq(second["jobId"]) == 2, "a stop request must not hide a timeout"


def test_the_engines_announce_document_is_listed(client, engine):
    engine.announce(maxJobs="4", currentJobs=1, desc="gpu box")
    [environment] = client.get("/api/v1/operator/environments").get_json()
    assert (environment["maxJobs"], environment["currentJobs"], environment["desc"]) == ("4", 1, "gpu box")
