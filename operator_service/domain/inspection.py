"""What the admin routes read of the cluster: the WorkFlows, one job's WorkFlow, a stage pod's log."""

from __future__ import annotations

from operator_service.cluster.client import Cluster, KubernetesUnavailable
from operator_service.domain.environments import workflow_namespaces
from operator_service.domain.errors import NotFound
from operator_service.store import jobs
from operator_service.store.pool import Database

COMPONENTS = ("configure", "algorithm", "filter", "publish")


def require_cluster(cluster: Cluster | None, mode: str) -> Cluster:
    if cluster is None:
        raise KubernetesUnavailable(f"Kubernetes unavailable: the service runs without a cluster (KUBERNETES={mode})")
    return cluster


def workflow_names(db: Database, cluster: Cluster, default_namespace: str) -> list[str]:
    """Names (job ids) of the WorkFlows in every environment's namespace."""
    names: list[str] = []
    for namespace in workflow_namespaces(db, default_namespace):
        names.extend(item["metadata"]["name"] for item in cluster.list_workflows(namespace))
    return names


def workflow_of(db: Database, cluster: Cluster, job_id: str) -> dict:
    workflow = cluster.get_workflow(_namespace_of(db, job_id), job_id)
    if workflow is None:
        raise NotFound(f"The jobId {job_id} is not registered in your namespace.")
    return workflow


def pod_log(db: Database, cluster: Cluster, job_id: str, component: str) -> str:
    """The log of the job's pod for one stage (the engines label them workflow=<jobId>, component=...)."""
    namespace = _namespace_of(db, job_id)
    missing = NotFound(f"Pod with workflow={job_id} and component={component} not found")
    pods = cluster.find_pods(namespace, job_id, component)
    if not pods:
        raise missing
    text = cluster.read_pod_log(namespace, pods[0])
    if text is None:
        raise missing
    return text


def _namespace_of(db: Database, job_id: str) -> str:
    namespace = jobs.job_namespace(db, job_id)
    if namespace is None:
        raise NotFound(f"The jobId {job_id} is not registered in your namespace.")
    return namespace
