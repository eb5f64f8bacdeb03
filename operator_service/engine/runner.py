"""The engine loop: announce the environment, take queued jobs, run each in a thread.

Like Ocean's operator-engine it talks to the service only through
the database: every ENGINE_POLL_SECONDS it calls announce(namespace, document, limit)
with limit = maxJobs - currentJobs, so it never holds more than maxJobs jobs, and it only
ever sees jobs of its own namespace. It is the only engine of its namespace (it holds the
namespace's lease, see lease.py): at start-up it resumes every job of the namespace that
an earlier run took and did not finish.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg2

from operator_service.engine import queries as q
from operator_service.engine import workspace
from operator_service.engine.disk import DiskSpace, ResultsExpiry, disk_space
from operator_service.engine.job import EngineContext, EngineStopping, JobRun
from operator_service.engine.lease import LeaseLost, NamespaceLease
from operator_service.engine.sandbox.isolation import Isolation, kill_leftovers, set_up_isolation
from operator_service.engine.settings import EngineConfig, load_operator_key, split_bind
from operator_service.engine.workspace import JOB_ID_PATTERN, prepare_work_dir
from operator_service.env_vars import ConfigError
from operator_service.logging_setup import FIELDS, log_context
from operator_service.metrics.engine import QUEUE_WAIT_SECONDS, RUNNING_JOBS
from operator_service.metrics.exposition import serve_process_metrics
from operator_service.store.pool import Database, DatabaseUnavailable
from operator_service.store.settings import PostgresSettings

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, ctx: EngineContext, lease: NamespaceLease):
        self.ctx = ctx
        self.lease = lease
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._expiry = ResultsExpiry(ctx.db, ctx.config)
        self._had_space = True

    @property
    def current_jobs(self) -> int:
        with self._lock:
            return len(self._threads)

    def run(self) -> None:
        """Resume unfinished jobs, then announce and take jobs until the stop event is set.

        LeaseLost, once its jobs have stopped, if another engine took the namespace over.
        """
        stop = self.ctx.stop
        resumed = False
        lost: LeaseLost | None = None
        while not stop.is_set():
            try:
                self.lease.confirm()
                if not resumed:
                    self._resume_unfinished()
                    resumed = True
                self._announce_and_take()
                self._sweep_expired_results()
            except LeaseLost as exc:
                log.error("%s: this engine stops and leaves its jobs to that one", exc)
                lost = exc
                stop.set()
                break
            except DatabaseUnavailable as exc:
                log.warning("database unavailable (%s); retrying in %g s", exc, self.ctx.config.poll_seconds)
            except psycopg2.Error as exc:
                log.error("database error (%s); is the schema created (operator-service migrate)?", exc)
            stop.wait(self.ctx.config.poll_seconds)
        self._wait_for_jobs()
        if lost is not None:
            raise lost

    def status_document(self, current_jobs: int, space: DiskSpace) -> dict:
        """The environment as Ocean's engine announces it (the keys GET /environments shows), then
        what it can take now: `freeSlots` (0 while the disk is below the floor), `freeDiskGB` and
        the floor, `minFreeDiskGB`."""
        config = self.ctx.config
        return {
            "id": config.namespace,
            "cpuNumber": config.cpus,
            "cpuType": config.cpu_type,
            "gpuNumber": config.gpus,
            "gpuType": config.gpu_type,
            "ramGB": _plain(config.ram_gb),
            "diskGB": _plain(config.disk_gb),
            "priceMin": _plain(config.price_per_minute),
            "desc": config.description,
            "currentJobs": current_jobs,
            "maxJobs": config.max_jobs,
            "consumerAddress": self.ctx.operator.address,
            "storageExpiry": config.storage_expiry,
            "maxJobDuration": _plain(config.max_job_duration),
            "freeSlots": max(config.max_jobs - current_jobs, 0) if space.enough else 0,
            "freeDiskGB": _plain(space.free_gb),
            "minFreeDiskGB": _plain(config.min_free_gb),
        }

    def _resume_unfinished(self) -> None:
        unfinished = q.unfinished_jobs(self.ctx.db, self.ctx.config.namespace)
        self._clear_finished_folders({job_id for job_id, _, _, _ in unfinished})
        for job_id, status, document, request_id in unfinished:
            self._start(job_id, document, functools.partial(JobRun.resume, status=status), request_id)

    def _clear_finished_folders(self, unfinished: set[str]) -> None:
        """Folders of finished jobs that an earlier run left (it was killed before cleaning up)."""
        config = self.ctx.config
        for entry in config.work_dir.iterdir():
            if entry.is_dir() and JOB_ID_PATTERN.match(entry.name) and entry.name not in unfinished:
                folder = workspace.workspace_for(config.work_dir, entry.name)
                try:
                    workspace.close(folder) if config.keep_job_folders else workspace.remove(folder)
                except OSError as exc:
                    log.error("cannot clean up the folder of finished job %s: %s", entry.name, exc)

    def _announce_and_take(self) -> None:
        current = self.current_jobs
        space = self._disk_space()
        limit = max(self.ctx.config.max_jobs - current, 0) if space.enough else 0
        document = json.dumps(self.status_document(current, space))
        for job_id in q.announce(self.ctx.db, self.ctx.config.namespace, document, limit):
            if self.current_jobs >= self.ctx.config.max_jobs or self.ctx.stop.is_set():
                break
            taken = q.take_job(self.ctx.db, job_id, self.ctx.config.namespace, self.lease.pid)
            if taken is not None:
                QUEUE_WAIT_SECONDS.observe(taken.queued_seconds)
                self._start(job_id, taken.document, JobRun.run, taken.request_id)

    def _disk_space(self) -> DiskSpace:
        """The free space now; says once when it falls below the floor, and once when it is back."""
        space = disk_space(self.ctx.config)
        if space.enough != self._had_space:
            if space.enough:
                log.info("%.2f GB free again: taking jobs again", space.free_gb)
            else:
                log.warning(
                    "only %.2f GB free on the disk of RESULTS_DIR or ENGINE_WORK_DIR, less than ENGINE_MIN_FREE_GB"
                    " (%g): taking no new job until there is more (queued jobs wait)",
                    space.free_gb,
                    self.ctx.config.min_free_gb,
                )
            self._had_space = space.enough
        return space

    def _sweep_expired_results(self) -> None:
        with self._lock:
            busy = set(self._threads)
        self._expiry.sweep(busy, self.lease.pid)

    def _start(self, job_id: str, document: str, action: Callable[[JobRun], None], request_id: str | None) -> None:
        thread = threading.Thread(
            target=self._run_job, args=(job_id, document, action, request_id), name=f"job-{job_id}", daemon=True
        )
        with self._lock:
            self._threads[job_id] = thread
        log.info("taking job %s", job_id, extra={FIELDS: {"job_id": job_id, "request_id": request_id or ""}})
        thread.start()

    def _run_job(self, job_id: str, document: str, action: Callable[[JobRun], None], request_id: str | None) -> None:
        """Run the job in this thread; every line it logs carries the job's id and its creating request's."""
        RUNNING_JOBS.inc()
        try:
            with log_context(job_id=job_id, **({"request_id": request_id} if request_id else {})):
                self._run_logged(job_id, document, action)
        finally:
            RUNNING_JOBS.dec()
            with self._lock:
                self._threads.pop(job_id, None)

    def _run_logged(self, job_id: str, document: str, action: Callable[[JobRun], None]) -> None:
        try:
            action(JobRun(self.ctx, job_id, document))
        except EngineStopping:
            log.info("engine stopping: job %s is left for the next start", job_id)
        except Exception:
            log.exception("job %s failed inside the engine; ending it where it is", job_id)
            self._end_broken_job(job_id)

    def _end_broken_job(self, job_id: str) -> None:
        """An engine bug must not leave a job running for ever: set dateFinished, keep its status."""
        try:
            self.ctx.call(q.finish_job, job_id, None)
        except EngineStopping:
            pass

    def _wait_for_jobs(self) -> None:
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join()


def _plain(value: float) -> float | int:
    return int(value) if float(value).is_integer() else value


def run_engine(postgres: PostgresSettings, engine_config: EngineConfig, stop_event: threading.Event) -> None:
    """Run the engine until `stop_event` is set; return once its job threads have stopped.

    ConfigError, before anything else, when algorithms could not be sandboxed (see
    sandbox.set_up_isolation). Then the engine waits until it holds its namespace's lease
    (see lease.py): while another engine runs the namespace, this one only waits and
    touches none of its jobs, their folders or their processes.
    """
    root = os.geteuid() == 0
    prepare_work_dir(engine_config.work_dir, open_to_job_users=root)
    isolation = set_up_isolation(engine_config)
    with _metrics_server(engine_config.metrics_bind):
        try:
            lease = NamespaceLease.take(
                postgres, engine_config.namespace, stop_event, engine_config.lease_retry_seconds
            )
            if lease is None:
                return
            with lease:
                _run_holding(lease, isolation, postgres, engine_config, stop_event)
        finally:
            if isolation.cgroups is not None:
                isolation.cgroups.remove_if_empty()


@contextmanager
def _metrics_server(bind: str | None) -> Iterator[None]:
    """The engine's metrics on `bind` (ENGINE_METRICS_BIND) while the block runs; nothing when None."""
    if bind is None:
        yield
        return
    host, port = split_bind(bind)
    try:
        server, _ = serve_process_metrics(host, port)
    except OSError as exc:
        raise ConfigError(f"ENGINE_METRICS_BIND {bind}: cannot listen there ({exc.strerror or exc})") from None
    log.info("engine metrics on http://%s/metrics", bind)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def _run_holding(
    lease: NamespaceLease,
    isolation: Isolation,
    postgres: PostgresSettings,
    engine_config: EngineConfig,
    stop_event: threading.Event,
) -> None:
    """The engine itself, once it holds the lease."""
    engine_config.results_dir.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        engine_config.results_dir.chmod(0o711)  # no job's user may list other jobs' results
    operator = load_operator_key(engine_config)
    log.info(
        "local engine for environment %s: up to %d jobs; consumer address %s (%s)",
        engine_config.namespace,
        engine_config.max_jobs,
        operator.address,
        operator.origin(),
    )
    for level, line in isolation.report(engine_config):
        log.log(level, "  %s", line)
    killed = kill_leftovers(isolation)
    if killed:
        log.info("killed the processes of %d job(s) an earlier run of this engine left behind", killed)
    db = Database(
        postgres,
        max_connections=engine_config.max_jobs + 2,
        application_name=f"operator-engine {engine_config.namespace}",
    )
    try:
        Engine(EngineContext(db, engine_config, stop_event, isolation, operator), lease).run()
    finally:
        db.close()
        log.info("local engine for environment %s stopped", engine_config.namespace)
