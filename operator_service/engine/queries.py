"""Every statement the local engine runs: the database contract of Ocean's operator-engine.

The local engine talks to the service only through these statements, the same ones
Ocean's operator-engine, pod-configuration and pod-publishing run, so the service cannot
tell the two engines apart. It also records why each job ended (endReason, endReasonText,
exitCode), which Ocean's engine does not write and the service derives for its jobs. Two
deliberate differences, both invisible to the service:
taking a job is one atomic UPDATE (status 1 -> 20), made only while the engine holds its
namespace's lease, so a job can never be run twice; and the final status and
dateFinished are written together, so a crash cannot leave a finished job half-written.

The namespace's lease is a session-level advisory lock, held by the session that took it
until that session ends (the engine stops, crashes, or loses its connection), so a dead
engine never keeps its namespace. Its key is a class number of our own in the upper 32
bits and the CRC-32 of the namespace in the lower ones; Postgres shows them in pg_locks as
classid and objid (objsubid 1), where anyone can see which session holds which namespace.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from operator_service.model.ending import Ending
from operator_service.model.status import JobStatus, StopRequest
from operator_service.store.pool import Database, only_row

LEASE_CLASS = 0x4F505253  # "OPRS": no other lock of ours uses this upper half
MAX_UNFINISHED = 1000


def announce(db: Database, namespace: str, status_json: str, limit: int) -> list[str]:
    """Publish the environment document and get up to `limit` queued job ids of `namespace`."""
    with db.cursor() as cur:
        cur.execute("SELECT * FROM announce(%s, %s, %s)", (namespace, status_json, max(limit, 0)))
        return [row[0] for row in cur.fetchall()]


@dataclass(frozen=True)
class TakenJob:
    document: str
    request_id: str | None  # of the request that created the job (requestId), for the engine's log lines
    queued_seconds: float  # from its creation to its taking


def take_job(db: Database, job_id: str, namespace: str, lease_pid: int) -> TakenJob | None:
    """Take a queued job (1 -> 20); None if it is not queued, or if backend `lease_pid` no
    longer holds the namespace's lease."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET status = %s, statusText = %s, laststatusupdate = timezone('UTC', now())"
            " WHERE workflowId = %s AND namespace = %s AND status = %s AND dateFinished IS NULL"
            f" AND {lease_held_by('%s')}"
            " RETURNING workflow, requestId, extract(epoch from laststatusupdate - dateCreated)::float",
            (
                JobStatus.CONFIGURING,
                JobStatus.CONFIGURING.text,
                job_id,
                namespace,
                JobStatus.QUEUED,
                lease_pid,
                *lease_lock_parts(namespace),
            ),
        )
        row = cur.fetchone()
        return None if row is None else TakenJob(row[0] or "", row[1], max(float(row[2] or 0.0), 0.0))


def set_status(db: Database, job_id: str, status: JobStatus) -> None:
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET status = %s, statusText = %s, laststatusupdate = timezone('UTC', now())"
            " WHERE workflowId = %s",
            (status, status.text, job_id),
        )


def record_ending(db: Database, job_id: str, status: JobStatus, ending: Ending) -> None:
    """Set the status and, with it, why the job ends (the database keeps the change in its history)."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET status = %s, statusText = %s, laststatusupdate = timezone('UTC', now()),"
            " endReason = %s, endReasonText = %s, exitCode = %s WHERE workflowId = %s",
            (status, status.text, ending.reason.value, ending.text, ending.exit_code, job_id),
        )


def stop_request(db: Database, job_id: str) -> StopRequest:
    """The job's stopreq."""
    with db.cursor() as cur:
        cur.execute("SELECT stopreq FROM jobs WHERE workflowId = %s LIMIT 1", (job_id,))
        row = cur.fetchone()
        return StopRequest(int(row[0] or 0)) if row else StopRequest.NONE


def mark_timed_out(db: Database, job_id: str) -> None:
    with db.cursor() as cur:
        cur.execute("UPDATE jobs SET stopreq = %s WHERE workflowId = %s", (StopRequest.TIMED_OUT, job_id))


def publish_outputs(db: Database, job_id: str, outputs_json: str) -> None:
    """Write outputsURL as pod-publishing does: a JSON array of {filename, filesize, url, type}."""
    with db.cursor() as cur:
        cur.execute("UPDATE jobs SET outputsURL = %s WHERE workflowId = %s", (outputs_json, job_id))


def finish_job(db: Database, job_id: str, status: JobStatus | None) -> None:
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
                (status, status.text, job_id),
            )


def unfinished_jobs(db: Database, namespace: str) -> list[tuple[str, JobStatus, str, str | None]]:
    """(jobId, status, job document, requestId) of the jobs an engine of `namespace` took and did not finish."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT workflowId, status, workflow, requestId FROM jobs WHERE namespace = %s"
            " AND status BETWEEN %s AND %s AND dateFinished IS NULL ORDER BY dateCreated LIMIT %s",
            (namespace, JobStatus.CONFIGURING, JobStatus.FINISHED, MAX_UNFINISHED),
        )
        return [(row[0], JobStatus(int(row[1])), row[2] or "", row[3]) for row in cur.fetchall()]


def expire_results(
    db: Database, namespace: str, seconds: int, busy: list[str], lease_pid: int, limit: int
) -> list[str]:
    """Record that the results of up to `limit` jobs of `namespace` have expired: those that
    finished more than `seconds` ago, are not marked yet and are not in `busy` (jobs this
    engine still holds); their ids, oldest first. Only while backend `lease_pid` holds the
    namespace's lease, so only the engine that published the results deletes them."""
    with db.cursor() as cur:
        cur.execute(
            "UPDATE jobs SET dateResultsExpired = timezone('UTC', now()) WHERE workflowId IN ("
            " SELECT workflowId FROM jobs WHERE namespace = %s AND dateFinished IS NOT NULL"
            " AND dateResultsExpired IS NULL AND dateFinished < timezone('UTC', now()) - make_interval(secs => %s)"
            " AND NOT (workflowId = ANY(%s)) ORDER BY dateFinished LIMIT %s)"
            f" AND namespace = %s AND dateResultsExpired IS NULL AND {lease_held_by('%s')}"
            " RETURNING workflowId",
            (namespace, seconds, busy, limit, namespace, lease_pid, *lease_lock_parts(namespace)),
        )
        return [row[0] for row in cur.fetchall()]


def expired_among(db: Database, namespace: str, job_ids: list[str]) -> set[str]:
    """The jobs of `namespace` among `job_ids` whose results are recorded as expired."""
    if not job_ids:
        return set()
    with db.cursor() as cur:
        cur.execute(
            "SELECT workflowId FROM jobs WHERE namespace = %s AND workflowId = ANY(%s)"
            " AND dateResultsExpired IS NOT NULL",
            (namespace, job_ids),
        )
        return {row[0] for row in cur.fetchall()}


def lease_held_by(pid: str) -> str:
    """SQL condition: backend `pid` (an SQL expression) holds a namespace's lock, given as the
    parameters (classid, objid). Statements that must run only under the lease use it."""
    return (
        f"EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = {pid}"
        " AND classid = %s::oid AND objid = %s::oid AND objsubid = 1)"
    )


def lease_lock_parts(namespace: str) -> tuple[int, int]:
    """(classid, objid) of the namespace's lock."""
    return LEASE_CLASS, zlib.crc32(namespace.encode())


def lease_lock_key(namespace: str) -> int:
    classid, objid = lease_lock_parts(namespace)
    return (classid << 32) | objid


def take_lease(db: Database, namespace: str) -> tuple[bool, int]:
    """Hold the namespace's lock in this session if no other session does: (held, backend pid).

    Held already by this session: true, without taking it again (it would stack).
    """
    with db.cursor() as cur:
        cur.execute(
            f"SELECT CASE WHEN {lease_held_by('pg_backend_pid()')} THEN true"
            " ELSE pg_try_advisory_lock(%s) END, pg_backend_pid()",
            (*lease_lock_parts(namespace), lease_lock_key(namespace)),
        )
        held, pid = only_row(cur)
        return bool(held), int(pid)


def lease_holder(db: Database, namespace: str) -> str | None:
    """Who holds the namespace's lock, as far as this role may see: application and address."""
    with db.cursor() as cur:
        cur.execute(
            "SELECT l.pid, a.application_name, a.client_addr::text FROM pg_locks l"
            " LEFT JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s::oid AND l.objid = %s::oid"
            " AND l.objsubid = 1",
            lease_lock_parts(namespace),
        )
        row = cur.fetchone()
    if row is None:
        return None
    pid, application, address = row
    return f"{application or 'a session'} (backend {pid}{', from ' + address if address else ''})"
