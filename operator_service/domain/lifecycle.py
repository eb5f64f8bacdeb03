"""A job's life as the Provider drives it: start, read, stop, delete, and its results.

Every route of the Provider makes one call here, once its parameters are read and its
signature checked (domain/signatures.py). Each call records the request's nonce in the
same statement as its own first read or write, so a request refused for another reason
leaves its nonce unused, and writes Postgres and Kubernetes both or neither.

Registering a job in Postgres and in Kubernetes together, or not at all:

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

Whatever a crash leaves half-way is settled by the reconciler (domain/reconciler.py): a
row still at status 0 after the grace period loses its resource and is deleted (its
request never got an answer, so it leaves no trace), and a resource whose row does not
exist, or was deleted through the API (removed=1), is deleted. A row is always written
before its resource, so a resource without a row is never a registration still under way.

Stops: PUT /compute sets stopreq=1 and flags the job as owing its WorkFlow the stop
annotation in one statement, then annotates and clears the flag. What the cluster did
not take is retried by every reconciler pass (and by a repeated PUT) until it lands, so
an answered stop is never left half-done.

Without a cluster, the row is inserted directly with status 1.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg2

from operator_service.cluster.client import Cluster, KubernetesUnavailable
from operator_service.cluster.workflows import STOP_ANNOTATION, workflow_body
from operator_service.config import Settings
from operator_service.domain import environments, job_records, results
from operator_service.domain.errors import Gone, InvalidRequest, NotFound
from operator_service.domain.results import ResultFile
from operator_service.domain.signatures import nonce_refused
from operator_service.model import stored
from operator_service.model.status import JobStatus
from operator_service.model.workflow import Stage, WorkflowInvalid, check_workflow
from operator_service.store import jobs, nonces
from operator_service.store.jobs import JobFilter
from operator_service.store.nonces import NonceRefused, SignedNonce
from operator_service.store.pool import Database, DatabaseUnavailable, failure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRequest:
    """What POST /compute asks for, its parameters read."""

    agreement_id: str
    owner: str
    environment: Any
    chain_id: Any
    workflow: Any
    request_id: str | None = None  # stored with the job, for the engine's log lines about it


@dataclass(frozen=True)
class NewJob:
    job_id: str
    agreement_id: str
    owner: str
    namespace: str
    signed_nonce: SignedNonce
    document: dict
    algo_did: str | None
    input_dids: list[str] | None
    request_id: str | None = None


def start_job(db: Database, cluster: Cluster | None, request: JobRequest, signed: SignedNonce) -> tuple:
    """Check and register a new job (status 1, "Warming up"); its row (jobs.STATUS_COLUMNS)."""
    try:
        workflow = check_workflow(request.workflow)
    except WorkflowInvalid as exc:
        raise InvalidRequest(str(exc)) from None
    workflow["chainId"] = request.chain_id
    namespace = environments.check_environment(db, request.environment, request.chain_id)
    job_id = uuid.uuid4().hex
    algo_did, input_dids = _storable_dids(Stage.of(workflow))
    job = NewJob(
        job_id,
        request.agreement_id,
        request.owner,
        namespace,
        signed,
        workflow_body(job_id, namespace, workflow, uuid.uuid4().hex),
        algo_did,
        input_dids,
        request.request_id,
    )
    try:
        return register_job(db, cluster, job)
    except jobs.DuplicateAgreement:
        raise InvalidRequest("`agreementId` already in use for other job.") from None
    except NonceRefused:
        raise nonce_refused(signed) from None


def _storable_dids(stage: Stage) -> tuple[str | None, list[str] | None]:
    """The DIDs for the algoDID/inputDIDs columns; (None, None) unless all are text, so that
    the status object is then built from the document, with the DIDs' own JSON types."""
    algo_did, input_dids = stage.listed_dids()
    if isinstance(algo_did, str) and all(isinstance(did, str) for did in input_dids):
        return algo_did, input_dids
    return None, None


def register_job(db: Database, cluster: Cluster | None, job: NewJob) -> tuple:
    """Record the request's nonce and store the job in both places, or in neither; return
    its row (jobs.STATUS_COLUMNS).

    Raises what made it fail.
    """
    insert = {
        "job_id": job.job_id,
        "agreement_id": job.agreement_id,
        "owner": job.owner,
        "document": json.dumps(job.document),
        "algo_did": job.algo_did,
        "input_dids": job.input_dids,
        "namespace": job.namespace,
        "signed_nonce": job.signed_nonce,
        "request_id": job.request_id,
    }
    if cluster is None:
        return _insert(db, JobStatus.QUEUED, insert)
    _insert(db, JobStatus.REGISTERING, insert)
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


def _insert(db: Database, status: JobStatus, insert: dict) -> tuple:
    """Step 1 (or the only step without a cluster); nothing is stored if it fails."""
    try:
        return jobs.insert_job(db, status=status, **insert)
    except psycopg2.Error as exc:
        raise failure(exc, f"storing job {insert['job_id']}") from None


def _unavailable(exc: Exception, doing: str) -> DatabaseUnavailable:
    return exc if isinstance(exc, DatabaseUnavailable) else failure(exc, doing)  # type: ignore[arg-type]


def _queued_after_all(db: Database, cluster: Cluster, job: NewJob) -> tuple | None:
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


def job_statuses(db: Database, filters: JobFilter, signed: SignedNonce) -> list[tuple]:
    """Record the nonce of a signed read and read the matching jobs, newest first."""
    rows = jobs.record_nonce_and_read_statuses(db, filters, signed)
    if rows is None:
        raise nonce_refused(signed)
    return rows


def stop_jobs(db: Database, cluster: Cluster | None, filters: JobFilter, signed: SignedNonce) -> list[tuple]:
    """Request a stop of the matching jobs still running (stopreq=1, and their WorkFlows'
    annotation); their status rows."""
    _record_nonce(db, signed)
    stopped = jobs.request_stop(db, filters, annotate=cluster is not None)
    if cluster is not None:
        deliver_stop_annotations(db, cluster, stopped)
    return jobs.job_statuses(db, filters)


def delete_jobs(db: Database, cluster: Cluster | None, filters: JobFilter, signed: SignedNonce) -> list[tuple]:
    """Mark the matching jobs removed (and stopped, if still running) and delete their
    WorkFlows; their status rows. A WorkFlow the cluster did not delete now is deleted by
    the reconciler."""
    _record_nonce(db, signed)
    removed = jobs.mark_removed(db, filters)
    if cluster is not None:
        for job_id, namespace in removed:
            cluster.delete_workflow(namespace, job_id)
    return jobs.job_statuses(db, filters)


def running_jobs(db: Database) -> list[tuple]:
    return jobs.running_jobs(db)


def result_file(
    db: Database,
    settings: Settings,
    job_id: str,
    owner: str,
    index: int,
    signed: SignedNonce,
    range_header: str | None,
) -> ResultFile:
    """Result number `index` of a job (its outputs, then its logs), opened for streaming.

    The owner is compared in any letter case; with signatures required, only the provider
    that created the job gets its results. Results the engine deleted at the end of its
    storageExpiry are Gone.
    """
    _record_nonce(db, signed)
    source = jobs.result_source(db, job_id)
    if source is None:
        raise NotFound(f"No results for job {job_id}")
    job_owner, job_provider, outputs_url, results_expired = source
    if (job_owner or "").lower() != owner.lower():
        raise NotFound(f"Owner {owner} mismatch for job {job_id}")
    if settings.signature_required and (job_provider or "").lower() != signed.provider:
        raise NotFound(f"Provider {signed.provider} mismatch for job {job_id}")
    outputs = stored.outputs(outputs_url)
    if not outputs:
        raise NotFound(f"No results for job {job_id}")
    if index < 0:
        raise NotFound(f"Negative index {index}")
    if index >= len(outputs):
        raise NotFound(f"No such index {index} in this compute job")
    if results_expired is not None:
        raise Gone(
            f"Error getResult: the results of job {job_id} expired and were deleted"
            f" on {results_expired:%Y-%m-%d %H:%M:%S} UTC (the engine keeps results for its storageExpiry)"
        )
    entry = outputs[index]
    url = entry.get("url") if isinstance(entry, dict) else None
    if not isinstance(url, str) or not url:
        raise NotFound(f"No results for job {job_id}")
    return results.open_result(url, settings, range_header)


def job_history(db: Database, settings: Settings, job_id: str, owner: str, signed: SignedNonce) -> list[dict]:
    """Every recorded change of one job, oldest first, for its owner (any letter case); with
    signatures required, only for the provider that created the job, as its results."""
    _record_nonce(db, signed)
    source = jobs.result_source(db, job_id)
    job_owner, job_provider = (source[0], source[1]) if source else (None, None)
    if source is None or (job_owner or "").lower() != owner.lower():
        raise NotFound(f"No job {job_id} of owner {owner}")
    if settings.signature_required and (job_provider or "").lower() != signed.provider:
        raise NotFound(f"Provider {signed.provider} mismatch for job {job_id}")
    return job_records.history_entries(db, job_id)


def _record_nonce(db: Database, signed: SignedNonce) -> None:
    if not nonces.record_nonce(db, signed):
        raise nonce_refused(signed)
