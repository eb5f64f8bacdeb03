"""Registering a job in Postgres and in Kubernetes together, or not at all.

Protocol (DECISIONS.md, "Kubernetes"):

1. Commit the row with status 0 ("Registering"). No engine picks it up (announce()
   hands out status 1 only), no read route shows it, and the unique index on running
   agreementIds already holds its place against a concurrent duplicate.
2. Create the WorkFlow resource.
3. Make the row eligible: status 0 -> 1, committed.

Undo: if 2 fails, the row is deleted (and a resource that may have been created despite
the error is deleted too). If 3 fails, whatever the database said (a lost connection, a
timeout, a constraint or trigger refusing the update), the resource is deleted and the
row with it, unless the row did reach status 1 (the commit landed but its answer was
lost), in which case the job is registered and the request succeeds. A failed request
answers 503 naming the dependency that failed.

Whatever a crash leaves half-way is settled by `reconcile()`, run at start-up and
periodically: a row still at status 0 after the grace period loses its resource and is
deleted (its request never got an answer, so it leaves no trace), and a resource whose
row does not exist, or was deleted through the API (removed=1), is deleted. A row is
always written before its resource, so a resource without a row is never a registration
still under way.

Stops: PUT /compute sets stopreq=1 and flags the job as owing its WorkFlow the stop
annotation in one statement, then annotates and clears the flag. What the cluster did
not take is retried by every reconciler pass (and by a repeated PUT) until it lands, so
an answered stop is never left half-done.

Without a cluster, the row is inserted directly with status 1.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Optional

import psycopg2

from operator_service.cluster.client import STOP_ANNOTATION, Cluster, KubernetesUnavailable
from operator_service.store import environments, jobs
from operator_service.store.nonces import NonceClaim
from operator_service.store.pool import Database, DatabaseUnavailable, failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewJob:
    job_id: str
    agreement_id: str
    owner: str
    namespace: str
    claim: NonceClaim
    document: dict
    document_json: str
    algo_did: Optional[str]
    input_dids: Optional[list[str]]


def register_job(db: Database, cluster: Optional[Cluster], job: NewJob) -> tuple:
    """Record the request's nonce and store the job in both places, or in neither; return
    its row (jobs.STATUS_COLUMNS).

    Raises what made it fail.
    """
    insert = dict(
        job_id=job.job_id,
        agreement_id=job.agreement_id,
        owner=job.owner,
        document=job.document_json,
        algo_did=job.algo_did,
        input_dids=job.input_dids,
        namespace=job.namespace,
        claim=job.claim,
    )
    if cluster is None:
        return _insert(db, jobs.QUEUED, insert)
    _insert(db, jobs.REGISTERING, insert)
    try:
        cluster.create_workflow(job.document)
    except BaseException:
        _forget(db, cluster, job)
        raise
    try:
        queued = jobs.queue_registered_job(db, job.job_id)
    except (DatabaseUnavailable, psycopg2.Error) as exc:
        queued = _queued_after_all(db, cluster, job)
        if queued is None:
            raise _unavailable(exc, f"queueing job {job.job_id}") from None
    if queued is None:
        queued = _queued_after_all(db, cluster, job)
    if queued is None:
        raise DatabaseUnavailable(f"registration of job {job.job_id} was withdrawn before it completed")
    return queued


def _insert(db: Database, status: int, insert: dict) -> tuple:
    """Step 1 (or the only step without a cluster); nothing is stored if it fails."""
    try:
        return jobs.insert_job(db, status=status, **insert)
    except psycopg2.Error as exc:
        raise failure(exc, f"storing job {insert['job_id']}") from None


def _unavailable(exc: Exception, doing: str) -> DatabaseUnavailable:
    return exc if isinstance(exc, DatabaseUnavailable) else failure(exc, doing)  # type: ignore[arg-type]


def _queued_after_all(db: Database, cluster: Cluster, job: NewJob) -> Optional[tuple]:
    """After a failed queue step: the job's row if it did get queued, else None once undone."""
    if not _forget(db, cluster, job):
        return None
    try:
        rows = jobs.job_statuses(db, jobs.JobFilter(job_id=job.job_id))
    except psycopg2.Error as exc:
        raise failure(exc, f"reading job {job.job_id}") from None
    return rows[0] if rows else None


def _forget(db: Database, cluster: Cluster, job: NewJob) -> bool:
    """Best-effort undo; True if the job turned out to be queued after all.

    What cannot be undone now (the database is down, or refuses) is left to reconcile().
    """
    try:
        jobs.delete_registering_job(db, job.job_id)
        if jobs.job_namespace(db, job.job_id) is not None:
            return True
    except (DatabaseUnavailable, psycopg2.Error) as exc:
        log.warning("job %s: undo left to the reconciler, database failed: %s", job.job_id, _unavailable(exc, "undo"))
        return False
    try:
        cluster.delete_workflow(job.namespace, job.job_id)
    except KubernetesUnavailable as exc:
        log.warning("job %s: orphan WorkFlow left to the reconciler: %s", job.job_id, exc)
    return False


def deliver_stop_annotations(db: Database, cluster: Cluster, stopped: list[tuple[str, str]]) -> None:
    """Annotate the WorkFlows of stopped jobs (jobId, namespace); each one that lands, or
    whose WorkFlow is gone, is no longer owed. KubernetesUnavailable if any is left owed."""
    delivered: list[str] = []
    try:
        for job_id, namespace in stopped:
            cluster.annotate_workflow(namespace, job_id, {STOP_ANNOTATION: "true"})
            delivered.append(job_id)
    except KubernetesUnavailable as exc:
        raise KubernetesUnavailable(f"{exc} (the stop is recorded; its annotation is retried until it lands)") from exc
    finally:
        if delivered:
            jobs.clear_stop_annotations(db, delivered)


def reconcile(db: Database, cluster: Cluster, grace_seconds: float, namespaces: list[str]) -> int:
    """Settle what a crash or a failed call left half-way in one store; return how many were settled."""
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


def reconcile_namespaces(db: Database, default_namespace: str) -> list[str]:
    """Where WorkFlows can live: every announced environment and the default namespace."""
    return sorted({default_namespace, *environments.environment_namespaces(db)})


def start_reconciler(db: Database, cluster: Cluster, interval: float, grace: float, default_namespace: str) -> threading.Event:
    """Run reconcile() now and then every `interval` seconds in a daemon thread; set the event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                reconcile(db, cluster, grace, reconcile_namespaces(db, default_namespace))
            except (DatabaseUnavailable, KubernetesUnavailable) as exc:
                log.warning("reconciler pass skipped: %s", exc)
            stop.wait(interval)

    threading.Thread(target=loop, name="operator-reconciler", daemon=True).start()
    return stop
