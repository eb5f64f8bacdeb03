"""The local engine's metrics, served by the engine itself on ENGINE_METRICS_BIND."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Seconds: a job waits one announce period (ENGINE_POLL_SECONDS) or a queue of jobs ahead of
# it; an algorithm runs from under a second up to maxJobDuration.
QUEUE_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
RUN_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 24 * 3600.0)
LIMITS = ("memory", "timeout", "disk")

RUNNING_JOBS = Gauge("operator_engine_running_jobs", "Jobs this engine holds now (taken or resumed, not finished).")
QUEUE_WAIT_SECONDS = Histogram(
    "operator_engine_queue_wait_seconds",
    "Time from a job's creation (POST /compute) to its taking by this engine.",
    buckets=QUEUE_BUCKETS,
)
RUN_SECONDS = Histogram(
    "operator_engine_algorithm_run_seconds",
    "Time an algorithm ran, from its start to its exit, stop or kill.",
    buckets=RUN_BUCKETS,
)
LIMITS_HIT = Counter(
    "operator_engine_limits_hit",
    "Algorithms that hit a limit of their sandbox: memory (killed by the kernel beyond ramGB),"
    " timeout (killed beyond the time limit) or disk (writes failed beyond diskGB).",
    ["limit"],
)
FETCHED_BYTES = Counter("operator_engine_fetched_bytes", "Bytes of inputs and algorithms downloaded.")
PUBLISHED_BYTES = Counter("operator_engine_published_bytes", "Bytes of results published (outputs and logs).")
