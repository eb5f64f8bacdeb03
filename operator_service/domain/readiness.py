"""Whether this process can serve requests: what the readiness probe reports.

Ready means the database answers with the schema this code expects (the newest
migration, or a newer one: migrations only add) and, when the service works with a
cluster, the Kubernetes API server answers. The probe needs no credentials, so its
answer is kept for CACHE_SECONDS: a flood of probes costs at most one round trip to
each dependency per second and process.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from operator_service.cluster.client import Cluster, KubernetesUnavailable
from operator_service.store import migrations
from operator_service.store.pool import Database, DatabaseUnavailable

CACHE_SECONDS = 1.0


@dataclass(frozen=True)
class Readiness:
    """The outcome of one check: `problem` is None when ready."""

    schema_version: int | None
    kubernetes: str
    problem: str | None = None

    @property
    def ready(self) -> bool:
        return self.problem is None


def check(db: Database, cluster: Cluster | None) -> Readiness:
    """Ask the database (and the cluster, if one is used) now."""
    kubernetes = "not used" if cluster is None else cluster.source
    try:
        version = migrations.current_version(db)
    except DatabaseUnavailable as exc:
        return Readiness(None, kubernetes, f"Database unavailable: {exc}")
    if version < migrations.LATEST_VERSION:
        return Readiness(
            version,
            kubernetes,
            (
                f"Database schema at version {version}, this service needs {migrations.LATEST_VERSION}:"
                " run `operator-service migrate` or POST /api/v1/operator/pgsqlinit"
            ),
        )
    if cluster is not None:
        try:
            cluster.version()
        except KubernetesUnavailable as exc:
            return Readiness(version, kubernetes, str(exc))
    return Readiness(version, kubernetes)


class CachedReadiness:
    """check(), reused for CACHE_SECONDS by every thread of the process."""

    def __init__(self, seconds: float = CACHE_SECONDS):
        self._seconds = seconds
        self._lock = threading.Lock()
        self._last: Readiness | None = None
        self._checked_at = 0.0

    def get(self, db: Database, cluster: Cluster | None) -> Readiness:
        with self._lock:
            if self._last is None or time.monotonic() - self._checked_at >= self._seconds:
                self._last = check(db, cluster)
                self._checked_at = time.monotonic()
            return self._last
