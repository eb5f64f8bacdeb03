"""A property-based fuzzer over the service's own spec (schemathesis, on Hypothesis).

Every operation of GET /spec is called with generated parameters and bodies, valid and
invalid. A test fails on any 5xx but a 503 the operation documents, on a status code it
does not document, and on an answer that does not match its declared schema. About half
the requests carry a real Provider signature over what was generated (chosen from the
generated content, so that a failing example replays the same way), and such a POST gets
an announced environment and a valid stage when it lacks one, so that the generated ids
reach the database: the routes are exercised past their first checks too. The examples
are derandomized and bounded, so the run is the same every time and takes seconds.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from operator_service.api.app import create_app
from operator_service.api.params import normalised_id
from operator_service.config import load_settings
from operator_service.domain.signatures import provider_message
from tests.conftest import ADMIN_SECRET, Provider, compute_body, fresh_nonce

EXAMPLES_PER_OPERATION = 150
SIGNED_ROUTES = {"/api/v1/operator/compute", "/api/v1/operator/getResult", "/api/v1/operator/history"}


@pytest.fixture
def fuzz_provider() -> Provider:
    return Provider("0x" + "5d" * 32)


@pytest.fixture
def fuzzed_app(make_app, db, engine, fuzz_provider):
    """The service with an announced environment and the fuzz Provider listed (its nonces guarded)."""
    engine.announce()
    return make_app(ALLOWED_PROVIDERS=f'["{fuzz_provider.address}"]')


def _spec() -> dict:
    """GET /spec of an app that needs no database to answer it (the fuzzed app is built per test)."""
    app = create_app(load_settings({"KUBERNETES": "off"}))
    try:
        return app.test_client().get("/spec").get_json()
    finally:
        app.extensions["operator_service"].close()


schema = schemathesis.openapi.from_dict(_spec())


def only_a_documented_503(ctx, response, case) -> None:
    """No 5xx, but a 503 where the operation documents one (a dependency it names is down)."""
    status = response.status_code
    documented = case.operation.definition.raw.get("responses", {})
    if status >= 500 and not (status == 503 and "503" in documented):
        raise AssertionError(f"{case.operation.label} answered {status}: {response.text[:300]}")


def _parameters(case) -> dict | None:
    if case.query:
        return case.query
    return case.body if isinstance(case.body, dict) else None


def _sign(case, provider: Provider) -> None:
    """Give about half of the signed requests a valid signature and a fresh nonce for what they carry."""
    params = _parameters(case)
    if case.operation.path not in SIGNED_ROUTES or params is None or len(repr(params)) % 2:
        return
    params["nonce"] = fresh_nonce()
    if case.operation.path.endswith(("/getResult", "/history")):
        owner, job_id = params.get("owner"), params.get("jobId")
    elif case.method == "POST":
        if not isinstance(params.get("owner"), str):
            return
        owner, job_id = params["owner"], None
        params["environment"] = "ocean-compute"
        if not isinstance(params.get("workflow"), dict) or not params["workflow"].get("stages"):
            params["workflow"] = compute_body()["workflow"]
    else:
        owner, job_id = normalised_id(params.get("owner")), normalised_id(params.get("jobId"))
    params["providerSignature"] = provider.sign(provider_message(owner, job_id, params["nonce"]))


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_answer_is_a_server_error_or_off_its_schema(case, fuzzed_app, fuzz_provider):
    _sign(case, fuzz_provider)
    response = case.call(app=fuzzed_app, headers={"Admin": ADMIN_SECRET})
    case.validate_response(
        response,
        checks=[only_a_documented_503, status_code_conformance, response_schema_conformance, content_type_conformance],
    )
