"""Every statement the local engine runs: the database contract of Ocean's operator-engine.

The local engine talks to the service only through these statements, the same ones
Ocean's operator-engine, pod-configuration and pod-publishing run (engine-contract.md
A.2-A.3, original-api.md §5.5), so the service cannot tell the two engines apart.
Two deliberate differences, both invisible to the service: taking a job is one atomic
UPDATE (status 1 -> 20), made only while the engine holds its namespace's lease, so a
job can never be run twice; and the final status and dateFinished are written together,
so a crash cannot leave a finished job half-written.
"""
from __future__ import annotations

from typing import Optional

from operator_service.engine import lease_queries as leases
from operator_service.store.pool import Database

CONFIGURING = 20
PROVISIONED = 30
DATA_FAILED = 31
ALGORITHM_FAILED = 32
RUNNING = 40
PUBLISHING = 60
FINISHED = 70

STATUS_TEXTS = {
    CONFIGURING: "Configuring volumes",
    PROVISIONED: "Provisioning success",
    DATA_FAILED: "Data provisioning failed",
    ALGORITHM_FAILED: "Algorithm provisioning failed",
    RUNNING: "Running algorithm ",  # the trailing space is what Ocean's engine stores
    PUBLISHING: "Publishing results",
    FINISHED: "Job finished",
}

STOP_REQUESTED = 1
TIMED_OUT = 2
MAX_UNFINISHED = 1000


def announce(db: Database, namespace: str, status_json: str, limit: int) -> list[str]:
    """Publish the environment document and get up to `limit` queued job ids of `namespace`."""
    with db.cursor() as cur:
        cur.execute("SELECT * FROM announce(%s, %s, %s)", (namespace, status_json, max(limit, 0)))
        return [row[0] for row in cur.fetchall()]


def claim_job(db: Database, job_id: str, namespace: str, lease_pid: int) -> Optional[str]:
    """Take a queued job (1 -> 20) and return its job document; None if it is not queued, or
    if backend `lease_pid` no longer holds the namespace's lease (store/leases.py)."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET status = %s, statusText = %s, laststatusupdate = timezone('UTC', now())"
            " WHERE workflowId = %s AND namespace = %s AND status = 1 AND dateFinished IS NULL"
            f" AND {leases.held_by('%s')} RETURNING workflow",
            (CONFIGURING, STATUS_TEXTS[CONFIGURING], job_id, namespace, lease_pid, *leases.lock_parts(namespace)),
        )
        row = cur.fetchone()
        return None if row is None else (row[0] or "")


def set_status(db: Database, job_id: str, status: int) -> None:
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET status = %s, statusText = %s, laststatusupdate = timezone('UTC', now())"
            " WHERE workflowId = %s",
            (status, STATUS_TEXTS[status], job_id),
        )


def stop_request(db: Database, job_id: str) -> int:
    """The job's stopreq: 0 none, 1 requested through the API, 2 timed out."""
    with db.cursor() as cur:
        cur.execute("SELECT stopreq FROM jobs WHERE workflowId = %s LIMIT 1", (job_id,))
        row = cur.fetchone()
        return int(row[0] or 0) if row else 0


def mark_timed_out(db: Database, job_id: str) -> None:
    with db.cursor() as cur:
        cur.execute("UPDATE jobs SET stopreq = %s WHERE workflowId = %s", (TIMED_OUT, job_id))


def publish_outputs(db: Database, job_id: str, outputs_json: str) -> None:
    """Write outputsURL as pod-publishing does: a JSON array of {filename, filesize, url, type}."""
    with db.cursor() as cur:
        cur.execute("UPDATE jobs SET outputsURL = %s WHERE workflowId = %s", (outputs_json, job_id))


def finish_job(db: Database, job_id: str, status: Optional[int]) -> None:
    """Set dateFinished, and the final status when one is given (31/32 are left as they are)."""
    with db.cursor() as cur:
        if status is None:
            cur.execute(
                "UPDATE jobs SET dateFinished = timezone('UTC', now()) WHERE workflowId = %s",
                (job_id,),
            )
        else:
            cur.execute(
                "UPDATE jobs SET status = %s, statusText = %s, laststatusupdate = timezone('UTC', now()),"
                " dateFinished = timezone('UTC', now()) WHERE workflowId = %s",
                (status, STATUS_TEXTS[status], job_id),
            )


def unfinished_jobs(db: Database, namespace: str) -> list[tuple[str, int, str]]:
    """(jobId, status, job document) of the jobs an engine of `namespace` took and did not finish."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT workflowId, status, workflow FROM jobs WHERE namespace = %s"
            " AND status BETWEEN %s AND %s AND dateFinished IS NULL ORDER BY dateCreated LIMIT %s",
            (namespace, CONFIGURING, FINISHED, MAX_UNFINISHED),
        )
        return [(row[0], int(row[1]), row[2] or "") for row in cur.fetchall()]
