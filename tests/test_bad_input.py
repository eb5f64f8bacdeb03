"""Bad input on every route: never a 5xx, always a JSON error, and nothing stored is lost."""
from __future__ import annotations

import json

import pytest

from tests.conftest import ADMIN_SECRET, OWNER, compute_body

COMPUTE = "/api/v1/operator/compute"

ROUTES = [
    ("POST", "/api/v1/operator/compute"),
    ("PUT", "/api/v1/operator/compute"),
    ("DELETE", "/api/v1/operator/compute"),
    ("GET", "/api/v1/operator/compute"),
    ("GET", "/api/v1/operator/runningjobs"),
    ("GET", "/api/v1/operator/getResult"),
    ("GET", "/api/v1/operator/environments"),
    ("POST", "/api/v1/operator/pgsqlinit"),
    ("GET", "/api/v1/operator/list"),
    ("GET", "/api/v1/operator/info"),
    ("GET", "/api/v1/operator/logs"),
    ("GET", "/"),
]

SQLISH = "x' OR '1'='1'; DROP TABLE jobs; --"
UNICODE = "Ωmega-🚀-\u202e-\u0000-नमस्ते"
HUGE = "9" * 5000

BODIES = {
    "not json": ("this is not json", "text/plain"),
    "broken json": ('{"owner": ', "application/json"),
    "json list": ("[1, 2, 3]", "application/json"),
    "json string": ('"owner"', "application/json"),
    "json null": ("null", "application/json"),
    "latin-1 bytes": (b"\xff\xfe\xfd", "application/json"),
    "2 MB": (json.dumps({"owner": "a" * (2 * 1024 * 1024)}), "application/json"),
    "wrong types": (json.dumps({
        "workflow": [1], "agreementId": {"a": 1}, "owner": 5, "providerSignature": [], "environment": 7,
        "nonce": {"n": 1}, "jobId": [1], "index": {"i": 1}, "chainId": {"c": 1},
    }), "application/json"),
    "sql-looking": (json.dumps({
        "workflow": {"stages": SQLISH}, "agreementId": SQLISH, "owner": SQLISH, "providerSignature": SQLISH,
        "environment": SQLISH, "nonce": SQLISH, "jobId": SQLISH, "index": SQLISH,
    }), "application/json"),
    "unicode": (json.dumps({
        "workflow": {"stages": [{"algorithm": {}, "compute": {}, "input": [], "output": {}}]}, "agreementId": UNICODE,
        "owner": UNICODE, "providerSignature": UNICODE, "environment": UNICODE, "nonce": UNICODE,
        "jobId": UNICODE, "index": UNICODE,
    }), "application/json"),
}

QUERIES = {
    "sql-looking": {"owner": SQLISH, "jobId": SQLISH, "agreementId": SQLISH, "nonce": SQLISH,
                    "providerSignature": SQLISH, "index": SQLISH, "chainId": SQLISH, "component": SQLISH},
    "unicode": {"owner": UNICODE, "jobId": UNICODE, "nonce": UNICODE, "providerSignature": UNICODE,
                "index": UNICODE, "chainId": UNICODE, "component": "algorithm"},
    "negative index": {"owner": OWNER, "jobId": "a" * 32, "nonce": "1", "providerSignature": "0x" + "1" * 130, "index": "-1"},
    "huge index": {"owner": OWNER, "jobId": "a" * 32, "nonce": "1", "providerSignature": "0x" + "1" * 130, "index": HUGE},
    "huge nonce": {"owner": OWNER, "nonce": HUGE, "providerSignature": "0x" + "1" * 130},
    "empty values": {"owner": "", "jobId": "", "nonce": "", "providerSignature": "", "index": "", "chainId": ""},
}


@pytest.fixture
def client(cluster_app):
    """With a (fake) cluster, so that the admin routes do their work instead of answering 503."""
    return cluster_app.test_client()


@pytest.fixture
def stored_job(submit, engine):
    """A job acknowledged before the bad input arrives, with results published."""
    [job] = submit().get_json()
    engine.set_status(job["jobId"], 40, "Running algorithm ")
    return job


def _snapshot(db) -> list[tuple]:
    with db.transaction() as cur:
        cur.execute("SELECT workflowId, agreementId, owner, status, stopreq, removed FROM jobs ORDER BY workflowId")
        return cur.fetchall()


def _assert_clean(response, what: str) -> None:
    assert response.status_code < 500, f"{what}: {response.status_code} {response.data[:200]!r}"
    if response.status_code >= 400:
        assert response.is_json, f"{what}: error is not JSON"
        assert isinstance(response.get_json().get("error"), str), what


@pytest.mark.parametrize("method, path", ROUTES)
def test_bad_bodies(client, db, stored_job, method, path):
    before = _snapshot(db)
    for name, (body, content_type) in BODIES.items():
        response = client.open(path, method=method, data=body, content_type=content_type,
                               headers={"Admin": ADMIN_SECRET})
        _assert_clean(response, f"{method} {path} with {name}")
    assert _snapshot(db) == before


@pytest.mark.parametrize("method, path", ROUTES)
def test_bad_query_strings(client, db, stored_job, method, path):
    before = _snapshot(db)
    for name, query in QUERIES.items():
        response = client.open(path, method=method, query_string=query, headers={"Admin": ADMIN_SECRET})
        _assert_clean(response, f"{method} {path} with {name}")
    assert _snapshot(db) == before


def test_a_two_megabyte_body_is_a_413(client):
    response = client.post("/api/v1/operator/compute", data=BODIES["2 MB"][0], content_type="application/json")
    assert response.status_code == 413 and "error" in response.get_json()


def test_sql_looking_values_are_stored_as_plain_text(client, submit, provider, db):
    body = compute_body(agreement_id=SQLISH)
    [job] = submit(body).get_json()
    assert job["agreementId"] == SQLISH
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM jobs")
        assert cur.fetchone()[0] == 1


def test_unicode_owner_round_trips(client, submit, provider):
    [job] = submit(compute_body(owner=UNICODE.replace("\u0000", ""))).get_json()
    owner = job["owner"]
    query = {"owner": owner, "jobId": job["jobId"], **provider.signed(owner, job["jobId"])}
    assert [item["owner"] for item in client.get("/api/v1/operator/compute", query_string=query).get_json()] == [owner]


def test_a_nul_character_in_a_stored_field_is_a_400_not_a_500(client, submit):
    response = submit(compute_body(owner="0xabc\u0000def"))
    _assert_clean(response, "owner with NUL")
    assert response.status_code == 400


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_nul_in_a_utf16_or_utf32_body_is_a_400(client, submit, provider, engine, encoding):
    engine.announce()
    body = compute_body(owner="0xabc\u0000def")
    body.update(provider.signed(body["owner"]))
    response = client.post(COMPUTE, data=json.dumps(body).encode(encoding), content_type="application/json")
    _assert_clean(response, f"{encoding} owner with NUL")
    assert response.status_code == 400


def test_a_nul_in_the_query_string_is_a_400(client, provider):
    response = client.get(COMPUTE, query_string={"owner": "0xab\u0000c", "nonce": "1", "providerSignature": "0x"})
    assert response.get_json() == {"error": "Request parameters must not contain NUL characters"}
