"""Reading the history of jobs: `job_history`, filled by the database itself.

A trigger on `jobs` (migrations.JOB_HISTORY) records every change of a job's status, stop
request, removal and ending, whoever makes it: the service, our engine, Ocean's engine.
"""

from __future__ import annotations

from operator_service.store.pool import Database

# A job changes status about ten times; a cap keeps a pathological writer from filling an answer.
MAX_ENTRIES = 10000
HISTORY_COLUMNS = (
    "extract(epoch from changedAt)::text, changedBy, status, statusText, stopreq, removed,"
    " extract(epoch from dateFinished)::text, extract(epoch from dateResultsExpired)::text,"
    " endReason, endReasonText, exitCode"
)


def job_history(db: Database, job_id: str) -> list[tuple]:
    """The recorded changes of a job in HISTORY_COLUMNS order, oldest first."""
    with db.cursor() as cur:
        cur.execute(
            f"SELECT {HISTORY_COLUMNS} FROM job_history WHERE workflowId = %s ORDER BY id LIMIT %s",
            (job_id, MAX_ENTRIES),
        )
        return cur.fetchall()
