"""Every statement on the `jobs` table that the service itself runs.

Status 0 (REGISTERING) marks a job whose registration is under way (see
domain/lifecycle.py): no engine picks it up (announce() hands out status 1 only) and no
read route shows it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors

from operator_service.model.status import JobStatus, StopRequest
from operator_service.store.nonces import RECORD_NONCE_CALL, NonceRefused, SignedNonce
from operator_service.store.pool import Database, run_prepared

REGISTERING = JobStatus.REGISTERING
QUEUED = JobStatus.QUEUED
MAX_ROWS = 1000
MAX_RUNNING_ROWS = 10000

# Epochs come as text, as the status objects show them (no Decimal per value).
# The DIDs of stage 0 are stored in their own columns when the job is inserted; the
# workflow document is read only for rows written before those columns existed.
DID_COLUMNS = "algoDID, inputDIDs, CASE WHEN algoDID IS NULL THEN workflow END AS legacy_workflow"
# Why a job ended, as an engine recorded it (model/ending.py derives it when none did).
ENDING_COLUMNS = "endReason, endReasonText, exitCode"
STATUS_COLUMNS = (
    "agreementId, workflowId, owner, status, statusText,"
    " extract(epoch from dateCreated)::text AS created, extract(epoch from dateFinished)::text AS finished,"
    f" outputsURL, stopreq, removed, {ENDING_COLUMNS},"
    f" extract(epoch from dateResultsExpired)::text AS results_expired, {DID_COLUMNS}"
)
# What an operator sees of each job (the admin routes, `operator-service jobs`): never the
# job document, which holds the job's secret.
SUMMARY_COLUMNS = (
    "workflowId, agreementId, owner, namespace, status, statusText, stopreq, removed,"
    " extract(epoch from dateCreated)::text, extract(epoch from dateFinished)::text,"
    f" {ENDING_COLUMNS}"
)
DETAIL_COLUMNS = (
    f"{SUMMARY_COLUMNS}, provider, chainid, extract(epoch from laststatusupdate)::text, outputsURL,"
    f" extract(epoch from dateResultsExpired)::text, {DID_COLUMNS}"
)
MAX_LISTED = 1000
RUNNING_COLUMNS = (
    "agreementId, workflowId, owner, status, statusText,"
    f" extract(epoch from dateCreated)::text AS created, namespace, {DID_COLUMNS}"
)


@dataclass(frozen=True)
class JobQuery:
    """An operator's listing: filters AND-ed (None means "any"), newest first, a page of it."""

    owner: str | None = None
    status: int | None = None
    environment: str | None = None
    since: float | None = None  # epoch seconds: jobs created at or after
    limit: int = 100
    offset: int = 0


class DuplicateAgreement(Exception):
    """Another job with this agreementId is still running."""


@dataclass(frozen=True)
class JobFilter:
    """The AND-ed filters of GET/PUT/DELETE /compute; None means "any"."""

    agreement_id: str | None = None
    job_id: str | None = None
    owner: str | None = None

    def is_empty(self) -> bool:
        return self.agreement_id is None and self.job_id is None and self.owner is None

    def where(self) -> tuple[str, list[Any]]:
        clauses = ["status <> %s"]
        params: list[Any] = [REGISTERING]
        for column, value in (
            ("agreementId", self.agreement_id),
            ("workflowId", self.job_id),
            ("owner", self.owner),
        ):
            if value is not None:
                clauses.append(f"{column} = %s")
                params.append(value)
        return " AND ".join(clauses), params


def insert_job(
    db: Database,
    *,
    job_id: str,
    agreement_id: str,
    owner: str,
    document: str,
    algo_did: str | None,
    input_dids: list[str] | None,
    namespace: str,
    signed_nonce: SignedNonce,
    status: int,
    request_id: str | None = None,
) -> tuple:
    """Record the request's nonce and insert its job row, in one statement (one round trip);
    the row in STATUS_COLUMNS order.

    NonceRefused if the nonce is refused, DuplicateAgreement if the agreementId is still
    running; either way nothing is stored (nor the nonce: the statement is undone whole).
    The signer is the job's provider; `request_id` is the creating request's (for the engine's logs).
    """
    status_text = JobStatus(status).text
    nonce_source, nonce_params = (
        (RECORD_NONCE_CALL, signed_nonce.params()) if signed_nonce.guarded else ("(VALUES (true))", ())
    )
    try:
        with db.cursor() as cur:
            run_prepared(
                cur,
                "INSERT INTO jobs (agreementId, workflowId, owner, status, statusText,"
                " workflow, algoDID, inputDIDs, namespace, provider, requestId)"
                " SELECT %s, %s, %s, %s, %s, %s, %s, %s::text[], %s, %s, %s"
                f" FROM {nonce_source} AS nonce(accepted) WHERE nonce.accepted"
                f" RETURNING {STATUS_COLUMNS}",
                (
                    agreement_id,
                    job_id,
                    owner,
                    status,
                    status_text,
                    document,
                    algo_did,
                    input_dids,
                    namespace,
                    signed_nonce.provider,
                    request_id,
                    *nonce_params,
                ),
            )
            row = cur.fetchone()
    except psycopg2.errors.UniqueViolation:
        raise DuplicateAgreement(agreement_id) from None
    if row is None:
        raise NonceRefused(signed_nonce.nonce)
    return row


def queue_registered_job(db: Database, job_id: str) -> tuple | None:
    """Make a registered job eligible for the engines (0 -> 1); its STATUS_COLUMNS row, None if it is gone."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET status = %s, statusText = %s, laststatusupdate = timezone('UTC', now())"
            f" WHERE workflowId = %s AND status = %s RETURNING {STATUS_COLUMNS}",
            (QUEUED, QUEUED.text, job_id, REGISTERING),
        )
        return cur.fetchone()


def delete_registering_job(db: Database, job_id: str) -> None:
    """Undo a registration that did not complete; a queued job is never deleted."""
    with db.cursor() as cur:
        cur.execute("DELETE FROM jobs WHERE workflowId = %s AND status = %s", (job_id, REGISTERING))


def stale_registrations(db: Database, older_than_seconds: float) -> list[tuple[str, str]]:
    """(jobId, namespace) of registrations left half-way, e.g. by a crash."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT workflowId, namespace FROM jobs WHERE status = %s"
            " AND dateCreated < timezone('UTC', now()) - make_interval(secs => %s)"
            " ORDER BY dateCreated LIMIT %s",
            (REGISTERING, older_than_seconds, MAX_ROWS),
        )
        return cur.fetchall()


def live_job_ids(db: Database, job_ids: list[str]) -> set[str]:
    """The subset of `job_ids` that has a row not deleted through the API (removed = 0)."""
    if not job_ids:
        return set()
    with db.cursor() as cur:
        cur.execute("SELECT workflowId FROM jobs WHERE workflowId = ANY(%s) AND COALESCE(removed, 0) = 0", (job_ids,))
        return {row[0] for row in cur.fetchall()}


def job_statuses(db: Database, filters: JobFilter) -> list[tuple]:
    """Rows in STATUS_COLUMNS order, newest first, at most MAX_ROWS."""
    where, params = filters.where()
    with db.cursor() as cur:
        run_prepared(
            cur,
            f"SELECT {STATUS_COLUMNS} FROM jobs WHERE {where} ORDER BY dateCreated DESC LIMIT %s",
            (*params, MAX_ROWS),
        )
        return cur.fetchall()


def record_nonce_and_read_statuses(db: Database, filters: JobFilter, signed_nonce: SignedNonce) -> list[tuple] | None:
    """Record a signed read's nonce and read the matching jobs (as job_statuses) in one
    statement, so one round trip to Postgres; None when the nonce is refused."""
    if not signed_nonce.guarded:
        return job_statuses(db, filters)
    where, params = filters.where()
    with db.cursor() as cur:
        run_prepared(
            cur,
            f"SELECT nonce.accepted, found.* FROM {RECORD_NONCE_CALL} AS nonce(accepted)"
            f" LEFT JOIN LATERAL (SELECT {STATUS_COLUMNS} FROM jobs WHERE {where}) AS found ON nonce.accepted"
            " ORDER BY found.created::numeric DESC LIMIT %s",
            (*signed_nonce.params(), *params, MAX_ROWS),
        )
        rows = cur.fetchall()
    if not rows[0][0]:
        return None
    return [row[1:] for row in rows if row[2] is not None]


def request_stop(db: Database, filters: JobFilter, annotate: bool = False) -> list[tuple[str, str]]:
    """Set stopreq=1 on the matching jobs still running; return their (jobId, namespace).

    A finished job keeps its stopreq (it was not stopped on request), and a time-out (2)
    is not overwritten. With `annotate`, the jobs are also flagged as owing their WorkFlow
    a stop annotation, in the same statement, and the matching jobs still flagged from an
    earlier request are returned too: their annotation is due as well.
    """
    where, params = filters.where()
    if annotate:
        sql = (
            f"UPDATE jobs SET stopreq = CASE WHEN dateFinished IS NULL AND stopreq = {StopRequest.NONE}"
            f" THEN {StopRequest.REQUESTED} ELSE stopreq END, stopAnnotationPending = true"
            f" WHERE {where} AND ((dateFinished IS NULL AND stopreq = {StopRequest.NONE}) OR stopAnnotationPending)"
            " RETURNING workflowId, namespace"
        )
    else:
        sql = (
            f"UPDATE jobs SET stopreq = {StopRequest.REQUESTED} WHERE {where} AND dateFinished IS NULL"
            f" AND stopreq = {StopRequest.NONE} RETURNING workflowId, namespace"
        )
    with db.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def pending_stop_annotations(db: Database) -> list[tuple[str, str]]:
    """(jobId, namespace) of jobs whose WorkFlow still owes its stop annotation, oldest first."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT workflowId, namespace FROM jobs WHERE stopAnnotationPending ORDER BY dateCreated LIMIT %s",
            (MAX_ROWS,),
        )
        return cur.fetchall()


def clear_stop_annotations(db: Database, job_ids: list[str]) -> None:
    """The stop annotations of these jobs landed (or their WorkFlow is gone)."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET stopAnnotationPending = false WHERE workflowId = ANY(%s) AND stopAnnotationPending",
            (job_ids,),
        )


def mark_removed(db: Database, filters: JobFilter) -> list[tuple[str, str]]:
    """Set removed=1 and request a stop of the matching jobs still running."""
    where, params = filters.where()
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET removed = 1, stopreq = CASE WHEN dateFinished IS NULL"
            f" AND stopreq = {StopRequest.NONE} THEN {StopRequest.REQUESTED} ELSE stopreq END"
            f" WHERE {where} RETURNING workflowId, namespace",
            params,
        )
        return cur.fetchall()


def running_jobs(db: Database) -> list[tuple]:
    """Unfinished jobs in RUNNING_COLUMNS order, oldest first, at most MAX_RUNNING_ROWS."""
    with db.cursor() as cur:
        run_prepared(
            cur,
            f"SELECT {RUNNING_COLUMNS} FROM jobs WHERE dateFinished IS NULL AND status <> %s"
            " ORDER BY dateCreated LIMIT %s",
            (REGISTERING, MAX_RUNNING_ROWS),
        )
        return cur.fetchall()


def result_source(db: Database, job_id: str) -> tuple[str, str | None, str | None, datetime | None] | None:
    """(owner, provider, outputsURL, dateResultsExpired: when its results were deleted) of a job,
    or None if there is no such job."""
    with db.cursor() as cur:
        run_prepared(
            cur,
            "SELECT owner, provider, outputsURL, dateResultsExpired FROM jobs"
            " WHERE workflowId = %s AND status <> %s LIMIT 1",
            (job_id, REGISTERING),
        )
        return cur.fetchone()


def job_namespace(db: Database, job_id: str) -> str | None:
    """The environment (namespace) of a job, or None if there is no such job."""
    with db.cursor() as cur:
        cur.execute("SELECT namespace FROM jobs WHERE workflowId = %s LIMIT 1", (job_id,))
        row = cur.fetchone()
        return row[0] if row else None


def list_jobs(db: Database, query: JobQuery) -> list[tuple]:
    """Rows in SUMMARY_COLUMNS order, newest first: the page `query` asks for (at most MAX_LISTED).

    The owner is compared in any letter case.
    """
    clauses = ["status <> %s"]
    params: list[Any] = [REGISTERING]
    if query.owner is not None:
        clauses.append("lower(owner) = lower(%s)")
        params.append(query.owner)
    if query.status is not None:
        clauses.append("status = %s")
        params.append(query.status)
    if query.environment is not None:
        clauses.append("namespace = %s")
        params.append(query.environment)
    if query.since is not None:
        clauses.append("dateCreated >= timezone('UTC', to_timestamp(%s))")
        params.append(query.since)
    with db.cursor() as cur:
        cur.execute(
            f"SELECT {SUMMARY_COLUMNS} FROM jobs WHERE {' AND '.join(clauses)}"
            " ORDER BY dateCreated DESC, workflowId LIMIT %s OFFSET %s",
            (*params, min(query.limit, MAX_LISTED), query.offset),
        )
        return cur.fetchall()


def job_detail(db: Database, job_id: str) -> tuple | None:
    """One job's row in DETAIL_COLUMNS order, None if there is no such job."""
    with db.cursor() as cur:
        cur.execute(
            f"SELECT {DETAIL_COLUMNS} FROM jobs WHERE workflowId = %s AND status <> %s LIMIT 1",
            (job_id, REGISTERING),
        )
        return cur.fetchone()


def unfinished_counts(db: Database) -> list[tuple[str | None, int, int, float]]:
    """(namespace, status, jobs, age in seconds of the oldest) of the unfinished jobs, per
    namespace and status (jobs being registered, status 0, included). Read through the
    index of unfinished jobs: finished ones, however many, cost nothing."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT namespace, status, count(*), extract(epoch from timezone('UTC', now()) - min(dateCreated))::float"
            " FROM jobs WHERE dateFinished IS NULL GROUP BY namespace, status ORDER BY namespace, status"
        )
        return [(row[0], int(row[1] or 0), int(row[2]), float(row[3] or 0.0)) for row in cur.fetchall()]
