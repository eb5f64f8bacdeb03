"""GET /getResult: checks, streaming from storage, and storage failures."""

from __future__ import annotations

import os
import socket

import pytest

from operator_service.config import load_settings
from operator_service.domain.results import url_allowed
from operator_service.env_vars import ConfigError
from tests.conftest import OWNER, Provider, compute_body
from tests.stub_http import STORED, Storage, allowing

RESULT = "/api/v1/operator/getResult"


@pytest.fixture
def settings(make_settings, storage):
    """The operator lets the service fetch results from the storage server (and nothing else)."""
    return make_settings(**allowing(storage))


@pytest.fixture
def finished_job(submit, engine):
    """Submit a job and publish outputs for it as pod-publishing does; returns a setter."""
    [job] = submit().get_json()

    def publish(*urls: str) -> str:
        outputs = [
            {"filename": url.rsplit("/", 1)[-1], "filesize": len(STORED), "url": url, "type": "output"} for url in urls
        ]
        engine.publish(job["jobId"], outputs)
        return job["jobId"]

    return publish


def _query(provider, job_id, index=0, owner=OWNER):
    return {"index": index, "jobId": job_id, "owner": owner, **provider.signed(owner, job_id)}


def test_streams_the_file_with_its_name(client, provider, finished_job, storage):
    job_id = finished_job(f"{storage}/result.txt")
    response = client.get(RESULT, query_string=_query(provider, job_id))
    assert response.status_code == 200
    assert response.data == STORED
    assert response.headers["Content-Disposition"] == "attachment;filename=result.txt"
    assert response.headers["Access-Control-Expose-Headers"] == "Content-Disposition"


def test_upstream_content_disposition_names_the_file(client, provider, finished_job, storage):
    job_id = finished_job(f"{storage}/named/abc")
    response = client.get(RESULT, query_string=_query(provider, job_id))
    assert response.headers["Content-Disposition"] == "attachment;filename=renamed.txt"


def test_owner_is_compared_case_insensitively(client, provider, finished_job, storage):
    """The original compared the owner case-sensitively."""
    job_id = finished_job(f"{storage}/result.txt")
    response = client.get(RESULT, query_string=_query(provider, job_id, owner=OWNER.lower()))
    assert response.status_code == 200 and response.data == STORED


def test_range_and_storage_credentials_are_forwarded(make_settings, db, provider, finished_job, storage, make_app):
    job_id = finished_job(f"{storage}/result.txt")
    settings = make_settings(**{"X-API-KEY": "ipfs-key", "CLIENT-ID": "ipfs-client"}, **allowing(storage))
    client = make_app(settings).test_client()
    response = client.get(RESULT, query_string=_query(provider, job_id), headers={"Range": "bytes=0-3"})
    assert response.status_code == 206
    assert response.data == STORED[:4]
    assert response.headers["Range"] == "bytes=0-3"
    sent = Storage.seen[-1]
    assert (sent["Range"], sent["X-API-KEY"], sent["CLIENT-ID"]) == ("bytes=0-3", "ipfs-key", "ipfs-client")


def test_upstream_status_is_passed_through(client, provider, finished_job, storage):
    job_id = finished_job(f"{storage}/missing.txt")
    assert client.get(RESULT, query_string=_query(provider, job_id)).status_code == 404


def test_no_outputs_is_a_404_no_results(client, provider, submit):
    """The original answered "Owner ... mismatch" for a job without outputs."""
    [job] = submit().get_json()
    response = client.get(RESULT, query_string=_query(provider, job["jobId"]))
    assert (response.status_code, response.get_json()) == (404, {"error": f"No results for job {job['jobId']}"})


def test_unknown_job_is_a_404(client, provider):
    response = client.get(RESULT, query_string=_query(provider, "f" * 32))
    assert response.status_code == 404


def test_other_owner_is_refused(client, provider, finished_job, storage):
    job_id = finished_job(f"{storage}/result.txt")
    other = "0x0000000000000000000000000000000000000002"
    response = client.get(RESULT, query_string=_query(provider, job_id, owner=other))
    assert (response.status_code, response.get_json()) == (404, {"error": f"Owner {other} mismatch for job {job_id}"})


def test_index_errors(client, provider, finished_job, storage):
    job_id = finished_job(f"{storage}/result.txt")
    negative = client.get(RESULT, query_string=_query(provider, job_id, index=-1))
    assert (negative.status_code, negative.get_json()) == (404, {"error": "Negative index -1"})
    beyond = client.get(RESULT, query_string=_query(provider, job_id, index=1))
    assert (beyond.status_code, beyond.get_json()) == (404, {"error": "No such index 1 in this compute job"})
    word = client.get(RESULT, query_string=_query(provider, job_id, index="x"))
    assert word.status_code == 400
    assert word.get_json()["error"].startswith("Error getResult: invalid literal for int()")


def test_required_parameters(client, provider):
    assert client.get(RESULT).get_json() == {"error": "Both index & job_id are required"}
    for key in ["owner", "providerSignature", "nonce", "index", "jobId"]:
        query = _query(provider, "a" * 32)
        del query[key]
        response = client.get(RESULT, query_string=query)
        assert response.get_json() == {"error": f'"{key}" is required in the call to GET:/getResult'}


def test_only_the_creating_provider_gets_results_when_signatures_are_required(
    make_settings, db, provider, engine, storage, make_app
):
    """The original's provider check was dead code."""
    other = Provider("0x" + "11" * 32)
    allowed = f'["{provider.address}", "{other.address}"]'
    client = make_app(
        make_settings(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS=allowed, **allowing(storage))
    ).test_client()
    engine.announce()
    body = compute_body()
    body.update(provider.signed(OWNER))
    [job] = client.post("/api/v1/operator/compute", json=body).get_json()
    engine.publish(job["jobId"], [{"filename": "r", "filesize": 1, "url": f"{storage}/r.txt", "type": "output"}])
    refused = client.get(RESULT, query_string=_query(other, job["jobId"]))
    assert (refused.status_code, refused.get_json()) == (
        404,
        {"error": f"Provider {other.address} mismatch for job {job['jobId']}"},
    )
    assert client.get(RESULT, query_string=_query(provider, job["jobId"])).status_code == 200


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_refused_storage_is_a_502(make_app, db, provider, finished_job):
    closed = f"http://127.0.0.1:{_closed_port()}"
    job_id = finished_job(f"{closed}/result.txt")
    client = make_app(**allowing(closed)).test_client()
    response = client.get(RESULT, query_string=_query(provider, job_id))
    assert response.status_code == 502
    assert response.get_json()["error"].startswith("Result storage unreachable")


def test_slow_storage_is_a_504(make_app, db, provider, finished_job, storage):
    job_id = finished_job(f"{storage}/slow.txt")
    client = make_app(RESULT_TIMEOUT="0.5", **allowing(storage)).test_client()
    response = client.get(RESULT, query_string=_query(provider, job_id))
    assert (response.status_code, response.get_json()) == (504, {"error": "Result storage did not answer in time"})


def test_local_files_are_served_from_the_results_folder_only(client, provider, finished_job, results_dir, tmp_path):
    inside = results_dir / "job" / "outputs" / "result.txt"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(STORED)
    outside = tmp_path / "secret.txt"
    outside.write_text("password")
    job_id = finished_job(inside.as_uri(), outside.as_uri(), f"file://{results_dir}/../{outside.name}", "ftp://x/y")
    assert client.get(RESULT, query_string=_query(provider, job_id, 0)).data == STORED
    for index in (1, 2, 3):
        response = client.get(RESULT, query_string=_query(provider, job_id, index))
        assert response.status_code == 403, index
        assert b"password" not in response.data


def test_a_link_planted_in_the_results_folder_is_never_followed(client, provider, finished_job, results_dir, tmp_path):
    """The file is opened one folder at a time without following links: no check-then-open window."""
    secret = tmp_path / "secret" / "key.txt"
    secret.parent.mkdir()
    secret.write_text("password")
    job = results_dir / "linked-job"
    (job / "outputs").mkdir(parents=True)
    (job / "outputs" / "file-link.txt").symlink_to(secret)
    (job / "folder-link").symlink_to(secret.parent)
    os.mkfifo(job / "outputs" / "pipe")
    urls = [
        (job / "outputs" / "file-link.txt").as_uri(),
        (job / "folder-link" / "key.txt").as_uri(),
        (job / "outputs" / "pipe").as_uri(),
        (job / "outputs" / "gone.txt").as_uri(),
    ]
    job_id = finished_job(*urls)
    answers = [client.get(RESULT, query_string=_query(provider, job_id, index)) for index in range(len(urls))]
    assert [answer.status_code for answer in answers] == [403, 403, 403, 404]
    assert not any(b"password" in answer.data for answer in answers)


def test_results_are_fetched_only_from_the_configured_storage(make_app, db, provider, finished_job, storage, http_stub):
    other = http_stub(Storage)
    urls = [
        f"{other}/result.txt",
        f"{storage}/redirect/{other}/result.txt",
        f"{storage}/redirect/{storage}/result.txt",
    ]
    job_id = finished_job(*urls)
    client = make_app(**allowing(storage)).test_client()
    answers = [client.get(RESULT, query_string=_query(provider, job_id, index)) for index in range(len(urls))]
    assert [answer.status_code for answer in answers] == [403, 403, 200]
    assert answers[2].data == STORED, "a redirect within the configured storage is followed"
    assert "RESULT_URL_PREFIXES" in answers[0].get_json()["error"]
    assert [seen["path"] for seen in Storage.seen] == [
        f"/redirect/{other}/result.txt",
        f"/redirect/{storage}/result.txt",
        "/result.txt",
    ], "the other server never saw a request"


def test_by_default_no_http_storage_is_fetched(make_app, db, provider, finished_job, storage):
    job_id = finished_job(f"{storage}/result.txt")
    client = make_app().test_client()
    assert client.get(RESULT, query_string=_query(provider, job_id)).status_code == 403
    assert Storage.seen == []


@pytest.mark.parametrize(
    "url, allowed",
    [
        ("https://ipfs.example.com/ipfs/Qm1", True),
        ("HTTPS://IPFS.example.com:443/ipfs/Qm1", True),
        ("https://ipfs.example.com/ipfs", False),
        ("https://ipfs.example.com/ipfsx/Qm1", False),
        ("https://ipfs.example.com/ipfs/../admin", False),
        ("https://ipfs.example.com/ipfs/%2e%2e/admin", False),
        ("http://ipfs.example.com/ipfs/Qm1", False),
        ("https://ipfs.example.com:8443/ipfs/Qm1", False),
        ("https://ipfs.example.com.evil.net/ipfs/Qm1", False),
        ("https://ipfs.example.com@evil.net/ipfs/Qm1", False),
        ("https://evil.net/ipfs/Qm1#https://ipfs.example.com/ipfs/", False),
        ("https://bucket.s3.amazonaws.com/job/outputs/result.txt", True),
        ("https://bucket.s3.amazonaws.com:99999/job", False),
    ],
)
def test_a_url_is_allowed_only_under_a_prefix(url, allowed):
    assert url_allowed(url, ("https://ipfs.example.com/ipfs/", "https://bucket.s3.amazonaws.com")) is allowed


def test_result_url_prefixes_are_checked_at_start_up(base_env):
    for value in ('["ftp://storage/"]', '["storage.example.com"]', '["https://user:pw@storage/"]', "https://x/"):
        with pytest.raises(ConfigError, match="RESULT_URL_PREFIXES"):
            load_settings({**base_env, "RESULT_URL_PREFIXES": value})
