"""The WSGI entry point: `gunicorn operator_service.run:app` or `flask --app operator_service/run.py run`."""
import sys

from operator_service.app import create_app
from operator_service.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    sys.stderr.write(f"configuration error: {exc}\n")
    raise SystemExit(4) from None
