"""What `GET /metrics` reads from the database when it is scraped: the unfinished jobs.

Counted per environment and status at scrape time, so they are right whichever engine
(ours or Ocean's) moves the jobs. A scrape must not hang on a database that is down: the
collector has a pool of its own with a short timeout, answers from what it read within the
last CACHE_SECONDS, and after a failure does not ask again for that long; the failure shows
as `operator_jobs_collected 0` while the API's own metrics are still served.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import psycopg2
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from operator_service.store import jobs
from operator_service.store.pool import Database, DatabaseUnavailable
from operator_service.store.settings import PostgresSettings

log = logging.getLogger(__name__)

DATABASE_SECONDS = 1.0  # the longest a scrape waits on the database (connecting, and the statement)
CACHE_SECONDS = 5.0
NO_ENVIRONMENT = ""  # a row without a namespace (written by hand or by an old engine)
QUEUED = 1

Counts = list[tuple[str | None, int, int, float]]


class UnfinishedJobs:
    """A Prometheus collector of the unfinished jobs, read from the database when scraped."""

    def __init__(self, postgres: PostgresSettings):
        self.db = Database(
            replace(postgres, timeout=DATABASE_SECONDS), max_connections=1, application_name="operator-service metrics"
        )
        self._lock = threading.Lock()
        self._read_at = -CACHE_SECONDS
        self._counts: Counts | None = None

    def close(self) -> None:
        self.db.close()

    def counts(self) -> Counts | None:
        """The latest counts, read again once they are CACHE_SECONDS old; None while the database fails."""
        with self._lock:
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                self._counts = self._read()
                self._read_at = time.monotonic()
            return self._counts

    def _read(self) -> Counts | None:
        try:
            return jobs.unfinished_counts(self.db)
        except (DatabaseUnavailable, psycopg2.Error) as exc:
            log.warning("metrics: the unfinished jobs could not be counted: %s", exc)
            return None

    def collect(self) -> Iterator[Metric]:
        counts = self.counts()
        collected = GaugeMetricFamily(
            "operator_jobs_collected",
            "1 if the jobs were read from the database for this scrape (or within 5 s before it), 0 if it failed.",
        )
        collected.add_metric([], 0 if counts is None else 1)
        yield collected
        if counts is None:
            return
        unfinished = GaugeMetricFamily(
            "operator_jobs_unfinished",
            "Jobs without dateFinished, by environment and status code (0 registering, 1 queued, 20-70 taken).",
            labels=["environment", "status"],
        )
        oldest = GaugeMetricFamily(
            "operator_jobs_oldest_queued_seconds",
            "Age of the oldest job still queued (status 1, not yet taken by an engine), by environment.",
            labels=["environment"],
        )
        for namespace, status, number, age in counts:
            environment = namespace or NO_ENVIRONMENT
            unfinished.add_metric([environment, str(status)], number)
            if status == QUEUED:
                oldest.add_metric([environment], age)
        yield unfinished
        yield oldest
