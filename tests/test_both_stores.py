"""Both stores or neither, for every write with a cluster: failures the database or the cluster
injects at each step, and what the reconciler finishes afterwards.

Database failures are injected in the database itself (a constraint, a trigger, a real
statement timeout), cluster failures in the fake API server; nothing is patched.
"""

from __future__ import annotations

import pytest

from operator_service.cluster.workflows import STOP_ANNOTATION
from operator_service.domain.reconciler import reconcile
from tests.conftest import OWNER, compute_body

COMPUTE = "/api/v1/operator/compute"
WORKFLOWS = r"/apis/oceanprotocol.com/v1alpha/namespaces/ocean-compute/workflows"
ATTEMPTS = 3  # the cluster module tries an idempotent call three times

# Each refuses the registration's "make eligible" step (status 0 -> 1) in its own way.
QUEUE_STEP_FAILURES = {
    "a check constraint": (
        "ALTER TABLE jobs ADD CONSTRAINT test_refuse_queueing CHECK (status <> 1) NOT VALID",
        "ALTER TABLE jobs DROP CONSTRAINT test_refuse_queueing",
    ),
    "a trigger": (
        "CREATE FUNCTION test_refuse_queueing() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN RAISE EXCEPTION 'queueing refused by a trigger'; END $$;"
        " CREATE TRIGGER test_refuse_queueing BEFORE UPDATE ON jobs FOR EACH ROW"
        " WHEN (OLD.status = 0 AND NEW.status = 1) EXECUTE PROCEDURE test_refuse_queueing()",
        "DROP TRIGGER test_refuse_queueing ON jobs; DROP FUNCTION test_refuse_queueing()",
    ),
    "a statement timeout": (
        "CREATE FUNCTION test_refuse_queueing() RETURNS trigger LANGUAGE plpgsql AS $$"
        " BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$;"
        " CREATE TRIGGER test_refuse_queueing BEFORE UPDATE ON jobs FOR EACH ROW"
        " WHEN (OLD.status = 0 AND NEW.status = 1) EXECUTE PROCEDURE test_refuse_queueing()",
        "DROP TRIGGER test_refuse_queueing ON jobs; DROP FUNCTION test_refuse_queueing()",
    ),
}


@pytest.fixture
def cluster_client(make_app, db, kubeconfig, monkeypatch):
    """The app with a cluster, statements limited to 1 s so that a timeout is quick to provoke."""
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    return make_app(KUBERNETES="on", POSTGRES_TIMEOUT="1")


def _post(app, provider, engine, agreement_id: str = "0x1"):
    engine.announce()
    body = compute_body(agreement_id=agreement_id)
    body.update(provider.signed(OWNER))
    return app.test_client().post(COMPUTE, json=body)


def _job_rows(db) -> list[tuple]:
    with db.transaction() as cur:
        cur.execute("SELECT workflowId, status, stopreq, removed, stopAnnotationPending FROM jobs ORDER BY workflowId")
        return cur.fetchall()


def _signed(provider, job_id: str) -> dict:
    return {"owner": OWNER, "jobId": job_id, **provider.signed(OWNER, job_id)}


@pytest.mark.parametrize("failure", sorted(QUEUE_STEP_FAILURES))
def test_any_database_failure_at_the_queue_step_undoes_both_stores(
    failure, cluster_client, provider, engine, fake_kube, db
):
    install, remove = QUEUE_STEP_FAILURES[failure]
    with db.transaction() as cur:
        cur.execute(install)
    try:
        response = _post(cluster_client, provider, engine)
    finally:
        with db.transaction() as cur:
            cur.execute(remove)
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.get_json()["error"].startswith("Database unavailable")
    assert _job_rows(db) == [], "the status-0 row is withdrawn at once, not after the grace period"
    assert fake_kube.objects() == []
    assert _post(cluster_client, provider, engine).status_code == 200, "the agreementId is free again"


def test_a_stop_whose_annotation_failed_is_recorded_and_delivered_by_the_reconciler(
    cluster_client, provider, engine, fake_kube, db
):
    [job] = _post(cluster_client, provider, engine).get_json()
    fake_kube.inject_fault("PATCH", WORKFLOWS, status=500, times=ATTEMPTS)
    response = cluster_client.test_client().put(COMPUTE, query_string=_signed(provider, job["jobId"]))
    assert response.status_code == 503
    assert "retried until it lands" in response.get_json()["error"]
    assert _job_rows(db) == [(job["jobId"], 1, 1, 0, True)]
    [resource] = fake_kube.objects()
    assert STOP_ANNOTATION not in resource["metadata"].get("annotations", {})

    cluster = cluster_client.extensions["operator_service"].cluster
    assert reconcile(db, cluster, 60.0, ["ocean-compute"]) == 1
    [resource] = fake_kube.objects()
    assert resource["metadata"]["annotations"] == {STOP_ANNOTATION: "true"}
    assert _job_rows(db) == [(job["jobId"], 1, 1, 0, False)]
    assert reconcile(db, cluster, 60.0, ["ocean-compute"]) == 0


def test_a_repeated_put_delivers_the_annotation_an_earlier_one_owed(cluster_client, provider, engine, fake_kube, db):
    [job] = _post(cluster_client, provider, engine).get_json()
    client = cluster_client.test_client()
    fake_kube.inject_fault("PATCH", WORKFLOWS, status=500, times=ATTEMPTS)
    assert client.put(COMPUTE, query_string=_signed(provider, job["jobId"])).status_code == 503

    again = client.put(COMPUTE, query_string=_signed(provider, job["jobId"]))
    assert again.status_code == 200
    assert again.get_json()[0]["stopreq"] == 1
    [resource] = fake_kube.objects()
    assert resource["metadata"]["annotations"] == {STOP_ANNOTATION: "true"}
    assert _job_rows(db) == [(job["jobId"], 1, 1, 0, False)]


def test_a_delete_the_cluster_refused_is_finished_by_the_reconciler(cluster_client, provider, engine, fake_kube, db):
    [job] = _post(cluster_client, provider, engine).get_json()
    fake_kube.inject_fault("DELETE", WORKFLOWS, status=500, times=ATTEMPTS)
    response = cluster_client.test_client().delete(COMPUTE, query_string=_signed(provider, job["jobId"]))
    assert response.status_code == 503
    assert [row[3] for row in _job_rows(db)] == [1]
    assert len(fake_kube.objects()) == 1

    cluster = cluster_client.extensions["operator_service"].cluster
    assert reconcile(db, cluster, 60.0, ["ocean-compute"]) == 1
    assert fake_kube.objects() == []
    assert [row[3] for row in _job_rows(db)] == [1], "the row stays, marked removed"
