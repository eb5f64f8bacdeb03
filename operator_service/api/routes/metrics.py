"""GET /metrics: the Prometheus text format, for a scraper. No credentials: it shows counts by
route, status and environment, never a job, an owner, a key or a parameter."""

from __future__ import annotations

from flask import Blueprint, Response

from operator_service.api.context import services
from operator_service.metrics.exposition import CONTENT_TYPE, render

metrics = Blueprint("metrics", __name__)


@metrics.route("/metrics", methods=["GET"])
def prometheus_metrics() -> Response:
    """Prometheus metrics of every worker of this server, and the unfinished jobs read from the database.

    The database is given at most a second, and its counts are reused for 5 s; while it is
    down, `operator_jobs_collected` is 0 and the rest is still answered.
    ---
    tags: [service]
    produces: [text/plain]
    responses:
      200:
        description: The metrics, in the Prometheus text format (see README, Monitoring)
        schema: {type: string}
    """
    current = services()
    unfinished_jobs = current.unfinished_jobs
    assert unfinished_jobs is not None  # made whenever this route is registered (METRICS=1)
    if current.journal is not None:
        current.journal.drain()  # this worker's counts up to now, not up to JOURNAL_SECONDS ago
    return Response(render(unfinished_jobs), content_type=CONTENT_TYPE)
