"""What an operator sees: GET /metrics, request ids, access log lines, JSON logs, the engine's metrics.

In one process (the Flask test client, engines in threads): the metrics here are the
process's own, so every check compares a value before and after what should change it.
tests/test_monitoring_server.py runs the real server, whose workers add up their metrics.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime

import pytest

from operator_service.api.observability import JOURNAL_SECONDS
from operator_service.logging_setup import FORMAT, JsonFormatter, TextFormatter, log_context
from operator_service.tools.embedded_db import free_port
from tests.conftest import ADMIN_SECRET, OWNER, Provider, compute_body
from tests.engine_support import COMPUTE, SAMPLE, wait_finished, wait_for, workflow
from tests.metrics_support import scrape_exporter, value

SLEEPER = "import time\nprint('sleeping', flush=True)\ntime.sleep(60)\n"
WRITER = "import os\nopen(os.path.join(os.environ['OUTPUTS'], 'out.txt'), 'w').write('x' * 5000)\n"


def scrape(client) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return response.get_data(as_text=True)


def requests_of(client, route: str, method: str, status: int) -> float:
    return value(scrape(client), "operator_http_requests_total", route=route, method=method, status=str(status))


@pytest.fixture
def strict(make_app, db):
    """The service with signatures required and only another Provider listed."""
    return make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS='["0x1"]').test_client()


@pytest.fixture
def down(make_app):
    """The service with its database unreachable."""
    return make_app(POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(free_port())).test_client()


@pytest.fixture
def captured() -> Iterator[list[str]]:
    """Every line logged while the test runs, formatted as LOG_FORMAT=json writes it; the
    same lines as the text format writes them are in `text_lines`."""
    lines: list[str] = []
    text_lines.clear()

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))
            text_lines.append(TEXT.format(record))

    handler = Collect(logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


TEXT = TextFormatter(FORMAT)
text_lines: list[str] = []


def access_lines(captured: list[str]) -> list[dict]:
    """The access lines among the lines captured so far (they come up to JOURNAL_SECONDS late)."""
    return [json.loads(line) for line in list(captured) if '"operator_service.access"' in line]


def test_a_request_is_counted_under_its_route_rule_method_and_status(client, submit, provider):
    [job] = submit().get_json()
    route = "/api/v1/operator/compute"
    before = requests_of(client, route, "GET", 200)
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    assert client.get(COMPUTE, query_string=query).status_code == 200
    text = scrape(client)
    assert value(text, "operator_http_requests_total", route=route, method="GET", status="200") == before + 1
    assert value(text, "operator_http_request_duration_seconds_count", route=route, method="GET") >= 1
    assert job["jobId"] not in text and OWNER not in text and OWNER.lower() not in text


def test_a_path_no_route_serves_is_counted_without_its_path(client):
    path = f"/no-such-{uuid.uuid4().hex}"
    before = requests_of(client, "unmatched", "GET", 404)
    assert client.get(path).status_code == 404
    text = scrape(client)
    assert value(text, "operator_http_requests_total", route="unmatched", method="GET", status="404") == before + 1
    assert path not in text


def test_refused_signatures_and_nonces_are_counted_by_reason(client, strict, submit, provider, make_app):
    def refusals(name: str, reason: str) -> float:
        return value(scrape(client), name, reason=reason)

    not_allowed = refusals("operator_signature_refusals_total", "not_allowed")
    query = {"owner": OWNER, **provider.signed(OWNER)}
    assert strict.get(COMPUTE, query_string=query).status_code == 401
    assert refusals("operator_signature_refusals_total", "not_allowed") == not_allowed + 1

    unrecoverable = refusals("operator_signature_refusals_total", "unrecoverable")
    bad = {"owner": OWNER, "nonce": "1", "providerSignature": "0x1234"}
    assert client.get(COMPUTE, query_string=bad).status_code == 400
    assert refusals("operator_signature_refusals_total", "unrecoverable") == unrecoverable + 1

    used = refusals("operator_nonce_refusals_total", "used")
    with_provider = create_app_listing(make_app, client, provider)
    try:
        signed = {"owner": OWNER, **provider.signed(OWNER)}
        assert with_provider.get(COMPUTE, query_string=signed).status_code == 200
        assert with_provider.get(COMPUTE, query_string=signed).status_code == 401
    finally:
        with_provider.application.extensions["operator_service"].close()
    assert refusals("operator_nonce_refusals_total", "used") == used + 1

    malformed = refusals("operator_nonce_refusals_total", "malformed")
    assert (
        client.get(COMPUTE, query_string={"owner": OWNER, "nonce": "x", "providerSignature": "0x"}).status_code == 400
    )
    assert refusals("operator_nonce_refusals_total", "malformed") == malformed + 1


def create_app_listing(make_app, client, provider: Provider):
    """A second app on the same database whose only listed Provider is `provider` (its nonces are guarded)."""
    settings = client.application.extensions["operator_service"].settings
    return make_app(replace(settings, allowed_providers=(provider.address,))).test_client()


def test_a_database_outage_is_counted_and_does_not_stop_the_metrics(down):
    before = value(scrape(down), "operator_dependency_failures_total", dependency="database")
    assert down.get("/api/v1/operator/runningjobs").status_code == 503
    text = scrape(down)
    assert value(text, "operator_dependency_failures_total", dependency="database") == before + 1
    assert value(text, "operator_jobs_collected") == 0
    assert "operator_jobs_unfinished" not in text


def test_unfinished_jobs_are_counted_per_environment_and_status_from_the_database(client, submit, engine):
    assert submit().status_code == 200
    assert submit(compute_body(agreement_id="0x1")).status_code == 200
    wait_for(
        lambda: value(scrape(client), "operator_jobs_unfinished", environment="ocean-compute", status="1") == 2,
        "two queued jobs counted",
    )
    text = scrape(client)
    assert value(text, "operator_jobs_collected") == 1
    assert value(text, "operator_jobs_oldest_queued_seconds", environment="ocean-compute") >= 0
    taken = engine.announce()[0]
    engine.set_status(taken, 40, "Running algorithm ")
    wait_for(
        lambda: value(scrape(client), "operator_jobs_unfinished", environment="ocean-compute", status="40") == 1,
        "the running job counted under 40",
    )
    assert value(scrape(client), "operator_jobs_unfinished", environment="ocean-compute", status="1") == 1


def test_metrics_0_turns_the_route_and_the_counting_off(make_app, db):
    assert make_app(METRICS="0").test_client().get("/metrics").status_code == 404


def test_a_sane_request_id_is_answered_back_and_any_other_replaced(client):
    assert client.get("/livez", headers={"X-Request-Id": "abc-123.x:y_z"}).headers["X-Request-Id"] == "abc-123.x:y_z"
    for insane in ("a b", "x" * 200, "<script>", ""):
        answered = client.get("/livez", headers={"X-Request-Id": insane}).headers["X-Request-Id"]
        assert re.fullmatch("[0-9a-f]{32}", answered), (insane, answered)
    first, second = (client.get("/livez").headers["X-Request-Id"] for _ in range(2))
    assert first != second


def test_every_request_has_one_access_line_and_its_lines_carry_its_id(client, captured):
    response = client.get("/api/v1/operator/runningjobs?x=1", headers={"X-Request-Id": "req-42"})
    assert response.status_code == 200
    wait_for(lambda: access_lines(captured), "the request's access line")
    access = access_lines(captured)
    assert len(access) == 1
    entry = access[0]
    assert {key: entry[key] for key in ("method", "path", "status", "request_id")} == {
        "method": "GET",
        "path": "/api/v1/operator/runningjobs",
        "status": 200,
        "request_id": "req-42",
    }
    assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
    assert "x=1" not in entry["message"]


def test_access_log_0_writes_no_access_line(make_app, db, captured):
    quiet = make_app(ACCESS_LOG="0").test_client()
    assert quiet.get("/livez").status_code == 200
    assert quiet.get("/metrics").status_code == 200  # which first makes the lines and counts of the requests before it
    assert not access_lines(captured)


def test_an_access_line_is_dated_when_its_request_was_answered(client, captured):
    before = time.time()
    assert client.get("/livez", headers={"X-Request-Id": "req-soon"}).status_code == 200
    after = time.time()
    time.sleep(JOURNAL_SECONDS)  # a line made later than its answer must still say when it was answered
    wait_for(lambda: access_lines(captured), "the access line")
    [entry] = access_lines(captured)
    answered = datetime.fromisoformat(entry["time"].replace("Z", "+00:00")).timestamp()
    assert before - 0.001 <= answered <= after + 0.001


def test_no_signature_nonce_or_secret_is_ever_logged(client, strict, submit, provider, captured, engine):
    """Signed requests of every route, accepted and refused, and admin requests: none of what
    they carry as a credential appears in any line, in either format."""
    secrets: list[str] = [ADMIN_SECRET, provider.private_key, provider.private_key[2:]]

    def signed(job_id: str | None = None) -> dict:
        values = provider.signed(OWNER, job_id)
        secrets.extend(values.values())
        return {"owner": OWNER, **({"jobId": job_id} if job_id else {}), **values}

    body = compute_body(agreement_id="0x" + uuid.uuid4().hex)
    engine.announce()
    body.update(signed())
    [job] = client.post(COMPUTE, json=body).get_json()
    job_id = job["jobId"]
    for method in ("get", "put", "delete"):
        assert getattr(client, method)(COMPUTE, query_string=signed(job_id)).status_code == 200
    assert client.get("/api/v1/operator/getResult", query_string={"index": 0, **signed(job_id)}).status_code == 404
    assert strict.get(COMPUTE, query_string=signed(job_id)).status_code == 401
    replayed = signed(job_id)
    client.get(COMPUTE, query_string=replayed)
    client.get(COMPUTE, query_string=replayed)
    assert client.post("/api/v1/operator/pgsqlinit", headers={"Admin": ADMIN_SECRET}).status_code == 200
    assert client.post("/api/v1/operator/pgsqlinit", headers={"Admin": "wrong-" + ADMIN_SECRET}).status_code == 401
    assert client.get("/metrics").status_code == 200
    wait_for(lambda: len(access_lines(captured)) == 11, "an access line for each of the 11 requests")
    assert len(text_lines) == len(captured)
    for secret in secrets:
        for line in captured + text_lines:
            assert secret not in line, f"a credential was logged: {line}"


def test_text_lines_show_the_context_and_json_lines_are_one_object_each():
    record = logging.LogRecord("operator_service.x", logging.INFO, __file__, 1, "line one\nline two", None, None)
    with log_context(request_id="r-1", job_id="j-1"):
        text = TextFormatter("%(levelname)s %(name)s: %(message)s").format(record)
        line = JsonFormatter().format(record)
    assert text == "INFO operator_service.x: line one [request_id=r-1 job_id=j-1]\nline two"
    assert "\n" not in line
    entry = json.loads(line)
    assert (entry["message"], entry["request_id"], entry["job_id"], entry["level"]) == (
        "line one\nline two",
        "r-1",
        "j-1",
        "INFO",
    )
    assert TextFormatter("%(message)s").format(record) == "line one\nline two"


def test_the_engine_counts_its_jobs_and_logs_them_with_the_creating_request_id(
    client, db, provider, inputs, start_engine, captured
):
    port = free_port()
    start_engine(max_job_duration=1.0, metrics_bind=f"127.0.0.1:{port}")

    def engine_metrics() -> str:
        return scrape_exporter(port)

    before = engine_metrics()
    job_ids = {}
    for name, code in (("sleeper", SLEEPER), ("writer", WRITER)):
        body = {
            "agreementId": uuid.uuid4().hex,
            "owner": OWNER,
            "environment": "ocean-compute",
            "workflow": workflow("ocean-compute", code, [f"{inputs}/sample.txt"]),
            **provider.signed(OWNER),
        }
        response = client.post(COMPUTE, json=body, headers={"X-Request-Id": f"req-{name}"})
        assert response.status_code == 200
        job_ids[name] = response.get_json()[0]["jobId"]
    wait_for(lambda: value(engine_metrics(), "operator_engine_running_jobs") >= 1, "a running job counted")
    for job_id in job_ids.values():
        wait_finished(db, job_id, timeout=20)
    wait_for(lambda: value(engine_metrics(), "operator_engine_running_jobs") == 0, "no running job counted")
    after = engine_metrics()

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("operator_engine_queue_wait_seconds_count") == 2
    assert grew("operator_engine_algorithm_run_seconds_count") == 2
    assert grew("operator_engine_limits_hit_total", limit="timeout") == 1
    assert grew("operator_engine_fetched_bytes_total") == 2 * len(SAMPLE)
    assert grew("operator_engine_published_bytes_total") >= 5000
    lines = [json.loads(line) for line in captured]
    for name, job_id in job_ids.items():
        of_job = [
            line
            for line in lines
            if line.get("job_id") == job_id and line["logger"].startswith("operator_service.engine")
        ]
        assert of_job, f"no engine line for job {job_id}"
        assert {line.get("request_id") for line in of_job} == {f"req-{name}"}
