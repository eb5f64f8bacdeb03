"""The API docs (Swagger UI on /api/v1/docs/, spec on /spec) as a person uses them: every
parameter and body has an example that the route takes; the `Admin` header is a security scheme
(the Authorize button) whose header the admin routes accept; the signed routes say on the page
how to make a signature, and what `operator-service sign` prints, pasted into the form, is accepted.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from eth_keys import keys

from operator_service.domain.signatures import provider_message
from operator_service.model.personal_sign import recover_signer
from tests.conftest import ADMIN_SECRET, OWNER

API = "/api/v1/operator"
SIGNED = {("POST", f"{API}/compute"), ("PUT", f"{API}/compute"), ("DELETE", f"{API}/compute")}
SIGNED |= {("GET", f"{API}/compute"), ("GET", f"{API}/getResult"), ("GET", f"{API}/history")}
ADMIN = {("POST", f"{API}/pgsqlinit"), ("GET", f"{API}/list"), ("GET", f"{API}/info"), ("GET", f"{API}/logs")}
ADMIN |= {("GET", f"{API}/jobs"), ("GET", f"{API}/job")}
KEY = "0x" + "3c" * 32


def operations(spec: dict) -> dict[tuple[str, str], dict]:
    return {(method.upper(), path): op for path, item in spec["paths"].items() for method, op in item.items()}


@pytest.fixture
def spec(client) -> dict:
    return client.get("/spec").get_json()


def _fits(value: Any, schema: dict) -> list[str]:
    """What is wrong with `value` under the parts of a parameter schema the spec uses."""
    kind = schema.get("type")
    if kind == "string" and not isinstance(value, str):
        return [f"{value!r} is not a string"]
    if kind == "integer" and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{value!r} is not an integer"]
    if isinstance(value, str) and len(value) > schema.get("maxLength", len(value)):
        return [f"{value!r} is longer than {schema['maxLength']}"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{value!r} is not one of {schema['enum']}"]
    return []


def test_every_parameter_and_body_has_an_example_that_fits_it(spec) -> None:
    problems = []
    for (method, path), op in operations(spec).items():
        for param in op.get("parameters", []):
            where = f"{method} {path} {param['in']} {param['name']}"
            if param["in"] == "body":
                schema = param["schema"]
                example = schema.get("example")
                if not isinstance(example, dict):
                    problems.append(f"{where}: no example")
                    continue
                problems += [f"{where}: {name} missing" for name in schema["required"] if name not in example]
                for name, value in example.items():
                    problems += [f"{where}.{name}: {p}" for p in _fits(value, schema["properties"].get(name, {}))]
            elif "x-example" not in param:
                problems.append(f"{where}: no x-example")
            else:
                problems += [f"{where}: {p}" for p in _fits(param["x-example"], param)]
    assert problems == []


def example_request(op: dict) -> dict:
    """What Swagger UI's "Try it out" sends with the examples left as they are."""
    request: dict = {"query_string": {}, "headers": {}}
    for param in op.get("parameters", []):
        if param["in"] == "body":
            request["json"] = param["schema"]["example"]
        elif param["in"] == "query":
            request["query_string"][param["name"]] = param["x-example"]
        elif param["in"] == "header":
            request["headers"][param["name"]] = param["x-example"]
    return request


def test_every_example_is_taken_by_its_route_as_it_is(spec, client, cluster_app, engine) -> None:
    """No example is a bad request: tried as they are, the routes answer with their work (or,
    for a job the examples do not create, that there is none; without a cluster, a 503)."""
    engine.announce()
    answers = {}
    for (method, path), op in operations(spec).items():
        request = example_request(op)
        if (method, path) in ADMIN:
            request["headers"]["Admin"] = ADMIN_SECRET
        app = cluster_app.test_client() if path.endswith(("/list", "/info", "/logs")) else client
        response = app.open(path, method=method, **request)
        answers[(method, path)] = response.status_code
    expected = dict.fromkeys(answers, 200)
    expected[("GET", f"{API}/getResult")] = 404  # No results for the example job
    expected[("GET", f"{API}/history")] = 404  # nor a history
    expected[("GET", f"{API}/job")] = 404  # nor a row
    expected[("GET", f"{API}/info")] = 404  # the example job is not registered
    expected[("GET", f"{API}/logs")] = 404  # and has no pod
    assert answers == expected


def test_the_examples_are_signed_over_what_they_hold(spec) -> None:
    """One test key signed every example, over owner + jobId + nonce as the route checks them."""
    signers = set()
    for operation in SIGNED:
        op = operations(spec)[operation]
        request = example_request(op)
        fields = request.get("json") or request["query_string"]
        message = provider_message(
            fields["owner"], fields.get("jobId") if operation[0] != "POST" else None, fields["nonce"]
        )
        signers.add(recover_signer(fields["providerSignature"], message))
    assert len(signers) == 1


def test_the_admin_header_is_a_security_scheme_the_admin_routes_accept(spec, client) -> None:
    scheme = spec["securityDefinitions"]["Admin"]
    assert (scheme["type"], scheme["in"]) == ("apiKey", "header")
    for operation, op in operations(spec).items():
        header_params = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        if operation in ADMIN:
            assert op["security"] == [{"Admin": []}], operation
            assert scheme["name"] not in header_params, "the Authorize button fills it, not a form field"
        else:
            assert "security" not in op, operation
    # What the Authorize button sends is what the admin routes read.
    assert client.post(f"{API}/pgsqlinit", headers={scheme["name"]: ADMIN_SECRET}).status_code == 200
    assert client.post(f"{API}/pgsqlinit", headers={scheme["name"]: "wrong"}).status_code == 401


def test_the_page_says_how_to_sign_and_authorize(spec, client) -> None:
    page = spec["info"]["description"]
    assert "operator-service sign --owner <owner> --job-id <jobId> --key" in page
    assert "Authorize" in page and "ALLOWED_ADMINS" in page
    for operation in SIGNED:
        op = operations(spec)[operation]
        assert "operator-service sign --owner <owner>" in op["description"], operation
    docs = client.get("/api/v1/docs/")
    assert docs.status_code == 200 and b"swagger-ui" in docs.data


def sign_on_the_command_line(owner: str, job_id: str | None = None) -> dict[str, str]:
    """`operator-service sign` as a person runs it for the docs page; the fields it prints."""
    args = ["sign", "--owner", owner, "--key", KEY, *(["--job-id", job_id] if job_id else [])]
    result = subprocess.run(
        [sys.executable, "-m", "operator_service.tools.cli", *args], capture_output=True, text=True, check=True
    )
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


def test_what_sign_prints_pasted_into_the_form_is_accepted_with_signatures_enforced(spec, make_app, db, engine) -> None:
    address = keys.PrivateKey(bytes.fromhex(KEY[2:])).public_key.to_checksum_address()
    app = make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS=f'["{address}"]')
    client = app.test_client()
    engine.announce()
    body = dict(operations(spec)[("POST", f"{API}/compute")]["parameters"][0]["schema"]["example"])
    refused = client.post(f"{API}/compute", json=body)
    assert refused.status_code == 401, "the example's test key is not an allowed Provider"

    printed = sign_on_the_command_line(OWNER)
    # pasted with the blanks a copy from a terminal may bring
    body.update(owner=OWNER, nonce=f" {printed['nonce']} ", providerSignature=f"{printed['providerSignature']}\n")
    created = client.post(f"{API}/compute", json=body)
    assert created.status_code == 200, created.get_json()
    job_id = created.get_json()[0]["jobId"]

    printed = sign_on_the_command_line(OWNER, job_id)
    query = {"owner": OWNER, "jobId": job_id, "nonce": printed["nonce"]}
    status = client.get(f"{API}/compute", query_string={**query, "providerSignature": printed["providerSignature"]})
    assert status.status_code == 200 and status.get_json()[0]["jobId"] == job_id
    replayed = client.get(f"{API}/compute", query_string={**query, "providerSignature": printed["providerSignature"]})
    assert replayed.status_code == 401, "each nonce once"
