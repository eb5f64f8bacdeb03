"""The WSGI entry point: `gunicorn operator_service.run:app` or `flask --app operator_service/run.py run`."""

import sys

from operator_service.api.app import create_app
from operator_service.cluster.client import KubernetesUnavailable
from operator_service.env_vars import ConfigError

try:
    app = create_app()
except (ConfigError, KubernetesUnavailable) as exc:
    sys.stderr.write(f"operator-service cannot start: {exc}\n")
    raise SystemExit(4) from None
