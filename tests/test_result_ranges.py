"""GET /getResult with Range on results the local engine published (file:// in RESULTS_DIR):
206 with the asked bytes and Content-Range, 416 when no asked byte exists, the whole file when
the header asks for something this service does not answer (several ranges, another unit)."""

from __future__ import annotations

import os

import pytest

from operator_service.domain.errors import RangeNotSatisfiable
from operator_service.domain.results import ByteRange, requested_range
from tests.conftest import OWNER

RESULT = "/api/v1/operator/getResult"
CONTENT = os.urandom(10_000)  # more than one read chunk, so a part crosses chunk boundaries


@pytest.fixture
def local_job(submit, engine, results_dir):
    """A job whose results are files in RESULTS_DIR: index 0 is CONTENT, index 1 an empty file."""
    [job] = submit().get_json()
    folder = results_dir / job["jobId"] / "outputs"
    folder.mkdir(parents=True)
    (folder / "data.bin").write_bytes(CONTENT)
    (folder / "empty.txt").write_bytes(b"")
    engine.publish(
        job["jobId"],
        [
            {"filename": name, "filesize": (folder / name).stat().st_size, "url": (folder / name).as_uri()}
            | {"type": "output"}
            for name in ("data.bin", "empty.txt")
        ],
    )
    return job["jobId"]


def fetch(client, provider, job_id: str, range_header: str | None = None, index: int = 0):
    query = {"index": index, "jobId": job_id, "owner": OWNER, **provider.signed(OWNER, job_id)}
    return client.get(RESULT, query_string=query, headers={"Range": range_header} if range_header else {})


@pytest.mark.parametrize(
    "header, first, last",
    [
        ("bytes=0-99", 0, 99),
        ("bytes=4000-8191", 4000, 8191),
        ("bytes=9990-", 9990, 9999),
        ("bytes=9000-20000", 9000, 9999),  # the end is clamped to the file
        ("bytes=-10", 9990, 9999),  # the last 10 bytes
        ("bytes=-20000", 0, 9999),  # more than the file: all of it
        ("bytes=5-5", 5, 5),
        ("BYTES = 7 - 9", 7, 9),
    ],
)
def test_one_range_answers_206_with_exactly_those_bytes(client, provider, local_job, header, first, last):
    response = fetch(client, provider, local_job, header)

    assert response.status_code == 206
    assert response.get_data() == CONTENT[first : last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{len(CONTENT)}"
    assert response.headers["Content-Length"] == str(last - first + 1)
    assert response.headers["Content-Disposition"] == "attachment;filename=data.bin"


def test_without_range_the_whole_file_comes_and_ranges_are_offered(client, provider, local_job):
    response = fetch(client, provider, local_job)

    assert (response.status_code, response.get_data()) == (200, CONTENT)
    assert response.headers["Accept-Ranges"] == "bytes"
    assert "Content-Range" not in response.headers


@pytest.mark.parametrize(
    "header, index",
    [("bytes=10000-", 0), ("bytes=20000-30000", 0), ("bytes=-0", 0), ("bytes=0-", 1), ("bytes=-5", 1)],
)
def test_a_range_past_the_end_is_416_with_the_size(client, provider, local_job, header, index):
    response = fetch(client, provider, local_job, header, index)

    size = len(CONTENT) if index == 0 else 0
    assert response.status_code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    assert "asks for no byte of the result" in response.get_json()["error"]


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-5", "bytes=9-3", "bytes=-", "bytes=a-b", ""])
def test_a_range_this_service_does_not_answer_gets_the_whole_file(client, provider, local_job, header):
    response = fetch(client, provider, local_job, header)

    assert (response.status_code, response.get_data()) == (200, CONTENT)
    assert "Content-Range" not in response.headers


def test_the_range_rules_on_their_own():
    assert requested_range(None, 10) is None
    assert requested_range("bytes=2-4", 10) == ByteRange(2, 4)
    assert ByteRange(2, 4).length == 3
    assert requested_range("bytes=0-", 1) == ByteRange(0, 0)
    with pytest.raises(RangeNotSatisfiable) as refused:
        requested_range("bytes=10-", 10)
    assert refused.value.size == 10
