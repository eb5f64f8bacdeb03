"""The spec's status codes are the ones the routes answer.

Every status code each operation documents is provoked here, from outside, and the table
of provocations must cover exactly the documented codes: a code documented but never
answered, or answered but not documented (the fuzz test checks that direction for
generated input), fails.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from operator_service.tools.embedded_db import free_port
from tests.conftest import ADMIN_SECRET, OWNER, Provider
from tests.stub_http import allowing

API = "/api/v1/operator"
ADMIN = {"Admin": ADMIN_SECRET}
BIG = json.dumps({"owner": "a" * (2 * 1024 * 1024)})


@dataclass
class World:
    """The clients and data the provocations need."""

    client: object  # the service, database up, no cluster
    down: object  # the service with its database unreachable
    cluster: object  # the service with a (fake) cluster
    slow: object  # the service with a result timeout of 0.5 s
    strict: object  # the service with SIGNATURE_REQUIRED=1 and another Provider listed
    provider: Provider
    job: dict  # a job with results published at `storage`
    bare_job: dict  # a job without results
    expired_job: dict  # a job whose results the engine deleted when they expired
    storage: str

    def signed(self, owner: str = OWNER, job_id: str = "") -> dict:
        return {"owner": owner, **({"jobId": job_id} if job_id else {}), **self.provider.signed(owner, job_id or None)}

    def result(self, client=None, index: int = 0, job: dict | None = None, **headers):
        job = job or self.job
        query = {"index": index, **self.signed(job["owner"], job["jobId"])}
        return (client or self.client).get(f"{API}/getResult", query_string=query, headers=headers)


def _publish(engine, job_id: str, *urls: str) -> None:
    engine.publish(job_id, [{"filename": "r.txt", "filesize": 1, "url": url, "type": "output"} for url in urls])


@pytest.fixture
def world(make_app, db, engine, provider, cluster_app, storage, fake_kube, results_dir) -> Iterator[World]:
    gone = f"http://127.0.0.1:{free_port()}"  # result storage that is not there
    local = results_dir / "spec-job" / "r.txt"  # a result the local engine published
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_bytes(b"local result")
    apps = [
        make_app(**allowing(storage, gone), **overrides)
        for overrides in (
            {},
            {"POSTGRES_HOST": "127.0.0.1", "POSTGRES_PORT": str(free_port())},
            {"RESULT_TIMEOUT": "0.5"},
            {"SIGNATURE_REQUIRED": "1", "ALLOWED_PROVIDERS": '["0x1"]'},
        )
    ]
    client, down, slow, strict = (app.test_client() for app in apps)
    engine.announce()
    jobs = []
    for agreement in ("0x1", "0x2", "0x3"):
        body = {
            "agreementId": agreement,
            "owner": OWNER,
            "environment": "ocean-compute",
            "workflow": {"stages": [{"index": 0, "input": [], "algorithm": {}, "compute": {}, "output": {}}]},
            **provider.signed(OWNER),
        }
        [job] = cluster_app.test_client().post(f"{API}/compute", json=body).get_json()
        jobs.append(job)
    _publish(
        engine,
        jobs[0]["jobId"],
        f"{storage}/r.txt",
        f"{storage}/slow.txt",
        f"{storage}/missing.txt",
        f"{gone}/r.txt",
        "ftp://storage.example/r.txt",
        local.as_uri(),
    )
    _publish(engine, jobs[2]["jobId"], local.as_uri())
    with db.transaction() as cur:  # as the local engine records it when it deletes them
        cur.execute(
            "UPDATE jobs SET dateFinished = now(), dateResultsExpired = now() WHERE workflowId = %s",
            (jobs[2]["jobId"],),
        )
    fake_kube.add_pod("ocean-compute", "algo-pod", {"workflow": jobs[0]["jobId"], "component": "algorithm"}, "log text")
    yield World(client, down, cluster_app.test_client(), slow, strict, provider, *jobs, storage)


def _compute(method: str) -> dict[int, Callable[[World], object]]:
    """The provocations shared by POST, PUT, DELETE and GET /compute."""

    def call(w: World, client=None, **kwargs):
        return (client or w.client).open(f"{API}/compute", method=method, **kwargs)

    def ok(w: World):
        if method == "POST":
            return call(w, json={**_post_body("0x9"), **w.signed()})
        return call(w, query_string=w.signed(job_id=w.job["jobId"]))

    return {
        200: ok,
        400: lambda w: call(w, data="not json", content_type="application/json"),
        401: lambda w: call(
            w,
            client=w.strict,
            **({"json": {**_post_body(), **w.signed()}} if method == "POST" else {"query_string": w.signed()}),
        ),
        413: lambda w: call(w, data=BIG, content_type="application/json"),
        503: lambda w: call(
            w,
            client=w.down,
            **({"json": {**_post_body(), **w.signed()}} if method == "POST" else {"query_string": w.signed()}),
        ),
    }


def _post_body(agreement: str = "0x8") -> dict:
    return {
        "agreementId": agreement,
        "owner": OWNER,
        "environment": "ocean-compute",
        "workflow": {"stages": [{"index": 0, "input": [], "algorithm": {}, "compute": {}, "output": {}}]},
    }


PROVOCATIONS: dict[tuple[str, str], dict[int, Callable[[World], object]]] = {
    ("GET", "/"): {200: lambda w: w.client.get("/")},
    ("GET", "/livez"): {200: lambda w: w.down.get("/livez")},
    ("GET", "/metrics"): {200: lambda w: w.down.get("/metrics")},
    ("GET", "/readyz"): {200: lambda w: w.client.get("/readyz"), 503: lambda w: w.down.get("/readyz")},
    ("POST", f"{API}/compute"): _compute("POST"),
    ("PUT", f"{API}/compute"): _compute("PUT"),
    ("DELETE", f"{API}/compute"): _compute("DELETE"),
    ("GET", f"{API}/compute"): _compute("GET"),
    ("GET", f"{API}/runningjobs"): {
        200: lambda w: w.client.get(f"{API}/runningjobs"),
        503: lambda w: w.down.get(f"{API}/runningjobs"),
    },
    ("GET", f"{API}/getResult"): {
        200: lambda w: w.result(),
        206: lambda w: w.result(Range="bytes=0-3"),
        400: lambda w: w.client.get(f"{API}/getResult", query_string={**w.signed(job_id="x" * 32), "index": "x"}),
        401: lambda w: w.result(client=w.strict),
        403: lambda w: w.result(index=4),
        404: lambda w: w.result(job=w.bare_job),
        410: lambda w: w.result(job=w.expired_job),
        413: lambda w: w.client.get(f"{API}/getResult", data=BIG, content_type="application/json"),
        416: lambda w: w.result(index=5, Range="bytes=100-"),
        502: lambda w: w.result(index=3),
        503: lambda w: w.result(client=w.down),
        504: lambda w: w.result(client=w.slow, index=1),
    },
    ("GET", f"{API}/history"): {
        200: lambda w: w.client.get(f"{API}/history", query_string=w.signed(job_id=w.job["jobId"])),
        400: lambda w: w.client.get(f"{API}/history", query_string=w.signed()),
        401: lambda w: w.strict.get(f"{API}/history", query_string=w.signed(job_id=w.job["jobId"])),
        404: lambda w: w.client.get(f"{API}/history", query_string=w.signed(owner="0x2", job_id=w.job["jobId"])),
        413: lambda w: w.client.get(f"{API}/history", data=BIG, content_type="application/json"),
        503: lambda w: w.down.get(f"{API}/history", query_string=w.signed(job_id=w.job["jobId"])),
    },
    ("GET", f"{API}/jobs"): {
        200: lambda w: w.client.get(f"{API}/jobs", query_string={"status": 1}, headers=ADMIN),
        400: lambda w: w.client.get(f"{API}/jobs", query_string={"limit": 0}, headers=ADMIN),
        401: lambda w: w.client.get(f"{API}/jobs"),
        413: lambda w: w.client.get(f"{API}/jobs", data=BIG, content_type="application/json", headers=ADMIN),
        503: lambda w: w.down.get(f"{API}/jobs", headers=ADMIN),
    },
    ("GET", f"{API}/job"): {
        200: lambda w: w.client.get(f"{API}/job", query_string={"jobId": w.job["jobId"]}, headers=ADMIN),
        400: lambda w: w.client.get(f"{API}/job", headers=ADMIN),
        401: lambda w: w.client.get(f"{API}/job", query_string={"jobId": w.job["jobId"]}),
        404: lambda w: w.client.get(f"{API}/job", query_string={"jobId": "f" * 32}, headers=ADMIN),
        413: lambda w: w.client.get(f"{API}/job", data=BIG, content_type="application/json", headers=ADMIN),
        503: lambda w: w.down.get(f"{API}/job", query_string={"jobId": w.job["jobId"]}, headers=ADMIN),
    },
    ("GET", f"{API}/environments"): {
        200: lambda w: w.client.get(f"{API}/environments"),
        400: lambda w: w.client.get(f"{API}/environments", data="not json", content_type="application/json"),
        413: lambda w: w.client.get(f"{API}/environments", data=BIG, content_type="application/json"),
        503: lambda w: w.down.get(f"{API}/environments"),
    },
    ("POST", f"{API}/pgsqlinit"): {
        200: lambda w: w.client.post(f"{API}/pgsqlinit", headers=ADMIN),
        401: lambda w: w.client.post(f"{API}/pgsqlinit"),
        503: lambda w: w.down.post(f"{API}/pgsqlinit", headers=ADMIN),
    },
    ("GET", f"{API}/list"): {
        200: lambda w: w.cluster.get(f"{API}/list", headers=ADMIN),
        401: lambda w: w.cluster.get(f"{API}/list"),
        503: lambda w: w.client.get(f"{API}/list", headers=ADMIN),
    },
    ("GET", f"{API}/info"): {
        200: lambda w: w.cluster.get(f"{API}/info", query_string={"jobId": w.job["jobId"]}, headers=ADMIN),
        400: lambda w: w.cluster.get(f"{API}/info", headers=ADMIN),
        401: lambda w: w.cluster.get(f"{API}/info", query_string={"jobId": w.job["jobId"]}),
        404: lambda w: w.cluster.get(f"{API}/info", query_string={"jobId": "f" * 32}, headers=ADMIN),
        413: lambda w: w.cluster.get(f"{API}/info", data=BIG, content_type="application/json", headers=ADMIN),
        503: lambda w: w.client.get(f"{API}/info", query_string={"jobId": w.job["jobId"]}, headers=ADMIN),
    },
    ("GET", f"{API}/logs"): {
        200: lambda w: w.cluster.get(
            f"{API}/logs", query_string={"jobId": w.job["jobId"], "component": "algorithm"}, headers=ADMIN
        ),
        400: lambda w: w.cluster.get(f"{API}/logs", query_string={"jobId": w.job["jobId"]}, headers=ADMIN),
        401: lambda w: w.cluster.get(f"{API}/logs"),
        404: lambda w: w.cluster.get(
            f"{API}/logs", query_string={"jobId": w.job["jobId"], "component": "publish"}, headers=ADMIN
        ),
        413: lambda w: w.cluster.get(f"{API}/logs", data=BIG, content_type="application/json", headers=ADMIN),
        503: lambda w: w.client.get(
            f"{API}/logs", query_string={"jobId": w.job["jobId"], "component": "algorithm"}, headers=ADMIN
        ),
    },
}


def _documented(client) -> dict[tuple[str, str], set[int]]:
    spec = client.get("/spec").get_json()
    return {
        (method.upper(), path): {int(code) for code in operation["responses"] if code != "default"}
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


def test_every_operation_is_provoked_into_exactly_its_documented_codes(client):
    provoked = {operation: set(codes) for operation, codes in PROVOCATIONS.items()}
    assert provoked == _documented(client)


def test_each_documented_code_is_what_the_route_answers(world):
    answered = {}
    for operation, codes in PROVOCATIONS.items():
        for status, provoke in codes.items():
            response = provoke(world)
            body = response.get_json(silent=True) if status >= 400 else None
            if status >= 400 and not isinstance((body or {}).get("error"), str):
                answered[(*operation, status)] = f"{response.status_code} without a JSON error"
            elif response.status_code != status:
                answered[(*operation, status)] = f"{response.status_code}: {response.get_data(as_text=True)[:200]}"
    assert answered == {}
