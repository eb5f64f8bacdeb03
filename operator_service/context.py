"""What every request works with: the settings, the database and (maybe) the cluster."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from flask import current_app

from operator_service.config import Settings
from operator_service.store.pool import Database

if TYPE_CHECKING:
    from operator_service.kube import Cluster

EXTENSION_KEY = "operator_service"


@dataclass
class Services:
    settings: Settings
    db: Database
    cluster: Optional["Cluster"]
    reconciler: Optional[threading.Event] = None

    def close(self) -> None:
        """Stop the reconciler and close the pool (tests build many apps in one process)."""
        if self.reconciler is not None:
            self.reconciler.set()
        self.db.close()

    @property
    def kubernetes_mode(self) -> str:
        """What GET / shows: the configured mode and what it resolved to."""
        if self.cluster is None:
            return f"{self.settings.kubernetes}: running without Kubernetes"
        return f"{self.settings.kubernetes}: {self.cluster.source}"


def services() -> Services:
    return current_app.extensions[EXTENSION_KEY]
