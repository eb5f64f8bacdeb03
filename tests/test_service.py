"""GET /, the API docs, /environments, /pgsqlinit and the schema migrations."""

from __future__ import annotations

import json

import psycopg2

from operator_service import __version__
from operator_service.store import migrations
from operator_service.store.pool import Database
from tests.original_schema import ORIGINAL_HEAD_SCHEMA

INIT = "/api/v1/operator/pgsqlinit"
ALL_VERSIONS = [version for version, _, _ in migrations.MIGRATIONS]


def test_root_reports_the_installed_version_and_operator_settings(make_settings, db, make_app):
    """The original read a relative .bumpversion.cfg on every call."""
    settings = make_settings(OPERATOR_ADDRESS="0xabc", ALGO_POD_TIMEOUT="3600", STORAGE_EXPIRY="60")
    body = make_app(settings).test_client().get("/").get_json()
    assert body["software"] == "Operator service"
    assert body["version"] == __version__
    assert (body["address"], body["algoTimeLimit"], body["storageExpiry"]) == ("0xabc", "3600", "60")
    assert body["kubernetes"] == "off: running without Kubernetes"


def test_spec_documents_every_route_with_parameters_and_responses(client, app):
    spec = client.get("/spec").get_json()
    assert spec["info"]["title"] == "Operator service"
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    routes = {
        (str(rule), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith(("operator.", "admin.")) or rule.endpoint == "version"
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes <= documented
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert operation.get("responses"), f"{method} {path} documents no responses"
    post = spec["paths"]["/api/v1/operator/compute"]["post"]
    assert post["parameters"][0]["schema"]["required"][:3] == ["workflow", "agreementId", "owner"]


def test_swagger_ui_loads_the_spec_from_its_own_origin(client):
    """The original UI pointed at a fixed http://localhost:8050/spec."""
    page = client.get("/api/v1/docs/", base_url="http://ops.example:9000")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert '"url": "../../../spec"' in text
    assert "localhost" not in text


def test_environments_returns_announced_documents(client, engine):
    engine.announce(ramGB="64", allowedChainId=[8996])
    [environment] = client.get("/api/v1/operator/environments", query_string={"chainId": 8996}).get_json()
    assert environment["id"] == "ocean-compute"
    assert environment["ramGB"] == "64" and environment["cpuNumber"] == 1
    assert float(environment["lastSeen"]) > 0 and isinstance(environment["lastSeen"], str)
    assert client.get("/api/v1/operator/environments", query_string={"chainId": 1}).get_json() == []


def test_environments_without_a_chain_filter_lists_open_environments(client, engine):
    engine.announce()
    assert [env["id"] for env in client.get("/api/v1/operator/environments").get_json()] == ["ocean-compute"]


def test_environments_skip_a_status_that_is_not_json(client, engine, db):
    engine.announce()
    with db.transaction() as cur:
        cur.execute("INSERT INTO envs (namespace, status) VALUES ('broken', 'not json')")
    assert [env["id"] for env in client.get("/api/v1/operator/environments").get_json()] == ["ocean-compute"]


def test_pgsqlinit_needs_the_admin_header(client, admin_headers):
    assert client.post(INIT, headers=admin_headers).status_code == 200
    empty = client.post(INIT)
    assert (empty.status_code, empty.get_json()) == (401, {"error": "Admin header is empty."})
    wrong = client.post(INIT, headers={"Admin": "foo_admin"})
    assert (wrong.status_code, wrong.get_json()) == (
        401,
        {"error": "Access admin route failed due to invalid admin address."},
    )


def test_admin_secret_is_compared_case_insensitively(client):
    assert client.post(INIT, headers={"Admin": "TEST-ADMIN-SECRET"}).status_code == 200


def test_without_allowed_admins_admin_routes_answer_401(make_app, db):
    """The original answered 500 when ALLOWED_ADMINS was unset."""
    client = make_app(ALLOWED_ADMINS="").test_client()
    assert client.post(INIT, headers={"Admin": "anything"}).status_code == 401


def _schema(settings) -> dict:
    conn = psycopg2.connect(**settings.postgres.dsn_kwargs())
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT column_name FROM information_schema.columns WHERE table_name = 'jobs'")
            columns = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT indexname FROM pg_indexes WHERE tablename IN ('jobs', 'envs', 'nonces')")
            indexes = {row[0] for row in cur.fetchall()}
            cur.execute("SELECT count(*) FROM pg_proc WHERE proname = 'announce'")
            functions = cur.fetchone()[0]
        return {"columns": columns, "indexes": indexes, "announce": functions}
    finally:
        conn.close()


def test_pgsqlinit_commits_the_whole_schema(fresh_database, admin_headers, make_app):
    """The original never committed did, chainid and indx_owner_jobs."""
    client = make_app(fresh_database).test_client()
    response = client.post(INIT, headers=admin_headers)
    assert response.get_json() == {"version": migrations.LATEST_VERSION, "applied": ALL_VERSIONS}
    schema = _schema(fresh_database)
    assert {"did", "chainid", "provider", "workflow", "stopreq", "removed", "outputsurl"} <= schema["columns"]
    assert {"indx_owner_jobs", "uniq_agreementid_workflowid", "unique_namespace", "uniq_running_agreementid"} <= schema[
        "indexes"
    ]
    assert schema["announce"] == 1


def test_pgsqlinit_is_idempotent(fresh_database, admin_headers, make_app):
    client = make_app(fresh_database).test_client()
    client.post(INIT, headers=admin_headers)
    again = client.post(INIT, headers=admin_headers)
    assert again.get_json() == {"version": migrations.LATEST_VERSION, "applied": []}


def test_pgsqlinit_upgrades_a_database_of_the_original_service(
    fresh_database, admin_headers, provider, engine, make_app
):
    conn = psycopg2.connect(**fresh_database.postgres.dsn_kwargs())
    with conn, conn.cursor() as cur:
        cur.execute(ORIGINAL_HEAD_SCHEMA)
    conn.close()
    client = make_app(fresh_database).test_client()
    assert client.post(INIT, headers=admin_headers).get_json()["applied"] == ALL_VERSIONS
    assert {"did", "chainid"} <= _schema(fresh_database)["columns"]
    query = {"jobId": "oldjob", "owner": "0xowner", **provider.signed("0xowner", "oldjob")}
    [old] = client.get("/api/v1/operator/compute", query_string=query).get_json()
    assert (old["agreementId"], old["status"]) == ("0xold", 70)


def test_schema_version_is_recorded(fresh_database):
    db = Database(fresh_database.postgres)
    assert migrations.current_version(db) == 0
    migrations.upgrade(db)
    assert migrations.current_version(db) == migrations.LATEST_VERSION
    db.close()


def test_timestamps_are_utc_whatever_the_session_time_zone(submit, db, engine, client, provider):
    """NOW() in a non-UTC session used to shift dateCreated/dateFinished."""
    [job] = submit().get_json()
    with psycopg2.connect(**{**engine.dsn, "options": "-c timezone=Asia/Tokyo"}) as conn, conn.cursor() as cur:
        cur.execute("UPDATE jobs SET dateFinished = timezone('UTC', now()) WHERE workflowId = %s", (job["jobId"],))
    query = {"jobId": job["jobId"], "owner": job["owner"], **provider.signed(job["owner"], job["jobId"])}
    [finished] = client.get("/api/v1/operator/compute", query_string=query).get_json()
    assert abs(float(finished["dateFinished"]) - float(job["dateCreated"])) < 60
    assert json.loads(json.dumps(finished))["dateFinished"] == finished["dateFinished"]
