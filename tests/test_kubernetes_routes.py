"""The routes with a cluster: WorkFlow registration both-or-neither, PUT/DELETE effects, admin routes.

The cluster is the fake API server of tests/fake_kube.py, reached over HTTP by the real
client through a kubeconfig; faults are injected in the fake, never by patching.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from decimal import Decimal

import pytest

from operator_service.cluster.workflows import STOP_ANNOTATION
from operator_service.config import load_settings
from operator_service.domain.reconciler import reconcile
from operator_service.store import jobs
from operator_service.store.nonces import SignedNonce
from operator_service.store.pool import Database
from tests.conftest import ADMIN_SECRET, OWNER, compute_body
from tests.ocean_engine import OceanEngine
from tests.waiting import wait_for

COMPUTE = "/api/v1/operator/compute"
ADMIN = {"Admin": ADMIN_SECRET}
CREATE = r"/apis/oceanprotocol.com/v1alpha/namespaces/ocean-compute/workflows$"


@pytest.fixture
def client(cluster_app):
    return cluster_app.test_client()


def _post(client, provider, engine, agreement_id="0x0"):
    engine.announce()
    body = compute_body(agreement_id=agreement_id)
    body.update(provider.signed(OWNER))
    return client.post(COMPUTE, json=body), body


def _rows(db) -> list[tuple]:
    with db.transaction() as cur:
        cur.execute("SELECT workflowId, status FROM jobs ORDER BY workflowId")
        return cur.fetchall()


def test_post_registers_the_workflow_resource(client, provider, engine, fake_kube, db):
    response, body = _post(client, provider, engine)
    assert response.status_code == 200
    [job] = response.get_json()
    [resource] = fake_kube.objects("ocean-compute")
    assert resource["apiVersion"] == "oceanprotocol.com/v1alpha" and resource["kind"] == "WorkFlow"
    assert resource["metadata"]["name"] == job["jobId"]
    assert resource["metadata"]["namespace"] == "ocean-compute"
    assert resource["metadata"]["labels"] == {"workflow": job["jobId"]}
    assert resource["spec"]["metadata"] == {**body["workflow"], "chainId": 8996}
    assert _rows(db) == [(job["jobId"], 1)]


def test_a_failed_create_leaves_no_trace(client, provider, engine, fake_kube, db):
    fake_kube.inject_fault("POST", CREATE, status=500)
    response, _ = _post(client, provider, engine)
    assert response.status_code == 503
    assert response.get_json()["error"].startswith("Kubernetes unavailable")
    assert _rows(db) == [] and fake_kube.objects() == []
    assert engine.announce() == []


def test_a_create_whose_reply_was_lost_still_registers_once(client, provider, engine, fake_kube, db):
    fake_kube.fail_after("POST", CREATE, status=504)
    response, _ = _post(client, provider, engine)
    assert response.status_code == 200
    [job] = response.get_json()
    assert [item["metadata"]["name"] for item in fake_kube.objects()] == [job["jobId"]]
    assert fake_kube.count("POST", CREATE) == 1


def test_an_unreachable_cluster_is_a_503_and_leaves_no_row(client, provider, engine, fake_kube, db):
    fake_kube.down()
    response, _ = _post(client, provider, engine)
    assert response.status_code == 503
    assert "Kubernetes" in response.get_json()["error"]
    assert _rows(db) == []


def test_a_registration_withdrawn_during_the_create_is_undone(client, provider, engine, fake_kube, db):
    """The row leaves status 0 while the resource is created: the queue step fails, the resource goes."""
    fake_kube.inject_delay("POST", CREATE, seconds=1.0)

    def withdraw() -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with db.transaction() as cur:
                cur.execute("DELETE FROM jobs WHERE status = 0")
                if cur.rowcount:
                    return
            time.sleep(0.05)

    thread = threading.Thread(target=withdraw)
    thread.start()
    response, _ = _post(client, provider, engine)
    thread.join()
    assert response.status_code == 503
    assert _rows(db) == [] and fake_kube.objects() == []


def test_database_dying_after_the_create_is_settled_by_the_reconciler(
    own_server, provider, fake_kube, kubeconfig, monkeypatch, make_app, connect_cluster
):
    server, env = own_server
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    settings = load_settings({**env, "KUBERNETES": "on"})
    db = Database(settings.postgres)
    client = make_app(settings).test_client()
    engine = OceanEngine(server.dsn_kwargs(env["POSTGRES_DB"]))
    stopped = threading.Event()
    fake_kube.hold("POST", CREATE, stopped)  # the create is answered once the database is down

    def stop_when_the_create_arrives() -> None:
        deadline = time.monotonic() + 60
        while fake_kube.count("POST", CREATE) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.stop()
        stopped.set()

    stopper = threading.Thread(target=stop_when_the_create_arrives)
    stopper.start()
    response, _ = _post(client, provider, engine)
    stopper.join()
    assert response.status_code == 503
    assert response.get_json()["error"].startswith("Database unavailable")
    assert len(fake_kube.objects()) == 1, "the resource outlived the request"

    server.start()
    assert engine.announce() == [], "a half-registered job is never handed to an engine"
    assert _rows(db) != []
    cluster = connect_cluster("on")
    assert reconcile(db, cluster, 0.0, ["ocean-compute"]) == 1
    assert _rows(db) == [] and fake_kube.objects() == []
    db.close()


def test_the_reconciler_settles_a_crash_between_the_steps(cluster_app, db, fake_kube):
    """A process that died after the create: a status-0 row and its resource, both withdrawn."""
    cluster = cluster_app.extensions["operator_service"].cluster
    _insert_registering(db, "crashed", "0x9")
    cluster.create_workflow(_resource("crashed"))
    cluster.create_workflow(_resource("orphan"))
    time.sleep(0.05)
    assert reconcile(db, cluster, 0.01, ["ocean-compute"]) == 2
    assert _rows(db) == [] and fake_kube.objects() == []


def test_the_reconciler_leaves_complete_registrations_alone(client, cluster_app, provider, engine, fake_kube, db):
    response, _ = _post(client, provider, engine)
    [job] = response.get_json()
    cluster = cluster_app.extensions["operator_service"].cluster
    assert reconcile(db, cluster, 0.0, ["ocean-compute"]) == 0
    assert _rows(db) == [(job["jobId"], 1)] and len(fake_kube.objects()) == 1


def _insert_registering(db: Database, job_id: str, agreement_id: str) -> None:
    """A status-0 row as a registration leaves it when its process dies after step 1."""
    signed = SignedNonce("0xp", str(time.time_ns()), Decimal(time.time()), 300)
    jobs.insert_job(
        db,
        job_id=job_id,
        agreement_id=agreement_id,
        owner=OWNER,
        document="{}",
        algo_did="raw",
        input_dids=[],
        namespace="ocean-compute",
        signed_nonce=signed,
        status=jobs.REGISTERING,
    )


def _resource(name: str) -> dict:
    return {
        "apiVersion": "oceanprotocol.com/v1alpha",
        "kind": "WorkFlow",
        "metadata": {"name": name, "namespace": "ocean-compute", "labels": {"workflow": name}},
        "spec": {"metadata": {}},
    }


def test_put_annotates_the_resource(client, provider, engine, fake_kube):
    response, _ = _post(client, provider, engine)
    [job] = response.get_json()
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    [stopped] = client.put(COMPUTE, query_string=query).get_json()
    assert stopped["stopreq"] == 1
    [resource] = fake_kube.objects()
    assert resource["metadata"]["annotations"] == {STOP_ANNOTATION: "true"}


def test_delete_removes_the_resource_and_flags_the_row(client, provider, engine, fake_kube):
    response, _ = _post(client, provider, engine)
    [job] = response.get_json()
    query = {"owner": OWNER, "jobId": job["jobId"], **provider.signed(OWNER, job["jobId"])}
    [removed] = client.delete(COMPUTE, query_string=query).get_json()
    assert (removed["removed"], removed["stopreq"]) == (1, 1)
    assert fake_kube.objects() == []


def test_admin_list_info_and_logs(client, provider, engine, fake_kube):
    response, _ = _post(client, provider, engine)
    [job] = response.get_json()
    assert client.get("/api/v1/operator/list", headers=ADMIN).get_json() == [job["jobId"]]
    info = client.get("/api/v1/operator/info", query_string={"jobId": job["jobId"]}, headers=ADMIN).get_json()
    assert info["metadata"]["name"] == job["jobId"] and info["spec"]["metadata"]["stages"]
    fake_kube.add_pod(
        "ocean-compute",
        f"{job['jobId']}-algorithm-job-x1",
        {"workflow": job["jobId"], "component": "algorithm"},
        "hello from the algorithm\n",
    )
    logs = client.get(
        "/api/v1/operator/logs", query_string={"jobId": job["jobId"], "component": "algorithm"}, headers=ADMIN
    )
    assert logs.status_code == 200
    assert logs.content_type == "text/plain; charset=utf-8"
    assert logs.get_data(as_text=True) == "hello from the algorithm\n"
    missing = client.get(
        "/api/v1/operator/logs", query_string={"jobId": job["jobId"], "component": "publish"}, headers=ADMIN
    )
    assert (missing.status_code, missing.get_json()) == (
        404,
        {"error": f"Pod with workflow={job['jobId']} and component=publish not found"},
    )


def test_admin_routes_need_the_admin_header(client):
    for path in (
        "/api/v1/operator/list",
        "/api/v1/operator/info?jobId=x",
        "/api/v1/operator/logs?jobId=x&component=algorithm",
    ):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Admin": "nope"}).status_code == 401


def test_info_of_an_unknown_job_is_a_404(client):
    response = client.get("/api/v1/operator/info", query_string={"jobId": "f" * 32}, headers=ADMIN)
    assert (response.status_code, response.get_json()) == (
        404,
        {"error": f"The jobId {'f' * 32} is not registered in your namespace."},
    )


def test_root_shows_the_kubernetes_source(client, kubeconfig):
    assert client.get("/").get_json()["kubernetes"] == f"on: kubeconfig:{kubeconfig}"


def test_without_kubernetes_the_service_starts_and_posts_work(make_app, db, provider, engine, tmp_path, monkeypatch):
    """KUBERNETES=off with no kubeconfig at all: POST works on the database alone, /list is a 503."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for mode in ("off", "auto"):
        client = make_app(KUBERNETES=mode).test_client()
        response, _ = _post(client, provider, engine, agreement_id=f"0x{mode}")
        assert response.status_code == 200
        listed = client.get("/api/v1/operator/list", headers=ADMIN)
        assert listed.status_code == 503 and "Kubernetes" in listed.get_json()["error"]
        assert client.get("/").get_json()["kubernetes"] == f"{mode}: running without Kubernetes"


def test_the_reconcile_command_settles_what_a_crash_left(
    base_env, db, fake_kube, kubeconfig, monkeypatch, connect_cluster
):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    _insert_registering(db, "leftover", "0x8")
    connect_cluster("on").create_workflow(_resource("leftover"))
    env = {
        **base_env,
        "PATH": os.environ["PATH"],
        "KUBECONFIG": kubeconfig,
        "KUBERNETES": "on",
        "REGISTRATION_GRACE": "0.01",
        "RECONCILE_INTERVAL": "0.2",
    }
    reconciler = subprocess.Popen([sys.executable, "-m", "operator_service.tools.cli", "reconcile"], env=env)
    try:
        wait_for(lambda: not (_rows(db) or fake_kube.objects()), "the reconciler to settle the job", timeout=20)
    finally:
        reconciler.send_signal(signal.SIGTERM)
    assert reconciler.wait(timeout=20) == 0, "SIGTERM stops it cleanly"
