"""Prometheus metrics: what the service (service.py) and the local engine (engine.py) count, and
how both are exposed (exposition.py).

The API and the domain count into service.py's metrics, the local engine into engine.py's;
the two never share a process (the engine talks to the service only through the database), so
each exposes its own: the API on `GET /metrics`, the engine on ENGINE_METRICS_BIND. No label
takes a value from a request or a job (no job ids, owners or raw paths), so the number of
series stays bounded. README.md, "Monitoring", lists every metric.
"""
