"""Reading a Prometheus scrape in tests."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def scrape_exporter(port: int) -> str:
    """What the exporter on 127.0.0.1:`port` answers at /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        return answer.read().decode()


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name` with exactly these labels in a scrape; 0 when it is not there (yet)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return 0.0
