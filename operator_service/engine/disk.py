"""What the engine keeps on disk, and for how long: the free-space floor and results expiry.

Free space: before taking jobs, the engine measures the free space of the file systems of
RESULTS_DIR and ENGINE_WORK_DIR. While either has less than ENGINE_MIN_FREE_GB, it takes no
job: queued jobs stay queued and are taken once space returns.

Expiry: with STORAGE_EXPIRY set, the results of a job (RESULTS_DIR/<jobId>) and its job
folder, when DEBUG_NO_CLEANUP kept it, are deleted STORAGE_EXPIRY seconds after the job
finished. Which jobs have expired is decided by the database, never by an engine's memory:
a sweep first records dateResultsExpired on the jobs that are due (one statement, under the
namespace's lease, never a job the engine still holds or one without dateFinished), then
deletes their folders. Folders that a crash left between the two are deleted at the next
start, from what the database recorded.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from operator_service.engine import queries as q
from operator_service.engine import workspace
from operator_service.engine.settings import EngineConfig
from operator_service.engine.workspace import JOB_ID_PATTERN
from operator_service.store.pool import Database

log = logging.getLogger(__name__)

GB = 1024**3
SWEEP_BATCH = 100
LEFTOVER_BATCH = 1000
LONGEST_SWEEP_INTERVAL = 60.0


@dataclass(frozen=True)
class DiskSpace:
    """The free bytes of the emptier of the two file systems, against the floor in GB."""

    free_bytes: int
    floor_gb: float

    @property
    def enough(self) -> bool:
        return self.free_bytes >= self.floor_gb * GB

    @property
    def free_gb(self) -> float:
        return round(self.free_bytes / GB, 2)


def disk_space(config: EngineConfig) -> DiskSpace:
    """How much the results and the job folders may still take."""
    free = min(shutil.disk_usage(folder).free for folder in (config.results_dir, config.work_dir))
    return DiskSpace(free, config.min_free_gb)


def sweep_interval(config: EngineConfig) -> float:
    """A tenth of STORAGE_EXPIRY (results are deleted at most that late), at most a minute,
    never more often than the engine polls."""
    return min(LONGEST_SWEEP_INTERVAL, max(config.poll_seconds, config.storage_expiry / 10))


class ResultsExpiry:
    """The periodic sweep that deletes expired results (see the module docstring)."""

    def __init__(self, db: Database, config: EngineConfig):
        self.db = db
        self.config = config
        self._next_sweep = 0.0
        self._leftovers_removed = False

    @property
    def enabled(self) -> bool:
        return self.config.storage_expiry > 0

    def sweep(self, busy: Collection[str], lease_pid: int) -> None:
        """Delete what has expired, if a sweep is due; `busy`: the jobs the engine holds,
        `lease_pid`: the backend that holds the namespace's lease."""
        if not self.enabled or time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + sweep_interval(self.config)
        if not self._leftovers_removed:
            self._remove_leftovers()
            self._leftovers_removed = True
        while True:
            expired = q.expire_results(
                self.db,
                self.config.namespace,
                self.config.storage_expiry,
                sorted(busy),
                lease_pid,
                SWEEP_BATCH,
            )
            for job_id in expired:
                self._delete(job_id)
            if expired:
                log.info("deleted the results of %d job(s) older than STORAGE_EXPIRY", len(expired))
            if len(expired) < SWEEP_BATCH:
                return

    def _remove_leftovers(self) -> None:
        """Folders of jobs recorded as expired that are still there (a crash came between)."""
        folders = (self.config.results_dir, self.config.work_dir)
        names = sorted({entry.name for folder in folders for entry in _job_folders(folder)})
        for start in range(0, len(names), LEFTOVER_BATCH):
            for job_id in q.expired_among(self.db, self.config.namespace, names[start : start + LEFTOVER_BATCH]):
                self._delete(job_id)

    def _delete(self, job_id: str) -> None:
        if not JOB_ID_PATTERN.match(job_id):
            log.error("job id %r names no folder: its results are not deleted", job_id)
            return
        try:
            workspace.remove(workspace.workspace_for(self.config.work_dir, job_id))
            results = self.config.results_dir / job_id
            if results.exists():
                shutil.rmtree(results)
        except OSError as exc:
            log.error("cannot delete the expired results of job %s (retried at the next start): %s", job_id, exc)


def _job_folders(folder: Path) -> list[Path]:
    return [entry for entry in folder.iterdir() if entry.is_dir() and JOB_ID_PATTERN.match(entry.name)]
