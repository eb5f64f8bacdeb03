"""One engine per namespace: a second engine waits, takes over when the first stops and
finishes its jobs; no job is taken without the lease; an engine whose namespace was taken
over while its lease's session was gone stops."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg2

from operator_service.engine import EngineConfig, run_engine
from operator_service.engine import queries as engine_queries
from operator_service.engine.lease import LeaseLost, NamespaceLease
from tests.engine_support import (
    RETRY_SECONDS,
    SLEEPER,
    job_row,
    read_published,
    running_as,
    wait_announces,
    wait_finished,
    wait_for,
    wait_status,
)


class EngineThread:
    """run_engine in a thread, with what it raised."""

    def __init__(self, settings, config: EngineConfig):
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(settings, config), daemon=True)
        self.thread.start()

    def _run(self, settings, config: EngineConfig) -> None:
        try:
            run_engine(settings.postgres, config, self.stop)
        except BaseException as exc:
            self.error = exc

    def halt(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the engine did not stop"


def _lease_sessions(db, namespace: str) -> list[int]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s", (f"operator-engine pid % {namespace}",)
        )
        return [row[0] for row in cur.fetchall()]


def test_a_second_engine_waits_then_takes_over_and_finishes_the_jobs(
    db, settings, submit_job, start_engine, work_dirs, caplog
):
    caplog.set_level(logging.INFO)
    first = start_engine(namespace="leased", work_dir=work_dirs())
    job_id = submit_job(SLEEPER, environment="leased")
    wait_status(db, job_id, 40)
    runs = first.job_data(job_id) / "outputs" / "runs.txt"
    uid = int(wait_for(lambda: runs.exists() and runs.read_text().strip(), "the algorithm to start"))

    second = EngineThread(settings, first.config)  # the same namespace and work folder
    try:
        wait_for(
            lambda: len(_lease_sessions(db, "leased")) == 2 or second.error, "the second engine to ask for the lease"
        )
        assert second.error is None, repr(second.error)
        wait_announces(db, "leased", 3)
        assert job_row(db, job_id)["status"] == 40, "the second engine left the running job alone"
        assert running_as(uid) != [], "the second engine killed nothing of the first one's"
        wait_for(
            lambda: "environment leased is run by another engine, operator-engine pid" in caplog.text,
            "the second engine to say who holds the namespace",
        )

        first.halt()
        row = wait_finished(db, job_id)
        assert (row["status"], row["statusText"]) == (70, "Job finished")
        assert read_published(row, "output").split() == [str(uid)], "the algorithm ran once"
        assert "engine restarted while the algorithm was running" in read_published(row, "algorithmLog")
    finally:
        second.halt()
    assert second.error is None


def test_no_job_is_taken_without_the_lease(db, settings, submit_job):
    with db.transaction() as cur:
        cur.execute("SELECT * FROM announce('claims', '{}', 0)")
    job_id = submit_job(SLEEPER, environment="claims")
    with db.transaction() as cur:
        cur.execute("SELECT pg_backend_pid()")
        not_holding = cur.fetchone()[0]
    assert engine_queries.take_job(db, job_id, "claims", not_holding) is None
    assert job_row(db, job_id)["status"] == 1

    lease = NamespaceLease.take(settings.postgres, "claims", threading.Event(), RETRY_SECONDS)
    try:
        assert engine_queries.take_job(db, job_id, "claims", lease.pid) is not None
        assert job_row(db, job_id)["status"] == 20
    finally:
        lease.release()


def test_an_engine_whose_namespace_was_taken_over_stops(db, settings, work_dirs):
    config = EngineConfig(
        namespace="taken",
        work_dir=work_dirs(),
        results_dir=Path(settings.results_dir),
        poll_seconds=0.1,
        db_retry_seconds=RETRY_SECONDS,
        lease_retry_seconds=RETRY_SECONDS,
        use_docker="off",
    )
    engine = EngineThread(settings, config)
    wait_announces(db, "taken", 1)
    thief = psycopg2.connect(**settings.postgres.dsn_kwargs(), connect_timeout=5)
    thief.autocommit = True
    try:
        deadline = time.monotonic() + 30
        taken = False
        while not taken:
            assert time.monotonic() < deadline, "could not take the namespace between two confirmations"
            with db.transaction() as cur:
                cur.execute(
                    "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (_lease_sessions(db, "taken"),)
                )
            taken = _try_for(thief, engine_queries.lease_lock_key("taken"), seconds=1.0)
        engine.thread.join(30)
        assert not engine.thread.is_alive(), "the engine kept running a namespace another session holds"
        assert isinstance(engine.error, LeaseLost)
    finally:
        engine.halt()
        thief.close()


def _try_for(conn, key: int, seconds: float) -> bool:
    """Try to take the advisory lock `key` on `conn` every 10 ms for `seconds`."""
    deadline = time.monotonic() + seconds
    with conn.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            if cur.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False
