"""The Prometheus text format of what a process counted, plus collectors made at scrape time.

Under gunicorn (PROMETHEUS_MULTIPROC_DIR set) every worker writes its metrics to files of
its own in that folder and any worker's answer adds them all up; a worker that exited keeps
counting in the sums (its files stay). Without the folder, a process shows only its own.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Together:
    """Several collectors as one, for generate_latest."""

    def __init__(self, collectors: Iterable[Collector]):
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        for collector in self.collectors:
            yield from collector.collect()


def _counted() -> Collector:
    """What this process (or, with the multiprocess folder, every worker) counted."""
    folder = os.environ.get(MULTIPROC_VARIABLE)
    if not folder:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    return registry


def render(*collectors: Collector) -> bytes:
    """Everything counted, and what `collectors` find now, in the Prometheus text format."""
    return generate_latest(_Together([_counted(), *collectors]))


def prepare_multiprocess_folder(folder: Path) -> None:
    """Create the folder, or empty it of an earlier server's files: counts start at zero with
    each server, and files of workers long gone would otherwise be added up for ever."""
    folder.mkdir(parents=True, exist_ok=True)
    for entry in folder.glob("*.db"):
        entry.unlink()


def serve_process_metrics(host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
    """Serve this process's metrics over HTTP on (host, port) from a thread: (server, thread).
    OSError when the address cannot be bound."""
    return start_http_server(port, addr=host)
