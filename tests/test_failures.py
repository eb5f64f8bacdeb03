"""Dependency failures and races: the database going away, concurrent POSTs, secrets in logs."""

from __future__ import annotations

import logging

from operator_service.config import load_settings
from tests.conftest import ADMIN_SECRET, OWNER, compute_body, run_together
from tests.ocean_engine import OceanEngine

COMPUTE = "/api/v1/operator/compute"


def test_database_down_is_a_503_naming_it_and_the_service_recovers(own_server, provider, make_app):
    """The original answered 200 [] with the database down."""
    server, env = own_server
    app = make_app(load_settings(env))
    client = app.test_client()
    engine = OceanEngine(server.dsn_kwargs(env["POSTGRES_DB"]))
    engine.announce()
    body = compute_body()
    body.update(provider.signed(OWNER))
    assert client.post(COMPUTE, json=body).status_code == 200

    server.stop()
    calls = {
        "POST /compute": lambda: client.post(COMPUTE, json={**compute_body("0xabc"), **provider.signed("0xabc")}),
        "GET /compute": lambda: client.get(COMPUTE, query_string={"owner": OWNER, **provider.signed(OWNER)}),
        "PUT /compute": lambda: client.put(COMPUTE, query_string={"owner": OWNER, **provider.signed(OWNER)}),
        "GET /runningjobs": lambda: client.get("/api/v1/operator/runningjobs"),
        "GET /environments": lambda: client.get("/api/v1/operator/environments"),
        "POST /pgsqlinit": lambda: client.post("/api/v1/operator/pgsqlinit", headers={"Admin": ADMIN_SECRET}),
    }
    for name, call in calls.items():
        response = call()
        assert response.status_code == 503, name
        assert response.get_json()["error"].startswith("Database unavailable"), name

    server.start()
    response = client.get(COMPUTE, query_string={"owner": OWNER, **provider.signed(OWNER)})
    assert response.status_code == 200
    assert [job["owner"] for job in response.get_json()] == [OWNER]


def test_concurrent_posts_with_one_agreement_create_one_job(app, engine, provider, db):
    """The original's Python-side check let both through."""
    engine.announce()

    def post() -> int:
        body = compute_body(agreement_id="0xsame")
        body.update(provider.signed(OWNER))
        return app.test_client().post(COMPUTE, json=body).status_code

    codes = run_together(6, post)
    assert sorted(codes) == [200] + [400] * 5
    with db.transaction() as cur:
        cur.execute("SELECT count(*) FROM jobs WHERE agreementId = '0xsame'")
        assert cur.fetchone()[0] == 1


def test_secrets_never_reach_the_logs(make_app, db, engine, provider, caplog):
    """The original logged the Admin header, signatures and payloads."""
    caplog.set_level(logging.DEBUG)
    client = make_app(LOG_LEVEL="DEBUG").test_client()
    engine.announce()
    body = compute_body()
    body.update(provider.signed(OWNER))
    client.post(COMPUTE, json=body)
    client.post(COMPUTE, json=body)
    client.post("/api/v1/operator/pgsqlinit", headers={"Admin": ADMIN_SECRET})
    client.post("/api/v1/operator/pgsqlinit", headers={"Admin": "wrong-secret"})
    logged = caplog.text
    assert caplog.records, "the requests above must have logged something to check"
    for secret in (ADMIN_SECRET, "wrong-secret", body["providerSignature"], provider.private_key[2:]):
        assert secret not in logged
