FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OPERATOR_BIND=0.0.0.0:8050 \
    OPERATOR_WORKERS=2 \
    OPERATOR_WORKER_CLASS=sync \
    OPERATOR_TIMEOUT=120 \
    KUBERNETES=auto

WORKDIR /operator-service
COPY setup.py README.md LICENSE ./
COPY operator_service ./operator_service
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --no-create-home operator

USER 10001
EXPOSE 8050
CMD ["sh", "-c", "exec gunicorn --no-control-socket --bind \"$OPERATOR_BIND\" --workers \"$OPERATOR_WORKERS\" --worker-class \"$OPERATOR_WORKER_CLASS\" --timeout \"$OPERATOR_TIMEOUT\" operator_service.run:app"]
