"""What every client sees at the edge: CORS, the probes, and whether signatures are enforced."""

from __future__ import annotations

import logging
import time

import pytest

from operator_service.store import migrations
from operator_service.tools.embedded_db import free_port

COMPUTE = "/api/v1/operator/compute"
ORIGIN = "https://market.example"


def _readiness_becomes(client, status: int, deadline: float = 15.0):
    """The /readyz answer once it has the status (it is cached for a second); fails after `deadline` s."""
    give_up = time.monotonic() + deadline
    while True:
        response = client.get("/readyz")
        if response.status_code == status or time.monotonic() > give_up:
            assert response.status_code == status, response.get_json()
            return response
        time.sleep(0.2)


# --- CORS ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "method, path",
    [("GET", "/"), ("GET", "/api/v1/operator/environments"), ("GET", COMPUTE), ("POST", COMPUTE), ("GET", "/readyz")],
)
def test_every_route_allows_any_origin_by_default(client, method, path):
    """The original answered every route with Access-Control-Allow-Origin: * (Flask-Cors), errors included."""
    response = client.open(path, method=method, headers={"Origin": ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_a_browser_preflight_for_a_signed_post_is_allowed(client):
    response = client.options(
        COMPUTE,
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"].lower() == "content-type"


def test_cors_origins_lists_the_origins_allowed(make_app, db):
    client = make_app(CORS_ORIGINS=f'["{ORIGIN}"]').test_client()
    assert client.get("/", headers={"Origin": ORIGIN}).headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "Access-Control-Allow-Origin" not in client.get("/", headers={"Origin": "https://other.example"}).headers


def test_an_empty_cors_origins_list_sends_no_cors_headers(make_app, db):
    client = make_app(CORS_ORIGINS="[]").test_client()
    response = client.get("/", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert not [name for name, _ in response.headers if name.startswith("Access-Control-")]


# --- probes --------------------------------------------------------------------------------------
def test_liveness_and_readiness_need_no_credentials(client):
    assert (client.get("/livez").status_code, client.get("/livez").get_json()) == (200, {"status": "alive"})
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json() == {
        "status": "ready",
        "schemaVersion": migrations.LATEST_VERSION,
        "kubernetes": "not used",
    }


def test_with_the_database_down_the_service_is_alive_but_not_ready(make_app, db):
    """GET / answered 200 with the database down, so a probe on it could not tell."""
    client = make_app(POSTGRES_HOST="127.0.0.1", POSTGRES_PORT=str(free_port())).test_client()
    assert client.get("/livez").status_code == 200
    assert client.get("/").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["error"].startswith("Database unavailable: ")
    assert ready.get_json()["schemaVersion"] is None


def test_a_schema_not_yet_migrated_is_not_ready_until_pgsqlinit(fresh_database, admin_headers, make_app):
    app = make_app(fresh_database)
    client = app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.get_json()["schemaVersion"] == 0
    assert "pgsqlinit" in ready.get_json()["error"]
    assert client.post("/api/v1/operator/pgsqlinit", headers=admin_headers).status_code == 200
    assert _readiness_becomes(client, 200).get_json()["schemaVersion"] == migrations.LATEST_VERSION


def test_with_a_cluster_readiness_also_asks_the_cluster(cluster_app, fake_kube):
    client = cluster_app.test_client()
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["kubernetes"].startswith("kubeconfig")
    fake_kube.down()
    not_ready = _readiness_becomes(client, 503)
    assert not_ready.get_json()["error"].startswith("Kubernetes unavailable: GET /version failed")


def test_readiness_is_checked_at_most_once_a_second_however_often_it_is_asked(cluster_app, fake_kube):
    client = cluster_app.test_client()
    before = fake_kube.count("GET", r"^/version")
    started = time.monotonic()
    for _ in range(50):
        assert client.get("/readyz").status_code == 200
    elapsed = time.monotonic() - started
    asked = fake_kube.count("GET", r"^/version") - before
    assert 1 <= asked <= 1 + int(elapsed)


# --- unsigned mode -------------------------------------------------------------------------------
def test_get_root_says_whether_signatures_are_enforced(make_app, db):
    unsigned = make_app().test_client().get("/").get_json()
    assert unsigned["signatures"].startswith("not enforced")
    signed = make_app(SIGNATURE_REQUIRED="1", ALLOWED_PROVIDERS='["0xabc"]').test_client().get("/").get_json()
    assert signed["signatures"].startswith("enforced")
    assert {key for key in unsigned if key != "signatures"} == {
        "address",
        "algoTimeLimit",
        "kubernetes",
        "software",
        "storageExpiry",
        "version",
    }


def test_unsigned_mode_is_logged_at_start_up(make_app, db, caplog):
    with caplog.at_level(logging.WARNING, logger="operator_service.api.app"):
        make_app()
    assert any("NOT enforced" in record.getMessage() for record in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="operator_service.api.app"):
        make_app(SIGNATURE_REQUIRED="1")
    assert not any("NOT enforced" in record.getMessage() for record in caplog.records)
