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
    "wrong types": (
        json.dumps(
            {
                "workflow": [1],
                "agreementId": {"a": 1},
                "owner": 5,
                "providerSignature": [],
                "environment": 7,
                "nonce": {"n": 1},
                "jobId": [1],
                "index": {"i": 1},
                "chainId": {"c": 1},
            }
        ),
        "application/json",
    ),
    "sql-looking": (
        json.dumps(
            {
                "workflow": {"stages": SQLISH},
                "agreementId": SQLISH,
                "owner": SQLISH,
                "providerSignature": SQLISH,
                "environment": SQLISH,
                "nonce": SQLISH,
                "jobId": SQLISH,
                "index": SQLISH,
            }
        ),
        "application/json",
    ),
    "unicode": (
        json.dumps(
            {
                "workflow": {"stages": [{"algorithm": {}, "compute": {}, "input": [], "output": {}}]},
                "agreementId": UNICODE,
                "owner": UNICODE,
                "providerSignature": UNICODE,
                "environment": UNICODE,
                "nonce": UNICODE,
                "jobId": UNICODE,
                "index": UNICODE,
            }
        ),
        "application/json",
    ),
}

QUERIES = {
    "sql-looking": {
        "owner": SQLISH,
        "jobId": SQLISH,
        "agreementId": SQLISH,
        "nonce": SQLISH,
        "providerSignature": SQLISH,
        "index": SQLISH,
        "chainId": SQLISH,
        "component": SQLISH,
    },
    "unicode": {
        "owner": UNICODE,
        "jobId": UNICODE,
        "nonce": UNICODE,
        "providerSignature": UNICODE,
        "index": UNICODE,
        "chainId": UNICODE,
        "component": "algorithm",
    },
    "negative index": {
        "owner": OWNER,
        "jobId": "a" * 32,
        "nonce": "1",
        "providerSignature": "0x" + "1" * 130,
        "index": "-1",
    },
    "huge index": {
        "owner": OWNER,
        "jobId": "a" * 32,
        "nonce": "1",
        "providerSignature": "0x" + "1" * 130,
        "index": HUGE,
    },
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
        response = client.open(
            path, method=method, data=body, content_type=content_type, headers={"Admin": ADMIN_SECRET}
        )
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


# --- inputs that used to answer 500 ----------------------------------------------------------------
def _post_raw(client, body_text: str):
    return client.post(COMPUTE, data=body_text, content_type="application/json")


def test_a_lone_surrogate_is_a_400_even_where_no_signature_is_needed(client, engine):
    """`environment` is looked up before the signature is checked; a lone surrogate cannot be encoded."""
    engine.announce()
    body = json.dumps({**compute_body(), "nonce": "1", "providerSignature": "0x", "environment": "\ud800env"})
    response = _post_raw(client, body)
    assert (response.status_code, response.get_json()) == (
        400,
        {"error": "Request parameters must be valid Unicode: a lone UTF-16 surrogate is not a character"},
    )
    query = _post_raw(client, json.dumps({"owner": "0x\udfff", "nonce": "1", "providerSignature": "0x"}))
    assert query.status_code == 400
    paired = _post_raw(client, json.dumps({**compute_body(owner="0x🚀"), "nonce": "1", "providerSignature": "0x"}))
    assert paired.get_json() != query.get_json()  # a valid pair (an emoji) is a character


@pytest.mark.parametrize("field", ["agreementId", "owner"])
def test_a_field_longer_than_its_column_is_a_400_naming_the_field_and_the_limit(client, submit, field, db):
    body = compute_body()
    body[field] = "0x" + "a" * 254  # 256 characters: the column is varchar(255)
    response = submit(body)
    assert (response.status_code, response.get_json()) == (
        400,
        {"error": f'"{field}" must be at most 255 characters long'},
    )
    body[field] = "0x" + "a" * 253
    assert submit(body).status_code == 200
    assert len(_snapshot(db)) == 1


def test_an_overlong_filter_is_a_400_too(client, provider):
    owner = "0x" + "b" * 300
    response = client.get(COMPUTE, query_string={"owner": owner, **provider.signed(owner)})
    assert (response.status_code, response.get_json()) == (
        400,
        {"error": '"owner" must be at most 255 characters long'},
    )


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_json_nested_too_deep_is_a_400(client, depth):
    body = '{"owner": ' + "[" * depth + "]" * depth + "}"
    response = _post_raw(client, body)
    assert (response.status_code, response.get_json()) == (
        400,
        {"error": "Request body is nested more than 32 levels deep"},
    )
    assert (
        client.open(
            "/api/v1/operator/environments", method="GET", data=body, content_type="application/json"
        ).status_code
        == 400
    )


def test_json_nested_within_the_limit_is_read(client, submit):
    body = compute_body()
    deep: dict = {}
    for _ in range(24):
        deep = {"next": deep}
    body["workflow"]["stages"][0]["output"] = deep
    assert submit(body).status_code == 200


RESULT = "/api/v1/operator/getResult"


def _publish_and_fetch(client, provider, engine, job, url: str):
    engine.publish(job["jobId"], [{"filename": "r", "filesize": 1, "url": url, "type": "output"}])
    query = {"index": 0, "jobId": job["jobId"], "owner": job["owner"], **provider.signed(job["owner"], job["jobId"])}
    return client.get(RESULT, query_string=query)


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/a\u0000b",
        "file:///tmp/a%00b",
        "http://127.0.0.1/a\u0000b",
        "http://[::1/result",
        "http://127.0.0.1/a\r\nX-Injected: 1",
    ],
)
def test_a_stored_result_url_that_cannot_be_used_is_refused_not_a_500(client, provider, engine, stored_job, url):
    response = _publish_and_fetch(client, provider, engine, stored_job, url)
    assert response.status_code == 403
    assert response.get_json()["error"].startswith("Error getResult: the stored result URL")


def test_a_result_file_name_with_cr_lf_cannot_inject_a_header(client, provider, engine, stored_job, results_dir):
    folder = results_dir / stored_job["jobId"]
    folder.mkdir()
    evil = folder / "out.txt\r\nSet-Cookie: session=stolen"
    evil.write_bytes(b"data")
    response = _publish_and_fetch(client, provider, engine, stored_job, evil.as_uri())
    assert response.status_code == 200 and response.data == b"data"
    assert "Set-Cookie" not in response.headers
    assert response.headers["Content-Disposition"] == "attachment;filename=out.txt__Set-Cookie: session=stolen"


def test_a_result_file_name_keeps_its_unicode_in_filename_star(client, provider, engine, stored_job, results_dir):
    folder = results_dir / stored_job["jobId"]
    folder.mkdir()
    named = folder / "résultat 🚀.txt"
    named.write_bytes(b"data")
    response = _publish_and_fetch(client, provider, engine, stored_job, named.as_uri())
    assert response.headers["Content-Disposition"] == (
        "attachment;filename=r_sultat _.txt;filename*=UTF-8''r%C3%A9sultat%20%F0%9F%9A%80.txt"
    )


def test_stored_json_nested_too_deep_is_ignored_not_a_500(client, provider, engine, stored_job, db):
    deep = "[" * 5000 + "]" * 5000
    with db.transaction() as cur:
        cur.execute("UPDATE jobs SET outputsURL = %s WHERE workflowId = %s", (deep, stored_job["jobId"]))
        cur.execute("UPDATE envs SET status = %s", (deep,))
    query = {
        "jobId": stored_job["jobId"],
        "owner": stored_job["owner"],
        **provider.signed(stored_job["owner"], stored_job["jobId"]),
    }
    [job] = client.get(COMPUTE, query_string=query).get_json()
    assert job["results"] == ""
    assert client.get("/api/v1/operator/environments").get_json() == []
