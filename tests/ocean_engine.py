"""The SQL Ocean's operator-engine and its pods (pod-configuration, pod-publishing) run against our schema.

Tests use it to play the engine's part exactly as the real one does, statement by statement.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg2

DEFAULT_ENVIRONMENT = {
    "cpuNumber": 1,
    "cpuType": "",
    "gpuNumber": 0,
    "gpuType": "",
    "ramGB": 1,
    "diskGB": 1,
    "priceMin": 0,
    "desc": "",
    "currentJobs": 0,
    "maxJobs": 10,
    "consumerAddress": "0x6d39a833d1a6789aeca50db85cb830bc08319f45",
    "storageExpiry": 0,
    "maxJobDuration": 60,
}


class OceanEngine:
    """One engine of one namespace, with its own connection, as the real engine has."""

    def __init__(self, dsn: dict, namespace: str = "ocean-compute"):
        self.dsn = dsn
        self.namespace = namespace

    def _execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = psycopg2.connect(**self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                rows = cur.fetchall() if cur.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def announce(self, limit: int = 10, **overrides: Any) -> list[str]:
        document = {"id": self.namespace, **DEFAULT_ENVIRONMENT, **overrides}
        rows = self._execute("SELECT * FROM announce(%s, %s, %s)", (self.namespace, json.dumps(document), limit))
        return [row[0] for row in rows]

    def set_status(self, job_id: str, status: int, text: str) -> None:
        self._execute("UPDATE jobs SET status=%s, statusText=%s WHERE workflowId=%s", (status, text, job_id))

    def read_stopreq(self, job_id: str) -> int:
        return self._execute("SELECT stopreq FROM jobs WHERE workflowId=%s", (job_id,))[0][0]

    def set_timed_out(self, job_id: str) -> None:
        self._execute("UPDATE jobs SET stopreq=2 WHERE workflowId=%s", (job_id,))

    def publish(self, job_id: str, outputs: list[dict]) -> None:
        self._execute("UPDATE jobs SET outputsURL=%s WHERE workflowId=%s", (json.dumps(outputs), job_id))

    def finish(self, job_id: str) -> None:
        self._execute("UPDATE jobs SET dateFinished=NOW() WHERE workflowId=%s", (job_id,))

    def workflow(self, job_id: str) -> dict:
        rows = self._execute("SELECT workflow FROM jobs WHERE workflowId=%s LIMIT 1", (job_id,))
        return json.loads(rows[0][0])
