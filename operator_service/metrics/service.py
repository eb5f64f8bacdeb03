"""The API's metrics. Under gunicorn they live in PROMETHEUS_MULTIPROC_DIR, one file per worker,
and `GET /metrics` adds them up (exposition.py)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

# Seconds: a request served from memory takes a few ms, a signed one with its Postgres
# round trips 5-50 ms, one waiting on a slow dependency up to POSTGRES_TIMEOUT or RESULT_TIMEOUT.
LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
UNMATCHED_ROUTE = "unmatched"  # a path no route serves (a 404, or a 405 of a known path)
MAX_CACHED_SERIES = 1000

REQUESTS = Counter(
    "operator_http_requests",
    "HTTP requests answered, by route (the URL rule, e.g. /api/v1/operator/compute), method and status code.",
    ["route", "method", "status"],
)
REQUEST_SECONDS = Histogram(
    "operator_http_request_duration_seconds",
    "Time from a request's arrival in the app to its answer (a streamed body not included), by route and method.",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
SIGNATURE_REFUSALS = Counter(
    "operator_signature_refusals",
    "Signed requests refused for their signature: unrecoverable (400, no signer recovered)"
    " or not_allowed (401, the signer is not in ALLOWED_PROVIDERS).",
    ["reason"],
)
NONCE_REFUSALS = Counter(
    "operator_nonce_refusals",
    "Signed requests refused for their nonce: malformed (400), future (401, over a day ahead)"
    " or used (401, already used or older than NONCE_WINDOW below the newest).",
    ["reason"],
)
DEPENDENCY_FAILURES = Counter(
    "operator_dependency_failures",
    "Requests answered 503 because a dependency failed: database or kubernetes.",
    ["dependency"],
)


def method_label(method: str) -> str:
    """The method as a label: the standard ones as they are, anything else `other`."""
    return method if method in METHODS else "other"


# The series of each (route, method, status) seen: labels() checks and locks on every call,
# which a request need not pay for more than once. A race only makes one series twice,
# and labels() returns the same one both times.
_series: dict[tuple[str | None, str, int], tuple[Counter, Histogram]] = {}


def observe_request(route: str | None, method: str, status: int, seconds: float) -> None:
    """Count one answered request."""
    key = (route, method, status)
    series = _series.get(key)
    if series is None:
        route_label = route or UNMATCHED_ROUTE
        method_name = method_label(method)
        series = (
            REQUESTS.labels(route_label, method_name, str(status)),
            REQUEST_SECONDS.labels(route_label, method_name),
        )
        if len(_series) < MAX_CACHED_SERIES:  # bounded: an unknown method is one key per method sent
            _series[key] = series
    requests, duration = series
    requests.inc()
    duration.observe(seconds)
