"""What the job table says about jobs, for their owner and for operators: each job's history
(every change of its status, stop request, removal and ending, recorded by the database
whichever engine made it), the listing the admin routes and `operator-service jobs` show, and
one job inspected whole.

An operator never sees a job's document: it holds the job's secret.
"""

from __future__ import annotations

from typing import Any

from operator_service.domain.errors import NotFound
from operator_service.model import stored
from operator_service.model.ending import ending_fields, ending_of
from operator_service.model.workflow import JobDocument
from operator_service.store import history, jobs
from operator_service.store.jobs import JobQuery
from operator_service.store.pool import Database


def history_entries(db: Database, job_id: str) -> list[dict[str, Any]]:
    """A job's recorded changes, oldest first (an unknown job has none)."""
    return [_history_entry(row) for row in history.job_history(db, job_id)]


def list_jobs(db: Database, query: JobQuery) -> list[dict[str, Any]]:
    """The jobs `query` selects, newest first, one page."""
    return [_summary(row) for row in jobs.list_jobs(db, query)]


def inspect_job(db: Database, job_id: str) -> dict[str, Any]:
    """One job: its row (its results with their URLs and, once the engine deleted them, when),
    never its document, and its history."""
    row = jobs.job_detail(db, job_id)
    if row is None:
        raise NotFound(f"No job {job_id}")
    summary, rest = row[:13], row[13:]
    provider, chain_id, last_update, outputs_url, results_expired, algo_did, input_dids, legacy_document = rest
    if algo_did is None:
        algo_did, input_dids = JobDocument.parse(legacy_document).stage.listed_dids()
    return {
        **_summary(summary),
        "provider": provider,
        "chainId": chain_id,
        "lastStatusUpdate": last_update,
        "results": stored.outputs(outputs_url) or [],
        "dateResultsExpired": results_expired,
        "algoDID": algo_did,
        "inputDID": input_dids or [],
        "history": history_entries(db, job_id),
    }


def _summary(row: tuple) -> dict[str, Any]:
    (job_id, agreement_id, owner, namespace, status, status_text, stopreq, removed, created, finished, *ending) = row
    return {
        "jobId": job_id,
        "agreementId": agreement_id,
        "owner": owner,
        "environment": namespace,
        "status": status,
        "statusText": status_text,
        "stopreq": stopreq,
        "removed": removed,
        "dateCreated": created,
        "dateFinished": finished,
        **ending_fields(ending_of(status, stopreq, finished is not None, *ending)),
    }


def _history_entry(row: tuple) -> dict[str, Any]:
    changed_at, changed_by, status, status_text, stopreq, removed, finished, results_expired, *ending = row
    return {
        "time": changed_at,
        "changedBy": changed_by,
        "status": status,
        "statusText": status_text,
        "stopreq": stopreq,
        "removed": removed,
        "dateFinished": finished,
        "dateResultsExpired": results_expired,
        **ending_fields(ending_of(status, stopreq, finished is not None, *ending)),
    }
