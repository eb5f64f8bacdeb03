FROM python:3.11-slim

# The HTTP server's settings (workers, threads, timeouts, limits) are operator-service
# serve's defaults: see README, "The HTTP server". The workers keep their metrics in
# PROMETHEUS_MULTIPROC_DIR (emptied by operator-service serve at start), for GET /metrics.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPERATOR_BIND=0.0.0.0:8050 \
    KUBERNETES=auto \
    PROMETHEUS_MULTIPROC_DIR=/tmp/operator-service-metrics

WORKDIR /operator-service
COPY pyproject.toml setup.py README.md LICENSE ./
COPY operator_service ./operator_service
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home operator

USER 10001
EXPOSE 8050
# Healthy = ready: the database answers with the expected schema (and the cluster, when used).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['OPERATOR_BIND'].rsplit(':', 1)[1] + '/readyz', timeout=4)"]
CMD ["operator-service", "serve"]
