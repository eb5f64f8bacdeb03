"""What every request works with: the settings, the database and (maybe) the cluster."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flask import current_app

from operator_service.config import Settings
from operator_service.domain.monitoring import UnfinishedJobs
from operator_service.domain.readiness import CachedReadiness
from operator_service.store.pool import Database

if TYPE_CHECKING:
    from operator_service.api.observability import RequestJournal
    from operator_service.cluster.client import Cluster

EXTENSION_KEY = "operator_service"


@dataclass
class Services:
    settings: Settings
    db: Database
    cluster: Cluster | None
    readiness: CachedReadiness = field(default_factory=CachedReadiness)
    unfinished_jobs: UnfinishedJobs | None = None  # what GET /metrics reads from the database, when it is served
    journal: RequestJournal | None = None  # makes the requests' access lines and metrics

    def close(self) -> None:
        """Close the pools and the cluster's client (tests build many apps in one process)."""
        if self.journal is not None:
            self.journal.close()
        self.db.close()
        if self.unfinished_jobs is not None:
            self.unfinished_jobs.close()
        if self.cluster is not None:
            self.cluster.close()

    @property
    def kubernetes_mode(self) -> str:
        """What GET / shows: the configured mode and what it resolved to."""
        if self.cluster is None:
            return f"{self.settings.kubernetes}: running without Kubernetes"
        return f"{self.settings.kubernetes}: {self.cluster.source}"

    @property
    def signatures(self) -> str:
        """What GET / shows: whether Provider signatures are enforced."""
        if self.settings.signature_required:
            return f"enforced: only the {len(self.settings.allowed_providers)} ALLOWED_PROVIDERS may call"
        return "not enforced (SIGNATURE_REQUIRED=0): any signature from any key is accepted"


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]
