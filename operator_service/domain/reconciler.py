"""The reconciler: settles what a crash or a failed call left half-way in one of the two stores.

One pass (`reconcile`):
- a registration still at status 0 after REGISTRATION_GRACE loses its WorkFlow and its row
  (its request never got an answer, so it leaves no trace);
- every stop annotation still owed to a WorkFlow is delivered;
- a WorkFlow whose job does not exist, or was deleted through the API, is deleted.

It runs as its own process, `operator-service reconcile` (`run_reconciler`): once at
start and then every RECONCILE_INTERVAL seconds, one per service deployment or pod (the
launcher of `make run` starts one; the Kubernetes manifests run it beside the API). Its
passes are idempotent, so several reconcilers (several replicas) do no harm. Without a
cluster there is nothing to settle, and it only waits to be stopped.
"""

from __future__ import annotations

import logging
import threading

from operator_service.cluster.client import Cluster, KubernetesUnavailable
from operator_service.config import Settings
from operator_service.domain.environments import workflow_namespaces
from operator_service.domain.lifecycle import deliver_stop_annotations
from operator_service.store import jobs
from operator_service.store.pool import Database, DatabaseUnavailable

log = logging.getLogger(__name__)


def reconcile(db: Database, cluster: Cluster, grace_seconds: float, namespaces: list[str]) -> int:
    """One pass over both stores; how many things it settled."""
    settled = 0
    for job_id, namespace in jobs.stale_registrations(db, grace_seconds):
        cluster.delete_workflow(namespace, job_id)
        jobs.delete_registering_job(db, job_id)
        log.info("reconciler: withdrew half-registered job %s", job_id)
        settled += 1
    owed = jobs.pending_stop_annotations(db)
    if owed:
        deliver_stop_annotations(db, cluster, owed)
        log.info("reconciler: delivered %d stop annotations", len(owed))
        settled += len(owed)
    for namespace in namespaces:
        names = [item["metadata"]["name"] for item in cluster.list_workflows(namespace)]
        live = jobs.live_job_ids(db, names)
        for name in names:
            if name not in live:
                cluster.delete_workflow(namespace, name)
                log.info("reconciler: deleted WorkFlow %s/%s whose job does not exist or was deleted", namespace, name)
                settled += 1
    return settled


def run_reconciler(db: Database, cluster: Cluster | None, settings: Settings, stop: threading.Event) -> None:
    """Reconcile now and every RECONCILE_INTERVAL seconds until `stop` is set."""
    if cluster is None:
        log.info("reconciler: the service runs without a cluster; nothing to reconcile")
        stop.wait()
        return
    log.info("reconciler: a pass now and every %g s", settings.reconcile_interval_seconds)
    while not stop.is_set():
        try:
            namespaces = workflow_namespaces(db, settings.default_namespace)
            reconcile(db, cluster, settings.registration_grace_seconds, namespaces)
        except (DatabaseUnavailable, KubernetesUnavailable) as exc:
            log.warning("reconciler pass skipped: %s", exc)
        stop.wait(settings.reconcile_interval_seconds)
