"""operator_service.cluster.client against the fake API server over real HTTP (tests/fake_kube.py).

Nothing here replaces the kubernetes client or cluster/client.py; monkeypatch only sets environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable

import pytest

from operator_service.cluster import client as kube
from operator_service.cluster import workflows
from operator_service.model.workflow import JobDocument
from tests.fake_kube import FakeKubernetes
from tests.kube_samples import JOB, SAMPLE_WORKFLOW, workflow_body
from tests.kube_samples import NAMESPACE as NS

Unavailable = kube.KubernetesUnavailable
WORKFLOWS = f"/apis/oceanprotocol.com/v1alpha/namespaces/{NS}/workflows"
CREATE_FAILED = f"^Kubernetes unavailable: create WorkFlow {JOB} in {NS} failed: "


def test_a_job_s_workflow_body_names_labels_and_carries_the_workflow():
    body = workflows.workflow_body(JOB, NS, SAMPLE_WORKFLOW, secret="a-job-secret")
    assert (body["apiVersion"], body["kind"]) == ("oceanprotocol.com/v1alpha", "WorkFlow")
    assert body["metadata"] == {"name": JOB, "namespace": NS, "labels": {"workflow": JOB}, "secret": "a-job-secret"}
    assert body["spec"] == {"metadata": SAMPLE_WORKFLOW}
    stored = JobDocument.parse(json.dumps(body))
    assert (stored.secret, stored.stage.listed_dids()) == ("a-job-secret", ("did:op:algo", ["did:op:1234"])), (
        "the engines read what the service builds"
    )


@pytest.fixture(autouse=True)
def no_ambient_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """No in-cluster variables, no KUBECONFIG and a HOME without .kube, unless a test sets them."""
    for name in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path_factory.mktemp("home")))


def connect_to(
    connect_cluster: Callable[..., kube.Cluster | None],
    kubeconfig: str,
    monkeypatch: pytest.MonkeyPatch,
    timeout: float = 1.0,
) -> kube.Cluster:
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    cluster = connect_cluster("auto", timeout=timeout)
    assert cluster is not None
    return cluster


@pytest.fixture
def cluster(connect_cluster, kubeconfig: str, monkeypatch: pytest.MonkeyPatch) -> kube.Cluster:
    return connect_to(connect_cluster, kubeconfig, monkeypatch)


# --- round trips -------------------------------------------------------------------------------
def test_create_returns_the_stored_object_and_get_reads_it_back(cluster, fake_kube):
    body = workflow_body()
    created = cluster.create_workflow(body)
    assert created["spec"] == body["spec"]
    assert created["metadata"]["labels"] == {"workflow": JOB}
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    assert cluster.get_workflow(NS, JOB) == created
    assert fake_kube.objects(NS) == [created]


def test_get_of_a_missing_workflow_is_none(cluster):
    cluster.create_workflow(workflow_body())
    assert cluster.get_workflow(NS, "f" * 32) is None
    assert cluster.get_workflow("other-env", JOB) is None


def test_list_filters_by_namespace_and_label_selector(cluster):
    jobs = ["a" * 32, "b" * 32, "c" * 32]
    cluster.create_workflow(workflow_body(jobs[0], tier="gpu"))
    cluster.create_workflow(workflow_body(jobs[1]))
    cluster.create_workflow(workflow_body(jobs[2], namespace="other-env"))

    def names(selector: str | None) -> list[str]:
        return [item["metadata"]["name"] for item in cluster.list_workflows(NS, selector)]

    assert names(None) == jobs[:2]
    assert names(f"workflow={jobs[1]}") == [jobs[1]]
    assert names(f"workflow!={jobs[1]}") == [jobs[0]]
    assert names("tier") == [jobs[0]]
    assert names(f"workflow={jobs[2]}") == []


def test_annotate_merges_annotations_and_changes_resource_version(cluster, fake_kube):
    body = workflow_body()
    body["metadata"]["annotations"] = {"note": "kept"}
    before = cluster.create_workflow(body)

    assert cluster.annotate_workflow(NS, JOB, {workflows.STOP_ANNOTATION: "1"}) is True

    after = cluster.get_workflow(NS, JOB)
    assert after is not None
    assert after["metadata"]["annotations"] == {"note": "kept", workflows.STOP_ANNOTATION: "1"}
    assert after["metadata"]["labels"] == before["metadata"]["labels"]
    assert after["spec"] == before["spec"]
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    patches = [request for request in fake_kube.request_log if request.method == "PATCH"]
    assert [patch.content_type for patch in patches] == ["application/merge-patch+json"]


def test_annotate_of_a_missing_workflow_is_false(cluster):
    assert cluster.annotate_workflow(NS, JOB, {workflows.STOP_ANNOTATION: "1"}) is False


def test_delete_removes_the_workflow_in_the_background(cluster, fake_kube):
    cluster.create_workflow(workflow_body())
    assert cluster.delete_workflow(NS, JOB) is True
    assert fake_kube.objects() == []
    assert fake_kube.request_log[-1].query.get("propagationPolicy") == "Background"
    assert cluster.delete_workflow(NS, JOB) is False


def test_create_of_an_existing_name_returns_the_existing_object(cluster, fake_kube):
    first = cluster.create_workflow(workflow_body())
    again = cluster.create_workflow(workflow_body())
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    assert len(fake_kube.objects()) == 1


def test_a_body_the_server_rejects_is_unavailable_and_not_retried(cluster, fake_kube):
    body = workflow_body()
    body["apiVersion"] = "v0.0.1"  # what the original HEAD wrote
    with pytest.raises(Unavailable, match=CREATE_FAILED + "422 "):
        cluster.create_workflow(body)
    assert fake_kube.requests[-1] == ("POST", WORKFLOWS)
    assert fake_kube.count("POST", WORKFLOWS) == 1
    assert fake_kube.objects() == []


# --- retries, faults and timeouts --------------------------------------------------------------
IDEMPOTENT_CALLS = {
    "get": ("GET", f"{WORKFLOWS}/{JOB}$", lambda c: c.get_workflow(NS, JOB) is not None),
    "list": ("GET", f"{WORKFLOWS}$", lambda c: len(c.list_workflows(NS)) == 1),
    "annotate": ("PATCH", f"{WORKFLOWS}/{JOB}$", lambda c: c.annotate_workflow(NS, JOB, {"a": "b"})),
    "delete": ("DELETE", f"{WORKFLOWS}/{JOB}$", lambda c: c.delete_workflow(NS, JOB)),
    "find_pods": ("GET", "/pods$", lambda c: c.find_pods(NS, JOB, "algorithm") == ["pod-1"]),
    "read_pod_log": ("GET", "/pods/pod-1/log$", lambda c: c.read_pod_log(NS, "pod-1") == "done\n"),
}


@pytest.fixture
def populated(cluster: kube.Cluster, fake_kube: FakeKubernetes) -> kube.Cluster:
    cluster.create_workflow(workflow_body())
    fake_kube.add_pod(NS, "pod-1", {"workflow": JOB, "component": "algorithm"}, "done\n")
    return cluster


@pytest.mark.parametrize(("call", "status"), [(call, 500) for call in IDEMPOTENT_CALLS] + [("get", 503), ("get", 429)])
def test_idempotent_calls_retry_a_transient_error(call, status, populated, fake_kube):
    method, path, succeeds = IDEMPOTENT_CALLS[call]
    fake_kube.inject_fault(method, path, status=status)
    assert succeeds(populated)
    assert fake_kube.count(method, path) == 2


def test_retries_are_bounded(populated, fake_kube):
    fake_kube.inject_fault("GET", f"{WORKFLOWS}/{JOB}$", status=500, times=None)
    with pytest.raises(Unavailable, match=f"^Kubernetes unavailable: get WorkFlow {JOB} in {NS} failed: 500"):
        populated.get_workflow(NS, JOB)
    assert fake_kube.count("GET", f"{WORKFLOWS}/{JOB}$") == 3  # the call and retries=2


@pytest.mark.parametrize("status", [400, 401, 403, 409, 422])
def test_client_and_permission_errors_are_not_retried(status, populated, fake_kube):
    fake_kube.inject_fault("GET", f"{WORKFLOWS}$", status=status)
    with pytest.raises(Unavailable, match=f"failed: {status}"):
        populated.list_workflows(NS)
    assert fake_kube.count("GET", f"{WORKFLOWS}$") == 1


def test_a_wrong_token_is_unavailable(fake_kube, tmp_path, monkeypatch, connect_cluster):
    cluster = connect_to(connect_cluster, fake_kube.write_kubeconfig(tmp_path / "wrong", token="wrong"), monkeypatch)
    with pytest.raises(Unavailable, match="failed: 401 Unauthorized"):
        cluster.list_workflows(NS)
    assert fake_kube.count("GET", f"{WORKFLOWS}$") == 1


def test_a_404_that_names_no_object_is_unavailable_not_absent(populated, fake_kube):
    """A missing CRD answers 404 without naming the object: that is a broken cluster, not "no job"."""
    fake_kube.inject_fault("GET", f"{WORKFLOWS}/{JOB}$", status=404)
    with pytest.raises(Unavailable, match="failed: 404"):
        populated.get_workflow(NS, JOB)


def test_create_is_not_repeated_after_a_500(cluster, fake_kube):
    fake_kube.inject_fault("POST", f"{WORKFLOWS}$", status=500)
    with pytest.raises(Unavailable, match=CREATE_FAILED + "500 "):
        cluster.create_workflow(workflow_body())
    assert fake_kube.count("POST", WORKFLOWS) == 1
    assert fake_kube.count("GET", f"{WORKFLOWS}/{JOB}$") == 1  # it looked whether the POST took effect
    assert fake_kube.objects() == []


def test_create_whose_reply_was_lost_still_succeeds(cluster, fake_kube):
    fake_kube.fail_after("POST", f"{WORKFLOWS}$", status=500)
    created = cluster.create_workflow(workflow_body())
    assert created == fake_kube.objects(NS)[0]
    assert fake_kube.count("POST", WORKFLOWS) == 1


def test_create_that_times_out_is_unavailable(kubeconfig, fake_kube, monkeypatch, connect_cluster):
    cluster = connect_to(connect_cluster, kubeconfig, monkeypatch, timeout=0.3)
    fake_kube.inject_delay("POST", f"{WORKFLOWS}$", seconds=5)
    started = time.monotonic()
    with pytest.raises(Unavailable, match=r"^Kubernetes unavailable: create .* no answer within 0\.3 s"):
        cluster.create_workflow(workflow_body())
    assert time.monotonic() - started < 2
    assert fake_kube.count("POST", WORKFLOWS) == 1


def test_delete_whose_reply_was_lost_reports_the_deletion(populated, fake_kube):
    fake_kube.fail_after("DELETE", f"{WORKFLOWS}/{JOB}$", status=500)
    assert populated.delete_workflow(NS, JOB) is True
    assert fake_kube.objects() == []


def test_a_slow_answer_is_retried_then_unavailable(kubeconfig, fake_kube, monkeypatch, connect_cluster):
    cluster = connect_to(connect_cluster, kubeconfig, monkeypatch, timeout=0.3)
    cluster.create_workflow(workflow_body())
    fake_kube.inject_delay("GET", f"{WORKFLOWS}/{JOB}$", seconds=5, times=1)
    assert cluster.get_workflow(NS, JOB) is not None

    fake_kube.inject_delay("GET", f"{WORKFLOWS}/{JOB}$", seconds=5, times=None)
    with pytest.raises(Unavailable, match=r"^Kubernetes unavailable: get .* no answer within 0\.3 s"):
        cluster.get_workflow(NS, JOB)
    assert fake_kube.count("GET", f"{WORKFLOWS}/{JOB}$") == 2 + 3


def test_a_server_that_is_down_is_unavailable_until_it_is_back(populated, fake_kube):
    fake_kube.down()
    with pytest.raises(Unavailable, match=f"^Kubernetes unavailable: get WorkFlow {JOB} .* cannot connect"):
        populated.get_workflow(NS, JOB)
    fake_kube.up()
    assert populated.get_workflow(NS, JOB) is not None


# --- pods --------------------------------------------------------------------------------------
def test_find_pods_matches_job_and_component_only(cluster, fake_kube):
    other = "e" * 32
    fake_kube.add_pod(NS, "job-configure", {"workflow": JOB, "component": "configure"})
    fake_kube.add_pod(NS, "job-algorithm", {"workflow": JOB, "component": "algorithm"})
    fake_kube.add_pod(NS, "other-algorithm", {"workflow": other, "component": "algorithm"})
    fake_kube.add_pod("other-env", "elsewhere", {"workflow": JOB, "component": "algorithm"})
    assert cluster.find_pods(NS, JOB, "algorithm") == ["job-algorithm"]
    assert cluster.find_pods(NS, JOB, "publish") == []


def test_find_pods_does_not_let_input_rewrite_the_selector(cluster, fake_kube):
    fake_kube.add_pod(NS, "job-algorithm", {"workflow": JOB, "component": "algorithm"})
    assert cluster.find_pods(NS, JOB, "algorithm,workflow!=x") == []
    assert cluster.find_pods(NS, f"{JOB},component=algorithm", "algorithm") == []
    assert cluster.find_pods(NS, "a" * 64, "algorithm") == []  # too long for a label value
    assert fake_kube.count("GET", "/pods$") == 0


def test_read_pod_log_returns_the_text_as_is(cluster, fake_kube):
    text = '{"looks": "like json"}\nünïcode line\n'
    fake_kube.add_pod(NS, "job-algorithm", {"workflow": JOB, "component": "algorithm"}, text)
    assert cluster.read_pod_log(NS, "job-algorithm") == text
    assert fake_kube.request_log[-1].query["limitBytes"] == str(kube.LOG_LIMIT_BYTES)


def test_read_pod_log_of_a_missing_pod_is_none(cluster):
    assert cluster.read_pod_log(NS, "no-such-pod") is None


# --- RBAC: the verbs the calls really use are the ones the Role grants ------------------------
def rbac_verb(method: str, path: str, query: dict[str, str]) -> tuple[str, str]:
    """(resource, verb) as the API server's RBAC authorizer sees a request."""
    workflows = re.fullmatch(r"/apis/oceanprotocol\.com/v1alpha/namespaces/[^/]+/workflows(/[^/]+)?", path)
    pods = re.fullmatch(r"/api/v1/namespaces/[^/]+/pods(/[^/]+)?(/log)?", path)
    if workflows:
        resource, named = "workflows", bool(workflows[1])
    elif pods:
        resource, named = ("pods/log" if pods[2] else "pods"), bool(pods[1])
    else:
        return (path, method)  # anything else needs a grant kube.RBAC_VERBS does not list
    if query.get("watch") in ("1", "true"):
        return (resource, "watch")
    verbs = {
        "GET": "get" if named else "list",
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if named else "deletecollection",
    }
    return (resource, verbs[method])


def test_the_requests_made_use_exactly_the_verbs_in_rbac_verbs(populated, fake_kube):
    populated.get_workflow(NS, JOB)
    populated.list_workflows(NS, f"workflow={JOB}")
    populated.annotate_workflow(NS, JOB, {workflows.STOP_ANNOTATION: "1"})
    populated.find_pods(NS, JOB, "algorithm")
    populated.read_pod_log(NS, "pod-1")
    populated.delete_workflow(NS, JOB)
    populated.create_workflow(workflow_body())  # create is exercised by the fixture too
    fake_kube.fail_after("POST", f"{WORKFLOWS}$")
    populated.create_workflow(workflow_body("d" * 32))  # create's recovery path

    seen: dict[str, set[str]] = {}
    for request in fake_kube.request_log:
        if request.path not in ("/version", "/version/"):  # public to every client, needs no Role
            resource, verb = rbac_verb(request.method, request.path, request.query)
            seen.setdefault(resource, set()).add(verb)
    assert seen == kube.RBAC_VERBS


# --- connect -----------------------------------------------------------------------------------
def test_connect_off_is_none(kubeconfig, monkeypatch, fake_kube, connect_cluster):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    assert connect_cluster("off") is None
    assert fake_kube.requests == []


def test_connect_rejects_an_unknown_mode(connect_cluster):
    with pytest.raises(ValueError, match="auto, on, off"):
        connect_cluster("maybe")


def test_connect_auto_without_any_config_is_none(tmp_path, monkeypatch, caplog, connect_cluster):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    with caplog.at_level(logging.INFO, logger="operator_service.cluster.client"):
        assert connect_cluster("auto") is None
    assert "running without Kubernetes" in caplog.text


def test_connect_on_without_any_config_is_unavailable(tmp_path, monkeypatch, connect_cluster):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    with pytest.raises(Unavailable, match="^Kubernetes unavailable: KUBERNETES=on"):
        connect_cluster("on")


def test_connect_auto_uses_kubeconfig_and_logs_no_token(kubeconfig, monkeypatch, caplog, fake_kube, connect_cluster):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    with caplog.at_level(logging.DEBUG, logger="operator_service.cluster.client"):
        cluster = connect_cluster("auto")
    assert cluster is not None
    assert cluster.source == f"kubeconfig:{kubeconfig}"
    assert cluster.create_workflow(workflow_body())["metadata"]["name"] == JOB
    assert kubeconfig in caplog.text
    assert fake_kube.token not in caplog.text


def test_connect_auto_reads_the_home_kubeconfig(fake_kube, monkeypatch, tmp_path, connect_cluster):
    (tmp_path / ".kube").mkdir()
    path = fake_kube.write_kubeconfig(tmp_path / ".kube" / "config")
    monkeypatch.setenv("HOME", str(tmp_path))
    cluster = connect_cluster("auto")
    assert cluster is not None and cluster.source == f"kubeconfig:{path}"
    assert cluster.list_workflows(NS) == []


def test_connect_skips_missing_entries_of_a_kubeconfig_path_list(kubeconfig, tmp_path, monkeypatch, connect_cluster):
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join([str(tmp_path / "missing"), kubeconfig]))
    cluster = connect_cluster("auto")
    assert cluster is not None and cluster.source == f"kubeconfig:{kubeconfig}"
    assert cluster.list_workflows(NS) == []


def test_connect_falls_back_to_kubeconfig_when_in_cluster_config_is_incomplete(
    kubeconfig, monkeypatch, connect_cluster
):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # no service-account token file here
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    cluster = connect_cluster("auto")
    assert cluster is not None and cluster.source.startswith("kubeconfig:")


def test_connect_on_probes_the_server(kubeconfig, monkeypatch, fake_kube, connect_cluster):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    assert connect_cluster("on") is not None
    assert fake_kube.requests == [("GET", "/version/")]


def test_connect_on_with_a_silent_server_is_unavailable(kubeconfig, monkeypatch, fake_kube, connect_cluster):
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    fake_kube.down()
    with pytest.raises(Unavailable, match="^Kubernetes unavailable: GET /version failed"):
        connect_cluster("on", retries=0)
    assert connect_cluster("auto") is not None  # auto does not probe


def test_a_broken_kubeconfig_is_ignored_by_auto_and_fatal_for_on(tmp_path, monkeypatch, connect_cluster):
    broken = tmp_path / "broken"
    broken.write_text("apiVersion: v1\nkind: Config\nclusters: [\n")
    monkeypatch.setenv("KUBECONFIG", str(broken))
    assert connect_cluster("auto") is None
    with pytest.raises(Unavailable, match=f"kubeconfig {broken} is unusable"):
        connect_cluster("on")


def test_clusters_from_different_kubeconfigs_stay_separate(
    kubeconfig, fake_kube, tmp_path, monkeypatch, connect_cluster
):
    second = FakeKubernetes(token="second-token").start()
    try:
        first_cluster = connect_to(connect_cluster, kubeconfig, monkeypatch)
        second_cluster = connect_to(connect_cluster, second.write_kubeconfig(tmp_path / "second"), monkeypatch)
        first_cluster.create_workflow(workflow_body())
        assert second_cluster.get_workflow(NS, JOB) is None
        assert [o["metadata"]["name"] for o in fake_kube.objects()] == [JOB]
        assert second.objects() == []
    finally:
        second.stop()
